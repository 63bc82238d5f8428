"""TensorFlow's native start-up lines stay off the terminal; everything else written meanwhile is kept."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from engine.system import native_stderr_filtered

ROOT = Path(__file__).resolve().parents[2]
NATIVE_LINES = [
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
    b"I0000 00:00:1796174470.419236    1875 port.cc:153] oneDNN custom operations are on.\n",
    b"E0000 00:00:1796174474.135143    1875 cuda_platform.cc:52] failed call to cuInit: INTERNAL\n",
    b"2025-09-17 14:44:05.157831: I external/local_xla/xla/tsl/cuda/cudart_stub.cc:32] Could not find cuda\n",
]


def test_native_log_lines_are_dropped_and_other_output_kept(capfd):
    with native_stderr_filtered():
        for line in NATIVE_LINES:
            os.write(2, line)
        os.write(2, b"error: the app's own line\n")
        os.write(2, b"I0000 is how a user's file might start, without the rest\n")
    err = capfd.readouterr().err
    assert err == "error: the app's own line\nI0000 is how a user's file might start, without the rest\n"


def _import_tensorflow(verbose: bool) -> str:
    script = ("import sys; from engine.system import quiet_tensorflow_start; quiet_tensorflow_start(); "
              "print('before', file=sys.stderr, flush=True); import keras; import tensorflow as tf; "
              "tf.config.list_physical_devices('GPU'); print('after', file=sys.stderr, flush=True)")
    env = {key: value for key, value in os.environ.items() if key not in ("TF_CPP_MIN_LOG_LEVEL",)}
    env["CIFAR_STUDIO_VERBOSE"] = "1" if verbose else ""
    env["KERAS_BACKEND"] = "tensorflow"
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stderr.decode(errors="replace")


def test_importing_tensorflow_says_nothing_unless_verbose():
    quiet = _import_tensorflow(verbose=False)
    assert quiet.split() == ["before", "after"], quiet
    verbose = _import_tensorflow(verbose=True)
    assert "before" in verbose and "after" in verbose  # TensorFlow's own lines, whatever this build prints
