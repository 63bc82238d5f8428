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
- Machines ("multiworker"): this process is one worker of TensorFlow's
  MultiWorkerMirroredStrategy, which reads the cluster from the TF_CONFIG
  environment variable (the same command runs on every machine, each with
  its own task index). Every worker loads the same data and runs the same
  steps; each global batch is split across the workers and the gradients
  are all-reduced, so every worker ends with the same weights. Worker 0 is
  the chief: only it writes the run (engine/training.py gives the others a
  throw-away store). Keras 3 needs two fixes for it (_keras_multiworker_fixes).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
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
    cluster: "Cluster | None" = None
    replicas: int = 1

    @property
    def text(self) -> str:
        if self.kind == "none":
            return "one device"
        if self.cluster is not None:
            return (f"{self.cluster.text} with {self.kind}, {self.replicas} replica"
                    f"{'s' if self.replicas != 1 else ''} in sync")
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
    if distribution == "multiworker":
        if backend != "tensorflow":
            raise ConfigError(f"training.distribution = 'multiworker' needs the TensorFlow backend "
                              f"(MultiWorkerMirroredStrategy); this is '{backend}'")
        cluster = multiworker_cluster()
        strategy = multiworker_strategy()
        with strategy.scope():
            yield Placement("MultiWorkerMirroredStrategy", list(cluster.workers), cluster,
                            strategy.num_replicas_in_sync)
    elif backend == "tensorflow":
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


@dataclass(frozen=True)
class Cluster:
    """The workers TF_CONFIG names and which of them this process is."""

    workers: tuple[str, ...]
    index: int

    @property
    def chief(self) -> bool:
        return self.index == 0

    @property
    def text(self) -> str:
        role = "the chief, which writes the run" if self.chief else "not the chief: the chief writes the run"
        return f"worker {self.index} of {len(self.workers)} ({', '.join(self.workers)}; this one is {role})"


def multiworker_cluster(environ=None) -> Cluster:
    """TF_CONFIG as TensorFlow documents it, checked before TensorFlow sees it:
    {"cluster": {"worker": ["host1:port", "host2:port"]}, "task": {"type": "worker", "index": 0}}.
    Raises ConfigError saying what is wrong (TensorFlow would hang or fail later)."""
    raw = (os.environ if environ is None else environ).get("TF_CONFIG", "").strip()
    example = ('TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
               '"task": {"type": "worker", "index": 0}}\'')
    if not raw:
        raise ConfigError("training.distribution = multiworker needs TF_CONFIG, the cluster and this machine's "
                          f"place in it, set on every machine, e.g. {example} (index 1 on the second machine)")
    try:
        spec = json.loads(raw)
        workers = spec["cluster"]["worker"]
        task = spec["task"]
        kind, index = task["type"], task["index"]
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"TF_CONFIG is not a cluster TensorFlow can use: {raw[:200]!r}; expected {example}") \
            from None
    if set(spec["cluster"]) - {"worker"}:
        raise ConfigError("TF_CONFIG names a cluster with other jobs than 'worker' "
                          f"({', '.join(sorted(spec['cluster']))}); the app's workers are all 'worker', "
                          "and worker 0 is the chief")
    if not isinstance(workers, list) or not workers or not all(isinstance(w, str) and ":" in w for w in workers):
        raise ConfigError(f"TF_CONFIG's cluster.worker must be a list of host:port addresses, not {workers!r}")
    if kind != "worker" or not isinstance(index, int) or not 0 <= index < len(workers):
        raise ConfigError(f"TF_CONFIG's task must be {{\"type\": \"worker\", \"index\": 0..{len(workers) - 1}}}, "
                          f"not {task!r}")
    return Cluster(tuple(workers), index)


@functools.lru_cache(maxsize=None)
def multiworker_strategy():
    """The process's one MultiWorkerMirroredStrategy. TensorFlow needs it made
    before any other TensorFlow operation runs, so `main.py train` makes it
    first; it waits until every worker of TF_CONFIG has started."""
    import tensorflow as tf

    _keras_multiworker_fixes()
    return tf.distribute.MultiWorkerMirroredStrategy()


def _keras_multiworker_fixes() -> None:
    """Two fixes that let Keras 3's fit() run under MultiWorkerMirroredStrategy.

    keras-team/keras#20585 (open): TensorFlow's own multi-worker Keras
    tutorial fails under Keras 3. Tried with Keras 3.15.1 and TensorFlow
    2.21 on two workers on 127.0.0.1 (docs/performance.md):
    1. TensorFlowTrainer._maybe_symbolic_build all-reduces the first data
       batch (a tuple of per-replica values) only to learn its shapes; the
       collective strategy cannot reduce a tuple: "ValueError: Attempt to
       convert a value (PerReplica:...) with an unsupported type". Any one
       replica's batch has the shapes it needs, so it takes this worker's.
    2. reduce_per_replica averages the step's logs (scalars) with
       strategy.reduce("MEAN", v, axis=0): "Invalid reduction dimension 0
       for input with 0 dimensions". Scalars are averaged with axis=None.
    With both, two workers end with bit-identical weights, equal to one
    process's run on the same global batch (tests/engine/test_multiworker.py,
    which fails when a Keras release no longer fits them). The rest of
    Keras' multi-worker path (gradient all-reduce, loss scaling, predict's
    concatenation) is Keras' own. Remove them when Keras fixes the issue.
    """
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer as tf_trainer

    if getattr(tf_trainer, "_cifar_studio_fixed", False):
        return
    reduce_per_replica = tf_trainer.reduce_per_replica

    def reduce_logs(values, strategy, reduction):
        if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(strategy):
            def mean(value):
                if not tf_trainer._is_per_replica_instance(value):
                    return value
                return strategy.reduce("MEAN", value, axis=0 if value.values[0].shape.rank else None)
            return tf.nest.map_structure(mean, values)
        return reduce_per_replica(values, strategy, reduction)

    def symbolic_build(self, iterator=None, data_batch=None):
        if self._distribute_strategy is None:
            return
        if iterator is not None:
            for _, _, it in iterator:
                batch = next(it)
                data_batch = tf.nest.map_structure(
                    lambda v: self.distribute_strategy.experimental_local_results(v)[0]
                    if isinstance(v, tf.distribute.DistributedValues) else v, batch)
                break
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    tf_trainer.reduce_per_replica = reduce_logs
    tf_trainer.TensorFlowTrainer._maybe_symbolic_build = symbolic_build
    tf_trainer._cifar_studio_fixed = True


def weights_digest(model) -> str:
    """A short SHA-256 of every weight's bytes, in the model's order: the same
    on every worker when they are in step."""
    import hashlib

    import numpy as np

    digest = hashlib.sha256()
    for weights in model.get_weights():
        digest.update(np.ascontiguousarray(weights).tobytes())
    return digest.hexdigest()[:16]
