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
import sys
import tempfile

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
