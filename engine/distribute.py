"""Precision and devices for a run: mixed precision, and all local devices.

Both are set around building (and compiling) the model, because Keras
fixes a layer's dtype policy and a variable's placement when they are
created.

- Precision: Keras' dtype policies. "mixed_float16" and "mixed_bfloat16"
  compute in 16 bits and keep the weights in float32; the classifier's
  softmax stays float32 (engine/models.py gives it its own dtype) and Keras
  wraps the optimizer in a LossScaleOptimizer for float16 by itself. Fast on
  GPUs with tensor cores; on a CPU without native 16-bit arithmetic it is
  slower than float32.
- Devices ("mirrored"): data parallelism over every local GPU, or every
  local CPU device when there is no GPU. TensorFlow: MirroredStrategy.
  JAX: Keras' DataParallel distribution. PyTorch has no Keras distribution
  API, so it is refused with a clear message. The batch size is the global
  batch, split evenly across the devices.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass, field

from engine.errors import ConfigError


@contextlib.contextmanager
def precision_policy(name: str):
    """Build layers under the dtype policy `name` ("float32", "mixed_float16",
    "mixed_bfloat16"); the previous policy is back after the block."""
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


@dataclass
class Placement:
    """Where a run trains: a description for the user and the device names."""

    kind: str
    devices: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        if self.kind == "none":
            return "one device"
        count = len(self.devices)
        return f"{count} device{'s' if count != 1 else ''} ({', '.join(self.devices)}) with {self.kind}"


def local_devices() -> list[str]:
    """The local GPUs, or the local CPU devices when there is no GPU."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_logical_devices("GPU")
        return [d.name for d in gpus or tf.config.list_logical_devices("CPU")]
    if backend == "jax":
        import jax

        accelerators = [d for d in jax.devices() if d.platform != "cpu"]
        return [str(d) for d in accelerators or jax.devices("cpu")]
    return []


@functools.lru_cache(maxsize=None)
def _mirrored_strategy(devices: tuple[str, ...]):
    """One MirroredStrategy per device set for the whole process: a second
    strategy over the same devices reuses the first one's collective keys,
    and its first all-reduce fails with a shape mismatch (seen with
    TensorFlow 2.21 when the app trains twice)."""
    import tensorflow as tf

    return tf.distribute.MirroredStrategy(list(devices))


@contextlib.contextmanager
def placement(distribution: str):
    """Build and compile the model inside this block to train on `distribution`.

    Yields a Placement. For TensorFlow the strategy scope is entered here;
    the model keeps its strategy for fit, evaluate and predict. For JAX the
    Keras distribution is set for the block (the Trainer keeps the whole
    run inside it, since the data is sharded when fit runs).
    """
    if distribution == "none":
        yield Placement("none")
        return
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        devices = local_devices()
        with _mirrored_strategy(tuple(devices)).scope():
            yield Placement("MirroredStrategy", devices)
    elif backend == "jax":
        devices = keras.distribution.list_devices()
        previous = keras.distribution.distribution()
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        try:
            yield Placement("DataParallel", [str(d) for d in devices])
        finally:
            keras.distribution.set_distribution(previous)
    else:
        raise ConfigError(
            f"training.distribution = 'mirrored' needs the TensorFlow or JAX backend; "
            f"this is '{backend}' (set KERAS_BACKEND, or use distribution 'none')"
        )
