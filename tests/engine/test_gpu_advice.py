"""Advice for a machine whose NVIDIA GPU TensorFlow does not use: the decision
for each case, the driver probe (on this machine and on a driver's files laid
out in tmp_path), the CLI's warning line and setup.cfg's `gpu` extra."""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import cli
from engine import system
from engine.system import (GPU_EXTRA_COMMAND, TENSORFLOW_INSTALL_URL, NvidiaGpus, gpu_advice_for,
                           parse_proc_driver_version, parse_proc_model, parse_smi_query, probe_nvidia)

REPO = Path(__file__).resolve().parents[2]
H200 = ("NVIDIA H200",)
PROC_VERSION = ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 01:15:15 UTC 2023\n"
                "GCC version:  gcc version 12.3.0 (Ubuntu 12.3.0-1ubuntu1~22.04)\n")
PROC_VERSION_OPEN = ("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  550.54.15  Release Build  "
                     "(dvs-builder@U16-I3-B03-4-3)  Tue Mar  5 19:15:31 UTC 2024\n"
                     "GCC version:  gcc version 12.3.0 (Ubuntu 12.3.0-1ubuntu1~22.04)\n")
PROC_INFORMATION = ("Model: \t\t NVIDIA H200\nIRQ:   \t\t 150\nGPU UUID: \t GPU-5e0c1b2a\n"
                    "Video BIOS: \t 96.00.74.00.1a\nBus Type: \t PCIe\nBus Location: \t 0000:1b:00.0\n")


def advice(**given) -> str:
    inputs = dict(gpu_present=True, gpu_names=H200, tf_sees_gpu=False, built_with_cuda=True,
                  cuda_libraries=True, driver_version="", platform_name="linux")
    return gpu_advice_for(**{**inputs, **given})


def test_nothing_to_say_without_a_gpu_or_when_tensorflow_uses_it():
    assert advice(gpu_present=False, gpu_names=(), built_with_cuda=False, cuda_libraries=False) == ""
    assert advice(tf_sees_gpu=True) == ""
    assert advice(tf_sees_gpu=True, platform_name="win32") == ""


@pytest.mark.parametrize("given", [dict(built_with_cuda=False), dict(cuda_libraries=False)])
def test_without_the_cuda_libraries_it_names_the_pip_extra(given):
    text = advice(**given)
    assert text.startswith("TensorFlow cannot use the NVIDIA GPU (NVIDIA H200)")
    assert "CUDA libraries are not installed" in text and GPU_EXTRA_COMMAND in text
    assert "\n" not in text


def test_on_native_windows_it_says_wsl2():
    text = advice(built_with_cuda=False, platform_name="win32")
    assert "WSL2" in text and "2.10" in text and "\n" not in text


def test_a_cuda_build_that_sees_no_gpu_points_at_the_driver_and_its_version():
    text = advice(driver_version="470.82.01", cuda_version="12.5.1")
    assert "built with CUDA but sees no GPU" in text
    assert "NVIDIA driver (470.82.01) may be too old for TensorFlow's CUDA 12.5.1" in text
    assert "nvidia-smi" in text and TENSORFLOW_INSTALL_URL in text
    assert GPU_EXTRA_COMMAND not in text and "\n" not in text
    assert "NVIDIA driver may be too old" in advice()  # version unknown: said without one


def test_the_driver_files_and_nvidia_smi_output_are_read():
    assert parse_proc_driver_version(PROC_VERSION) == "535.104.05"
    assert parse_proc_driver_version(PROC_VERSION_OPEN) == "550.54.15"
    assert parse_proc_driver_version("garbage") == ""
    assert parse_proc_model(PROC_INFORMATION) == "NVIDIA H200"
    assert parse_smi_query("NVIDIA H200, 550.54.15\nNVIDIA GeForce RTX 3080, 550.54.15\n") == NvidiaGpus(
        True, ("NVIDIA H200", "NVIDIA GeForce RTX 3080"), "550.54.15")
    assert parse_smi_query("No devices were found\n") == NvidiaGpus(False)


