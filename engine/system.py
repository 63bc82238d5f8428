"""What the engine runs on: Keras version, backend and device, for the
About box, the status bar and the CLI. Imports keras (call it off the GUI
thread)."""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import platform
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

# At most this many logical CPUs: TensorFlow's idle worker threads sleep
# instead of spinning (see prepare_tensorflow).
SPIN_FREE_MAX_CPUS = 4
SPINNING_ENV = "CIFAR_STUDIO_THREAD_SPINNING"  # "on" / "off" override the automatic choice
VERBOSE_ENV = "CIFAR_STUDIO_VERBOSE"  # "1": TensorFlow's own start-up lines are shown
# TensorFlow's native start-up lines: absl's "I0000 00:00:1796174470.419236 1875 port.cc:153] ..." and
# "2025-09-17 14:44:05.157831: I external/...] ...", and absl's note that it was not initialised.
_NATIVE_LOG_LINE = re.compile(
    rb"^([IWE]\d{4} \d\d:\d\d:[\d.]+ +\d+ [\w.]+:\d+\]|\d{4}-\d\d-\d\d [\d:.]+: [IWE] \S+\]|"
    rb"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR)")


@contextlib.contextmanager
def native_stderr_filtered():
    """Hold what native code writes to file descriptor 2 meanwhile, then
    write it back without TensorFlow's and absl's log lines.

    Why at the descriptor: TensorFlow 2.20+ logs through absl before absl is
    initialised, which ignores TF_CPP_MIN_LOG_LEVEL and Python's logging
    alike (tensorflow/tensorflow#100442), so no setting silences its oneDNN,
    CUDA and cuInit lines; they are written by C++ straight to descriptor 2.
    Anything else written meanwhile (another thread's output) is kept.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no descriptor 2 (a windowed app without a console)
        yield
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = b"".join(line for line in held.read().splitlines(keepends=True)
                            if not _NATIVE_LOG_LINE.match(line))
            if kept:
                os.write(2, kept)


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports `tensorflow` (whoever imports it first: Keras, the data
    pipeline) with native_stderr_filtered, and looks for its devices there
    too, where its CUDA probe logs "failed call to cuInit"."""

    def __init__(self):
        self.loader = None

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow" or self.loader is not None:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return None
        self.loader = spec.loader
        spec.loader = self
        return spec

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        sys.meta_path[:] = [finder for finder in sys.meta_path if finder is not self]
        with native_stderr_filtered():
            self.loader.exec_module(module)
            with contextlib.suppress(Exception):  # only to have the probe's lines said here; never fatal
                module.config.list_physical_devices("GPU")


def quiet_tensorflow_start() -> None:
    """Keep TensorFlow's start-up lines off the terminal (main.py calls this
    first), unless CIFAR_STUDIO_VERBOSE=1 (`main.py --verbose`) asks for them.
    Errors stay one line of the app's own."""
    if os.environ.get(VERBOSE_ENV, "") not in ("", "0"):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietTensorFlowImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowImport())


def prepare_tensorflow(cpus: int | None = None) -> bool | None:
    """Set TensorFlow's runtime up for this machine before its first op runs.

    TensorFlow's worker threads spin for a while when they run out of work
    before they sleep. With many cores that costs only idle cores; with two,
    a spinning thread burns a core the machine (and the window) could use.
    With spinning off, SimCNN's epoch took the same time on 2 cores and
    about 5% less CPU (benchmarks/bench_train.py --levers spin). Returns whether
    spinning is off, or None when the runtime had already started (its
    thread pools are fixed then) or the backend is not TensorFlow.

    Why a private attribute: TensorFlow has the switch
    (ConfigProto.experimental.disable_thread_spinning) but no tf.config
    setter for it in eager mode; the context's own config is what its
    runtime is created from.
    """
    choice = os.environ.get(SPINNING_ENV, "auto").lower()
    cpus = cpus or os.cpu_count() or 1
    spin_free = choice == "off" or (choice != "on" and cpus <= SPIN_FREE_MAX_CPUS)
    try:
        import keras

        if keras.backend.backend() != "tensorflow":
            return None
        from tensorflow.core.protobuf import config_pb2
        from tensorflow.python.eager import context

        ctx = context.context()
        if ctx._context_handle is not None:  # started: too late
            return None
        config = config_pb2.ConfigProto()
        if ctx._config is not None:
            config.CopyFrom(ctx._config)
        config.experimental.disable_thread_spinning = spin_free
        ctx._config = config
        return spin_free
    except (ImportError, AttributeError):  # another TensorFlow: keep its defaults
        return None


