"""What the engine runs on: Keras version, backend and device, for the
About box, the status bar and the CLI. Imports keras (call it off the GUI
thread)."""

from __future__ import annotations

import platform


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