def test_this_machine_has_no_nvidia_gpu_and_asks_nothing_of_tensorflow():
    if system.NVIDIA_PROC.exists() or system.shutil.which("nvidia-smi"):
        pytest.skip("this machine has an NVIDIA driver")
    assert probe_nvidia() == NvidiaGpus(False)
    code = ("import sys; from engine.system import gpu_advice; "
            "print(repr(gpu_advice()), 'keras' in sys.modules, 'tensorflow' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["''", "False", "False"]


def fake_driver(root: Path) -> Path:
    (root / "gpus" / "0000:1b:00.0").mkdir(parents=True)
    (root / "version").write_text(PROC_VERSION_OPEN)
    (root / "gpus" / "0000:1b:00.0" / "information").write_text(PROC_INFORMATION)
    return root


def test_the_probe_reads_the_drivers_files(tmp_path, monkeypatch):
    monkeypatch.setattr(system, "NVIDIA_PROC", fake_driver(tmp_path / "nvidia"))
    assert probe_nvidia() == NvidiaGpus(True, H200, "550.54.15")


@pytest.mark.skipif(sys.platform.startswith("win"), reason="the fake nvidia-smi is a shell script")
@pytest.mark.parametrize("script, expected", [
    ('echo "NVIDIA H200, 550.54.15"', NvidiaGpus(True, H200, "550.54.15")),
    ('echo "NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver"; exit 9',
     NvidiaGpus(False)),
    ("exec sleep 10", NvidiaGpus(False)),  # a hung driver: given up after the timeout
])
def test_without_the_drivers_files_nvidia_smi_is_asked(tmp_path, monkeypatch, script, expected):
    smi = tmp_path / "bin" / "nvidia-smi"
    smi.parent.mkdir()
    smi.write_text(f"#!/bin/sh\n{script}\n")
    smi.chmod(0o755)
    monkeypatch.setattr(system, "NVIDIA_PROC", tmp_path / "no-driver-files")
    monkeypatch.setattr(system, "NVIDIA_SMI_TIMEOUT_S", 0.5)
    monkeypatch.setenv("PATH", f"{smi.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    assert probe_nvidia() == expected


def test_train_warns_on_one_line_when_tensorflow_cannot_use_the_gpu(tmp_path, monkeypatch, capsys):
    """The wrapper with TensorFlow's real answers on this machine (no GPU seen)."""
    monkeypatch.setattr(system, "NVIDIA_PROC", fake_driver(tmp_path / "nvidia"))
    archive = tmp_path / "cifar-10-python.tar.gz"
    archive.write_bytes(b"\x1f\x8b not really gzip")  # the run then fails at once, after the warning
    assert cli.main(["train", "--data", str(archive), "--set", "epochs=1"]) == 2
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1
    assert warnings[0].startswith("warning: TensorFlow") and "NVIDIA H200" in warnings[0]
    from engine.system import backend_info

    info = backend_info()
    assert info["gpu_advice"] == warnings[0].removeprefix("warning: ")
    monkeypatch.setattr(system, "NVIDIA_PROC", tmp_path / "no-driver-files")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert backend_info()["gpu_advice"] == ""


def test_setup_cfg_has_a_linux_gpu_extra_with_tensorflows_cuda_libraries():
    parser = configparser.ConfigParser()
    parser.read(REPO / "setup.cfg", encoding="utf-8")
    lines = [line for line in parser["options.extras_require"]["gpu"].splitlines() if line.strip()]
    assert len(lines) == 1  # on its own line: setuptools splits a one-line value at ";"
    requirement = Requirement(lines[0])
    assert requirement.name == "tensorflow" and requirement.extras == {"and-cuda"}
    assert str(requirement.marker) == 'sys_platform == "linux"'
    install = next(line for line in parser["options"]["install_requires"].splitlines() if "tensorflow" in line)
    assert requirement.specifier == Requirement(install.strip()).specifier
