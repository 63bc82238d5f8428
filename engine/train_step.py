"""What the Trainer changes in the training step while `fit` runs, keeping its math.

- `fused_batch_norm`: Keras 3 computes batch normalization in training from
  separate ops (mean, variance, normalise, scale, shift, and the backward of
  each), which on the TensorFlow CPU build costs about as much as the three
  convolutions of SimCNN. TensorFlow has one fused kernel for all of it
  (FusedBatchNormV3, oneDNN on CPU, cuDNN on GPU) with the exact analytic
  gradient. While a model trains, each plain BatchNormalization layer's
  training call is routed to that kernel; the layer, its weights and its
  saved config do not change, and inference keeps Keras' own code.
  TensorFlow only: on JAX and PyTorch nothing changes. Not a custom layer,
  because a saved model must open in plain Keras with no custom objects
  (safe mode): the model keeps Keras' own layer and only its training call
  is swapped, for the duration of `fit`.
- `StepGate`: a stop request that reaches inside a multi-step graph call.
- `wrapped_train_step`: the one way both of these and the input stream's
  in-step gather (engine/pipeline.py's `batch_from_feed`) wrap Keras' own
  train_step.

Imported when a run starts (it imports keras), like engine/callbacks.py.
"""

from __future__ import annotations

import contextlib

import keras

MIN_FUSED_EPSILON = 1.001e-5  # FusedBatchNormV3 refuses smaller epsilons


def batch_norm_layers(model) -> list:
    """Every BatchNormalization layer of `model`, nested models included."""
    found = []
    for layer in model.layers:
        if type(layer) is keras.layers.BatchNormalization:
            found.append(layer)
        elif hasattr(layer, "layers"):
            found.extend(batch_norm_layers(layer))
    return found


def can_fuse(layer) -> bool:
    """The plain case FusedBatchNormV3 computes exactly: centred and scaled,
    no renormalization, statistics per device (channels last is checked
    per call, where the input's rank is known)."""
    return (
        isinstance(layer.axis, int)
        and layer.center and layer.scale
        and not layer.renorm and not layer.synchronized
        and layer.epsilon >= MIN_FUSED_EPSILON
    )


@contextlib.contextmanager
def fused_batch_norm(model, enabled: bool = True):
    """Train `model`'s batch normalization with the fused kernel inside the block."""
    if not enabled or keras.backend.backend() != "tensorflow":
        yield []
        return
    layers = [layer for layer in batch_norm_layers(model) if can_fuse(layer)]
    for layer in layers:
        layer.call = _fused_training_call(layer)
    try:
        yield layers
    finally:
        for layer in layers:
            del layer.call


def _fused_training_call(layer):
    import tensorflow as tf

    keras_call = type(layer).call.__get__(layer)

    def call(inputs, training=None, mask=None):
        channels_last = len(inputs.shape) == 4 and layer.axis % 4 == 3
        if not (training and layer.trainable) or mask is not None or not channels_last:
            return keras_call(inputs, training=training, mask=mask)
        # As Keras: statistics in float32 whatever the compute dtype.
        x = tf.cast(inputs, "float32")
        y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            x, tf.cast(layer.gamma, "float32"), tf.cast(layer.beta, "float32"),
            epsilon=layer.epsilon, data_format="NHWC", is_training=True,
        )
        # The kernel returns the unbiased variance (n / (n - 1)); Keras'
        # moving average uses the biased one, which normalised the batch.
        count = tf.cast(tf.size(x) // tf.shape(x)[-1], "float32")
        variance = variance * ((count - 1.0) / count)
        momentum = layer.momentum
        layer.moving_mean.assign(tf.cast(layer.moving_mean, "float32") * momentum + mean * (1.0 - momentum))
        layer.moving_variance.assign(
            tf.cast(layer.moving_variance, "float32") * momentum + variance * (1.0 - momentum))
        return tf.cast(y, layer.compute_dtype)

    return call


@contextlib.contextmanager
def wrapped_train_step(model, wrap):
    """Inside the block, `model.train_step` is `wrap(the step it had)`.

    Keras' own API for this is subclassing the model and overriding
    train_step; the model here is a plain functional one (and is saved as
    one), so its instance attribute is set for the duration of `fit` instead,
    and blocks nest (the step gate around the stream's gather).
    """
    had_own = "train_step" in vars(model)
    previous = model.train_step
    model.train_step = wrap(previous)
    try:
        yield
    finally:
        if had_own:
            model.train_step = previous
        else:
            del model.train_step
        # Keras keeps the traced step for the next fit: drop it, so a later
        # fit traces the model's own step again (and the images the gather
        # captured are freed with it).
        model.train_function = None


class StepGate:
    """A stop request that reaches inside a multi-step call (TensorFlow).

    With `steps_per_execution` N, Keras runs N training steps in one graph
    call and a callback only sees the call's end, so `model.stop_training`
    alone would let up to N - 1 more batches train after Stop. Inside
    `guarding(model)` each step first reads a boolean variable and, once
    `close()` has set it, does nothing (the batch fetched for it is
    dropped). So a stop takes effect within one batch whatever N is: the
    steps of one call run in order (each reads the weights the previous one
    wrote), so the flag is read as each batch starts, not ahead of it
    (tests/engine/test_trainer.py checks it with N = 10).

    Why not Keras' own API: no Keras callback runs between the steps of one
    call, and this keeps Keras' own train_step (the math) untouched.
    """

    def __init__(self):
        import tensorflow as tf

        self.flag = tf.Variable(False, trainable=False, name="stop_requested")

    def close(self) -> None:
        self.flag.assign(True)

    @contextlib.contextmanager
    def guarding(self, model):
        """Inside the block, each training step of `model` runs only while
        the gate is open.

        Where Keras would compile the step with XLA (`model.jit_compile`:
        "auto" picks it on GPUs), the flag's tf.cond stays in TensorFlow's
        graph and XLA compiles the step inside it instead, which is what Keras
        would have compiled. With the cond inside XLA's function, an epoch
        under XLA took many times as long as with it outside
        (benchmarks/bench_train.py --levers --only XLA measures both).
        """
        import tensorflow as tf

        jit = bool(model.jit_compile)

        def wrap(step):
            inner = tf.function(step, jit_compile=True, reduce_retracing=True) if jit else step

            def train_step(data):
                # The training branch first: tracing it builds the metrics
                # the other branch reads.
                return tf.cond(tf.logical_not(self.flag), lambda: inner(data), model.get_metrics_result)

            return train_step

        model.jit_compile = False  # Keras' own XLA function would hold the cond
        try:
            with wrapped_train_step(model, wrap):
                yield
        finally:
            model.jit_compile = jit
            if jit:  # built without XLA during fit: let evaluate and predict build their own again
                model.test_function = model.predict_function = None