def backend_info() -> dict[str, str]:
    import keras

    backend = keras.backend.backend()
    return {
        "keras_version": keras.__version__,
        "backend": backend,
        "backend_version": _backend_version(backend),
        "device": _device(backend),
        "python": platform.python_version(),
        "gpu_advice": gpu_advice(backend),
    }


def _backend_version(backend: str) -> str:
    module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}.get(backend)
    if not module:
        return ""
    try:
        return __import__(module).__version__
    except ImportError:
        return ""


def _device(backend: str) -> str:
    """The GPU's name when the backend sees one, else "CPU"."""
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            if gpus:
                details = tf.config.experimental.get_device_details(gpus[0])
                return details.get("device_name", "GPU") + (f" (x{len(gpus)})" if len(gpus) > 1 else "")
        elif backend == "torch":
            import torch

            if torch.cuda.is_available():
                return torch.cuda.get_device_name(0)
        elif backend == "jax":
            import jax

            devices = [d for d in jax.devices() if d.platform != "cpu"]
            if devices:
                return getattr(devices[0], "device_kind", devices[0].platform.upper())
    except Exception:  # device queries must never break start-up
        pass
    return "CPU"


NVIDIA_PROC = Path("/proc/driver/nvidia")  # the Linux driver's own files: present once its kernel module is loaded
NVIDIA_SMI_TIMEOUT_S = 3  # nvidia-smi answers in well under a second unless the driver is hung
GPU_EXTRA_COMMAND = '.venv/bin/pip install -e ".[gpu]"'
TENSORFLOW_INSTALL_URL = "https://www.tensorflow.org/install/pip"


class NvidiaGpus(NamedTuple):
    """What the machine says about its NVIDIA GPUs, TensorFlow aside."""
    present: bool
    names: tuple[str, ...] = ()
    driver_version: str = ""


def probe_nvidia() -> NvidiaGpus:
    """Whether the machine has an NVIDIA GPU, asked of the driver, not of TensorFlow.

    Linux: the driver's files under /proc/driver/nvidia (no process spawned).
    Elsewhere (Windows, WSL2, where /proc has no such folder): `nvidia-smi`,
    and only when it is on PATH. Never raises; a failure reads as no GPU.
    """
    try:
        if NVIDIA_PROC.is_dir():
            names = []
            for information in sorted(NVIDIA_PROC.glob("gpus/*/information")):
                with contextlib.suppress(OSError, UnicodeDecodeError):
                    names.append(parse_proc_model(information.read_text(encoding="utf-8", errors="replace")))
            version = ""
            with contextlib.suppress(OSError):
                version = parse_proc_driver_version((NVIDIA_PROC / "version").read_text(errors="replace"))
            return NvidiaGpus(True, tuple(name for name in names if name), version)
        smi = shutil.which("nvidia-smi")
        if smi is None:
            return NvidiaGpus(False)
        import subprocess  # here: the window's start-up does not pay for it

        done = subprocess.run([smi, "--query-gpu=name,driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S,
                              stdin=subprocess.DEVNULL,
                              creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0))  # no console flash
        if done.returncode != 0:  # no GPU, or a driver nvidia-smi cannot talk to
            return NvidiaGpus(False)
        return parse_smi_query(done.stdout)
    except Exception:  # a probe must never break start-up
        return NvidiaGpus(False)


def parse_proc_driver_version(text: str) -> str:
    """"550.54.15" from /proc/driver/nvidia/version's "NVRM version: ... Kernel Module ... 550.54.15 ..." line."""
    for line in text.splitlines():
        if line.startswith("NVRM version:"):
            found = re.search(r"\s(\d+\.\d+(?:\.\d+)*)(?:\s|$)", line)  # the first dotted number
            return found.group(1) if found else ""
    return ""


def parse_proc_model(text: str) -> str:
    """"NVIDIA H200" from a /proc/driver/nvidia/gpus/*/information file's "Model:" line."""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "Model":
            return value.strip()
    return ""


def parse_smi_query(output: str) -> NvidiaGpus:
    """The GPUs of `nvidia-smi --query-gpu=name,driver_version --format=csv,noheader`: "NAME, VERSION" a line."""
    names, version = [], ""
    for line in output.splitlines():
        name, sep, driver = line.strip().rpartition(", ")
        if sep and name:
            names.append(name)
            version = version or driver.strip()
    return NvidiaGpus(bool(names), tuple(names), version)


