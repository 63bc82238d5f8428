"""The window appears before Keras and TensorFlow are imported."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_window_is_shown_before_keras_is_imported(tmp_path):
    env = dict(
        os.environ, QT_QPA_PLATFORM="offscreen", CIFAR_STUDIO_STARTUP_PROBE="1",
        XDG_CONFIG_HOME=str(tmp_path / "config"), CIFAR_STUDIO_HOME=str(tmp_path / "store"),
        CIFAR_STUDIO_CACHE_DIR=str(tmp_path / "cache"),
    )
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from gui.app import run_gui; sys.exit(run_gui(sys.argv[:1]))"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    assert probe["keras_imported"] is False
    assert probe["tensorflow_imported"] is False
    assert (tmp_path / "config" / "CIFAR Studio" / "CIFAR Studio.ini").exists()


def test_a_long_session_of_qt_calls_does_not_abort_python():
    """PySide6 6.12.0 steals a reference to None on every void call; on
    Python 3.11 that aborts the process once None's count reaches 0
    (gui/compat.py). 300,000 calls is a few minutes of live plotting."""
    code = (
        "import gui\n"
        "from PySide6.QtCore import QObject\n"
        "probe = QObject()\n"
        "for _ in range(300_000):\n"
        "    probe.setObjectName('probe')\n"
        "print('alive')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "alive"


def test_ctrl_c_in_the_terminal_closes_the_window_as_the_close_button_does(tmp_path):
    env = dict(
        os.environ, QT_QPA_PLATFORM="offscreen", CIFAR_STUDIO_STARTUP_PROBE="stay",
        XDG_CONFIG_HOME=str(tmp_path / "config"), CIFAR_STUDIO_HOME=str(tmp_path / "store"),
        CIFAR_STUDIO_CACHE_DIR=str(tmp_path / "cache"),
    )
    process = subprocess.Popen([sys.executable, "main.py"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        assert json.loads(process.stdout.readline())["keras_imported"] is False  # the window is up
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert (tmp_path / "config" / "CIFAR Studio" / "CIFAR Studio.ini").exists()  # closed through closeEvent