def gpu_advice_for(*, gpu_present: bool, gpu_names: tuple[str, ...] | list[str] = (), tf_sees_gpu: bool,
                   built_with_cuda: bool, cuda_libraries: bool = True, driver_version: str = "",
                   cuda_version: str = "", platform_name: str = "linux") -> str:
    """One line on why TensorFlow does not use the machine's NVIDIA GPU and what to do, or "".

    A pure function of what probe_nvidia and TensorFlow say (see gpu_advice),
    so each case can be tested on a machine without a GPU. `cuda_libraries`:
    whether the CUDA and cuDNN libraries a CUDA build of TensorFlow loads at
    start-up are there (pip's `tensorflow` on Linux is such a build but ships
    without them; `tensorflow[and-cuda]` adds them).
    """
    if not gpu_present or tf_sees_gpu:
        return ""
    gpu = f"the NVIDIA GPU ({', '.join(gpu_names)})" if gpu_names else "the NVIDIA GPU"
    if platform_name.startswith(("win", "cygwin")):
        return (f"TensorFlow cannot use {gpu}: native Windows has no TensorFlow GPU support after 2.10; "
                f"train in WSL2 (Ubuntu), with {GPU_EXTRA_COMMAND} there.")
    if not built_with_cuda or not cuda_libraries:
        return (f"TensorFlow cannot use {gpu}: the CUDA libraries are not installed. "
                f"Install them with {GPU_EXTRA_COMMAND} (Linux), then restart.")
    driver = f"the NVIDIA driver ({driver_version})" if driver_version else "the NVIDIA driver"
    cuda = f" for TensorFlow's CUDA {cuda_version}" if cuda_version else ""
    return (f"TensorFlow is built with CUDA but sees no GPU: {driver} may be too old{cuda}, or the CUDA "
            f"libraries were not found. Check nvidia-smi and {TENSORFLOW_INSTALL_URL}.")


def gpu_advice(backend: str | None = None) -> str:
    """gpu_advice_for with this machine's answers; "" at once (TensorFlow not
    imported) when there is no NVIDIA GPU, or when the backend is not TensorFlow."""
    try:
        nvidia = probe_nvidia()
        if not nvidia.present:
            return ""
        if backend is None:
            import keras

            backend = keras.backend.backend()
        if backend != "tensorflow":
            return ""
        import tensorflow as tf

        tf_sees_gpu = bool(tf.config.list_physical_devices("GPU"))
        built_with_cuda = bool(tf.test.is_built_with_cuda())
        build = dict(tf.sysconfig.get_build_info()) if built_with_cuda else {}
        cuda_version = str(build.get("cuda_version", "") or "")
        libraries = tf_sees_gpu or not built_with_cuda or _cuda_libraries_found(
            cuda_version, str(build.get("cudnn_version", "") or ""))
        return gpu_advice_for(gpu_present=True, gpu_names=nvidia.names, tf_sees_gpu=tf_sees_gpu,
                              built_with_cuda=built_with_cuda, cuda_libraries=libraries,
                              driver_version=nvidia.driver_version, cuda_version=cuda_version,
                              platform_name=sys.platform)
    except Exception:  # advice is a nicety, never a reason to fail
        return ""


def _cuda_libraries_found(cuda_version: str, cudnn_version: str) -> bool:
    """Whether the CUDA runtime and cuDNN a CUDA build of TensorFlow loads are
    there: pip's nvidia-* packages (what tensorflow[and-cuda] installs), or
    libraries the dynamic loader finds (a system CUDA)."""
    try:
        if all(importlib.util.find_spec(f"nvidia.{name}") is not None for name in ("cuda_runtime", "cudnn")):
            return True
    except ImportError:  # no nvidia namespace package at all
        pass
    if not sys.platform.startswith("linux"):
        return True  # no way to tell: the driver advice is the safer one
    import ctypes

    cuda_major = cuda_version.split(".")[0] or "12"
    cudnn_major = cudnn_version.split(".")[0] or "9"
    try:
        ctypes.CDLL(f"libcudart.so.{cuda_major}")
        ctypes.CDLL(f"libcudnn.so.{cudnn_major}")
    except OSError:
        return False
    return True


def start_compute_threads_nicer(steps: int = 10) -> None:
    """Let the backend start its compute threads `steps` below the caller's priority (Linux).

    TensorFlow starts its thread pools when the first tensor is made, and on
    Linux a new thread inherits the niceness of the thread that starts it. So
    a short-lived, nicer thread makes the first tensor: when training keeps
    every core busy, the scheduler still runs the window's thread at once.
    The threads that run Python keep the normal priority: one that held the
    GIL while starved of CPU would stall the window. Call it before anything
    else has made a tensor; a lower priority is a nicety, never a reason to fail.
    """
    import sys
    import threading

    if not sys.platform.startswith("linux"):
        return

    def start() -> None:
        try:
            thread_id = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, thread_id, os.getpriority(os.PRIO_PROCESS, thread_id) + steps)
            import keras

            prepare_tensorflow()
            keras.ops.convert_to_tensor(0.0)
        except Exception:
            pass

    starter = threading.Thread(target=start, name="cifar-studio-backend-start")
    starter.start()
    starter.join()
