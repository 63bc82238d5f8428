"""Grad-CAM: where in an image a model's convolutional features made it see a class.

Selvaraju et al.'s Grad-CAM weighs a convolutional feature map A by the
gradient of the class's score: the weighted sum over A's channels, through
a ReLU, scaled to 0..1 and resized to the image, is the heatmap. The score
is the class's logit (the last Dense layer without its softmax) where the
model ends in a softmax: the softmax's own gradient vanishes as a
prediction grows confident, the logit's does not.

How the gradient weighs the map (`method`):
- "hirescam" (the default): gradient times activation at each position,
  summed over channels (Draelos and Carin's HiResCAM). Where the head
  averages the explained map (ResNet50's last block at 224x224) the
  gradient is the same at every position, so this is exactly Grad-CAM.
  Where the map is flattened (SimCNN, the CNN, the VGG16 transfer model)
  each position has weights of its own, and Grad-CAM's average over
  positions can point at regions the model did not use: on the toy
  quadrants a trained CNN's Grad-CAM peaked in the wrong quadrant for
  whole classes, its HiResCAM never.
- "gradcam": the paper's channel weights, the gradient averaged over the
  map's positions.

The layer is chosen here: the last convolutional output (a convolution, or
the activation or merge that follows one, so the map holds rectified
features) whose map is still at least 4x4; a smaller map says almost
nothing about *where*. The pretrained bases (ResNet50, VGG16, MobileNetV2)
are nested models inside the transfer models, so their inner layers are not
reachable from the outer input: the model's graph is run again call by
call, nested models included, into one flat graph that shares the model's
layers and weights and outputs the feature map, the score's input and the
probabilities.

Keras 3 has no backend-neutral gradient call, so the gradient is taken per
backend, as engine/distribute.py branches: tf.GradientTape, torch.autograd
and jax.grad (over `stateless_call`). JAX differentiates only with respect
to inputs, so the flat graph adds a zero input to the feature map; the
gradient with respect to that input is the gradient with respect to the
map, the same on all three backends.
"""

from __future__ import annotations

import itertools
import math
import threading
import weakref
from dataclasses import dataclass

import numpy as np
from PIL import Image

from engine.errors import ModelError

MIN_SIDE = 4  # the smallest feature map that still shows where in the image
OVERLAY_ALPHA = 0.45
METHODS = ("hirescam", "gradcam")


class ExplainError(ModelError):
    """A model Grad-CAM cannot explain (no convolution, feature maps too small, not an image classifier)."""


@dataclass
class GradCam:
    """One image's Grad-CAM: `heatmap` (H, W) float32 in 0..1 at the image's size."""

    heatmap: np.ndarray
    class_index: int
    layer_name: str
    probabilities: np.ndarray  # the model's output for the image, float32
    feature_size: tuple[int, int] = (0, 0)  # the explained feature map's (height, width)
    method: str = "hirescam"
    note: str = ""  # set when the map is empty: nothing in the image raised the class's score there

    @property
    def probability(self) -> float:
        return float(self.probabilities[self.class_index])


def grad_cam(model, image: np.ndarray, class_index: int | None = None, layer_name: str | None = None,
             method: str = "hirescam") -> GradCam:
    """The Grad-CAM of `image` (uint8 (H, W, 3), (H, W, 1) or (H, W), raw 0..255 as the app's models
    take them) for `class_index` (default: the predicted class), weighed by `method` (see the module).

    The image is resized to the model's input where that is fixed, and the
    heatmap back to the image's size. The layer is chosen as the module
    docstring says unless `layer_name` names one. The prepared graph is kept
    for the model (while it lives), so the next image of the same model
    costs one forward and one backward pass. Raises ExplainError for a model
    it cannot explain.
    """
    image = _as_image(image)
    size = _model_input_size(model, image)
    with _LOCK:
        prepared = _PREPARED.setdefault(model, {})
        key = (layer_name, size)
        if key not in prepared:
            prepared[key] = Explainer(model, layer_name=layer_name, input_size=size)
        explainer = prepared[key]
    return explainer(image, class_index, method)


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = OVERLAY_ALPHA, min_side: int = 0) -> np.ndarray:
    """The image with the heatmap blended over it in a jet-like colour map (blue cold, red hot), uint8
    (H, W, 3). With `min_side` the picture is first enlarged by a whole factor (pixels kept sharp, the
    heatmap smooth) until its shorter side is at least that, so a 32x32 image is visible."""
    image = _as_image(image)
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    height, width = image.shape[:2]
    factor = max(1, math.ceil(min_side / min(height, width))) if min_side else 1
    if factor > 1:
        image = np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)
    heat = _resize_map(np.asarray(heatmap, dtype=np.float32), image.shape[:2])
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * jet(heat).astype(np.float32)
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


def jet(values: np.ndarray) -> np.ndarray:
    """Values in 0..1 as uint8 RGB colours of a jet-like map (dark blue, cyan, yellow, dark red)."""
    v = np.clip(np.asarray(values, dtype=np.float32), 0.0, 1.0)[..., None]
    channels = np.clip(1.5 - np.abs(4.0 * v - np.array([3.0, 2.0, 1.0], dtype=np.float32)), 0.0, 1.0)
    return (channels * 255.0 + 0.5).astype(np.uint8)


class Explainer:
    """Grad-CAM prepared for one model and input size: the flat graph is built once, then each call
    is one forward and one backward pass on the current Keras backend."""

    def __init__(self, model, layer_name: str | None = None, input_size: tuple[int, int] | None = None):
        """`input_size` (height, width) is used only where the model takes images of any size."""
        import keras

        self.backend = keras.backend.backend()
        if self.backend not in ("tensorflow", "torch", "jax"):
            raise ExplainError(f"Grad-CAM needs gradients, which the Keras backend '{self.backend}' does not "
                               "compute; use TensorFlow, PyTorch or JAX (KERAS_BACKEND)")
        name = self.model_name = getattr(model, "name", "the model")  # no reference to the model: see _PREPARED
        if len(getattr(model, "inputs", None) or []) != 1:
            raise ExplainError(f"{name} does not take a single image input, so Grad-CAM cannot explain it")
        if len(model.outputs) != 1 or len(model.outputs[0].shape) != 2:
            raise ExplainError(f"{name} does not output one score per class, so Grad-CAM cannot explain it")
        shape = tuple(model.inputs[0].shape[1:])
        if len(shape) != 3:
            raise ExplainError(f"{name} takes inputs of shape {shape}, not images (height, width, channels)")
        given = input_size or (None, None)
        height, width = shape[0] or given[0], shape[1] or given[1]
        if height is None or width is None:
            raise ExplainError(f"{name} takes images of any size: give the size to explain (input_size)")
        self.input_shape = (int(height), int(width), int(shape[2]))
        self.classes = int(model.outputs[0].shape[-1])
        self.input_dtype = model.inputs[0].dtype

        calls = _trace(model, self.input_shape, self.input_dtype)
        self.target = _choose(calls, name, layer_name)
        self.layer_name = calls[self.target].layer.name
        self.feature_size = calls[self.target].spatial
        self.channels_first = calls[self.target].channels_first
        self.jax_step = None  # compiled on the first image (JAX only)
        self._build(model, calls)

    def _build(self, model, calls) -> None:
        """The flat graph: inputs (image, zero map), outputs (feature map, score input, probabilities)."""
        import keras

        final = calls[-1]  # the call that gives the model's output
        self.logits_layer = None
        if _is_softmax_layer(final.layer):
            take_input = True  # the softmax's input is the logits
        elif _has_softmax(final.layer) and isinstance(final.layer, keras.layers.Dense):
            take_input = True  # the logits are computed from the Dense layer's input and its weights
            self.logits_layer = final.layer
        else:
            take_input = False  # no softmax to take off: the output is the score
        image = keras.Input(shape=self.input_shape, dtype=self.input_dtype, name="gradcam_image")
        zero = keras.Input(shape=tuple(calls[self.target].shape[1:]), dtype="float32", name="gradcam_zero")
        kept = {}

        def visit(index, layer, args, output):
            if index == self.target:
                kept["feature_map"] = output
                output = keras.layers.Add(dtype="float32", name="gradcam_add_zero")([output, zero])
            if index == len(calls) - 1:
                kept["score_input"] = args[0] if take_input else output
            return output

        probabilities = _run(model, image, _Visitor(visit))
        self.flat = keras.Model([image, zero], [kept["feature_map"], kept["score_input"], probabilities],
                                name="gradcam_" + self.model_name)
        self.zero_shape = (1, *tuple(int(n) for n in calls[self.target].shape[1:]))

    def __call__(self, image: np.ndarray, class_index: int | None = None, method: str = "hirescam") -> GradCam:
        if method not in METHODS:
            raise ValueError(f"unknown Grad-CAM method {method!r}; use one of {', '.join(METHODS)}")
        image = _as_image(image)
        x = _prepare(image, self.input_shape).astype(_numpy_dtype(self.input_dtype))[None]
        feature_map, gradients, probabilities, class_index = _GRADIENTS[self.backend](self, x, class_index)
        if self.channels_first:
            feature_map, gradients = np.moveaxis(feature_map, 0, -1), np.moveaxis(gradients, 0, -1)
        weights = gradients if method == "hirescam" else gradients.mean(axis=(0, 1))
        cam = np.maximum((feature_map * weights).sum(axis=-1), 0.0).astype(np.float32)
        heatmap = np.maximum(_resize_map(cam, image.shape[:2]), 0.0)
        peak = float(heatmap.max()) if heatmap.size else 0.0
        note = ""
        if not peak > 0 or not math.isfinite(peak):
            heatmap, note = np.zeros_like(heatmap), (f"nothing in the image raised the score of class "
                                                     f"{class_index} at layer {self.layer_name}")
        heatmap = np.clip(heatmap / peak if not note else heatmap, 0.0, 1.0)
        return GradCam(heatmap=heatmap, class_index=class_index, layer_name=self.layer_name,
                       probabilities=probabilities, feature_size=self.feature_size, method=method, note=note)

    def score(self, score_input):
        """The class scores (logits where the softmax could be taken off), with keras.ops so each
        backend's autodiff sees them."""
        import keras

        if self.logits_layer is None:
            return score_input
        layer = self.logits_layer
        x = keras.ops.cast(score_input, "float32")
        logits = keras.ops.matmul(x, keras.ops.cast(keras.ops.convert_to_tensor(layer.kernel), "float32"))
        if layer.use_bias:
            logits = logits + keras.ops.cast(keras.ops.convert_to_tensor(layer.bias), "float32")
        return logits

    def pick_class(self, probabilities: np.ndarray, class_index: int | None) -> int:
        """The class asked for (checked), else the predicted one."""
        if class_index is None:
            return int(np.argmax(probabilities))
        return self.check_class(class_index)

    def check_class(self, class_index: int) -> int:
        if not 0 <= int(class_index) < self.classes:
            raise ExplainError(f"class {class_index} is out of range: {self.model_name} has {self.classes} "
                               f"classes (0..{self.classes - 1})")
        return int(class_index)


# -- the gradient, per backend -----------------------------------------------

def _tensorflow_gradients(explainer: Explainer, x: np.ndarray, class_index: int | None):
    import tensorflow as tf

    zero = tf.zeros(explainer.zero_shape, dtype=tf.float32)
    with tf.GradientTape(watch_accessed_variables=False) as tape:  # only what depends on `zero` is recorded
        tape.watch(zero)
        feature_map, score_input, probabilities = explainer.flat([tf.constant(x), zero], training=False)
        probabilities = np.asarray(probabilities, dtype=np.float32)[0]
        class_index = explainer.pick_class(probabilities, class_index)
        score = explainer.score(score_input)[0, class_index]
    gradients = tape.gradient(score, zero)
    return _numpy(feature_map)[0], _numpy(gradients)[0], probabilities, class_index


def _torch_gradients(explainer: Explainer, x: np.ndarray, class_index: int | None):
    import keras
    import torch

    zero = keras.ops.zeros(explainer.zero_shape, dtype="float32").requires_grad_(True)
    with torch.enable_grad():
        feature_map, score_input, probabilities = explainer.flat([keras.ops.convert_to_tensor(x), zero],
                                                                 training=False)
        probabilities = _numpy(probabilities)[0]
        class_index = explainer.pick_class(probabilities, class_index)
        score = explainer.score(score_input)[0, class_index]
        (gradients,) = torch.autograd.grad(score, zero)
    return _numpy(feature_map)[0], _numpy(gradients)[0], probabilities, class_index


def _jax_gradients(explainer: Explainer, x: np.ndarray, class_index: int | None):
    import jax.numpy as jnp

    if explainer.jax_step is None:
        explainer.jax_step = _jax_step(explainer)
    flat = explainer.flat
    chosen = -1 if class_index is None else explainer.check_class(class_index)
    feature_map, gradients, probabilities, picked = explainer.jax_step(
        [v.value for v in flat.trainable_variables], [v.value for v in flat.non_trainable_variables],
        jnp.asarray(x), jnp.asarray(chosen, dtype=jnp.int32))
    return _numpy(feature_map)[0], _numpy(gradients)[0], _numpy(probabilities)[0], int(picked)


def _jax_step(explainer: Explainer):
    """One compiled forward and backward pass: JAX run op by op takes seconds a call on a
    pretrained base; compiled once, each image after the first is quick. A class of -1 is the
    predicted one, chosen inside from the same forward pass."""
    import jax
    import jax.numpy as jnp

    flat = explainer.flat
    zero = jnp.zeros(explainer.zero_shape, dtype=jnp.float32)

    def step(trainable, non_trainable, image, chosen):
        def score(offset):
            (feature_map, score_input, probabilities), _ = flat.stateless_call(
                trainable, non_trainable, [image, offset], training=False)
            picked = jnp.where(chosen < 0, jnp.argmax(probabilities[0]), chosen)
            return explainer.score(score_input)[0, picked], (feature_map, probabilities, picked)

        gradients, (feature_map, probabilities, picked) = jax.grad(score, has_aux=True)(zero)
        return feature_map, gradients, probabilities, picked

    return jax.jit(step)


_GRADIENTS = {"tensorflow": _tensorflow_gradients, "torch": _torch_gradients, "jax": _jax_gradients}


# -- walking the model's graph -----------------------------------------------

@dataclass
class _Call:
    """One layer call met while running the graph: its symbolic output's shape."""

    layer: object
    shape: tuple
    kind: str  # "conv", "follower" (a layer that keeps a convolution's map), or "" (anything else)
    channels_first: bool = False
    spatial: tuple[int, int] = (0, 0)


class _Visitor:
    """Numbers every leaf layer call of a walk in order and lets `visit` see (and replace) its output."""

    def __init__(self, visit):
        self.visit = visit
        self.counter = itertools.count()

    def __call__(self, layer, args, output):
        return self.visit(next(self.counter), layer, args, output)


def _run(model, inputs, visitor: _Visitor):
    """Run `model` on `inputs` layer call by layer call, nested Functional and Sequential models
    entered, calling `visitor` on each leaf call."""
    import keras

    if isinstance(model, keras.Sequential):
        x = inputs
        for layer in model.layers:
            x = _call(layer, visitor)(x)
        return x
    if isinstance(model, keras.Model) and hasattr(model, "_run_through_graph"):
        return model._run_through_graph(inputs, operation_fn=lambda operation: _call(operation, visitor))
    raise ExplainError(f"{getattr(model, 'name', 'the model')} is a subclassed model whose layers cannot be "
                       "followed one by one, so Grad-CAM cannot reach its feature maps")


def _call(operation, visitor: _Visitor):
    import keras

    def call(*args, **kwargs):
        if isinstance(operation, keras.Model):
            return _run(operation, args[0] if len(args) == 1 else list(args), visitor)
        return visitor(operation, args, operation(*args, **kwargs))

    return call


def _trace(model, input_shape, input_dtype) -> list[_Call]:
    """Every leaf layer call of the model on a symbolic image, in order, with what kind of map it gives."""
    import keras

    convolutions, followers = _convolution_types()
    calls: list[_Call] = []
    seen_conv = [False, False]  # a convolution met; its data format is channels_first

    def visit(index, layer, args, output):
        kind = ""
        if isinstance(layer, convolutions):
            kind = "conv"
            seen_conv[:] = [True, getattr(layer, "data_format", "channels_last") == "channels_first"]
        elif seen_conv[0] and isinstance(layer, followers):
            kind = "follower"
        shape = tuple(output.shape) if hasattr(output, "shape") else ()
        call = _Call(layer=layer, shape=shape, kind=kind if len(shape) == 4 else "", channels_first=seen_conv[1])
        if len(shape) == 4:
            dims = shape[2:4] if call.channels_first else shape[1:3]
            call.spatial = tuple(int(n) if n is not None else 0 for n in dims)
        calls.append(call)
        return output

    _run(model, keras.Input(shape=input_shape, dtype=input_dtype), _Visitor(visit))
    return calls


def _choose(calls: list[_Call], name: str, layer_name: str | None) -> int:
    """The index of the call whose output is explained."""
    if layer_name is not None:
        named = [i for i, c in enumerate(calls) if c.layer.name == layer_name]
        if not named:
            raise ExplainError(f"{name} has no layer named {layer_name!r}")
        index = named[-1]
        if len(calls[index].shape) != 4:
            raise ExplainError(f"layer {layer_name} of {name} gives no feature map (its output has shape "
                               f"{calls[index].shape}), so Grad-CAM cannot use it")
        return index
    maps = [i for i, c in enumerate(calls) if c.kind]
    if not maps:
        raise ExplainError(f"{name} has no convolution layer: Grad-CAM explains convolutional feature maps, so "
                           "it cannot show where this model looks")
    usable = [i for i in maps if min(calls[i].spatial) >= MIN_SIDE]
    if not usable:
        largest = max(maps, key=lambda i: min(calls[i].spatial))
        height, width = calls[largest].spatial
        raise ExplainError(
            f"the convolutional feature maps of {name} are at most {height}x{width} (layer "
            f"{calls[largest].layer.name}); Grad-CAM needs one of at least {MIN_SIDE}x{MIN_SIDE} to show where "
            "in the image the model looks (a larger input size gives larger maps)")
    return usable[-1]


def _convolution_types():
    """(convolutions, layers that keep a convolution's map): looked up when needed, so importing
    this module does not import Keras. Normalisations are left out: their outputs are centred, not
    rectified, and the map is read as where features are present."""
    import keras

    layers = keras.layers
    convolutions = (layers.Conv2D, layers.DepthwiseConv2D, layers.SeparableConv2D, layers.Conv2DTranspose)
    followers = (layers.Activation, layers.ReLU, layers.LeakyReLU, layers.ELU, layers.PReLU,
                 layers.Add, layers.Concatenate, layers.Multiply, layers.Average, layers.Maximum)
    return convolutions, followers


def _is_softmax_layer(layer) -> bool:
    import keras

    if isinstance(layer, keras.layers.Softmax):
        return True
    return isinstance(layer, keras.layers.Activation) and _has_softmax(layer)


def _has_softmax(layer) -> bool:
    return getattr(getattr(layer, "activation", None), "__name__", "") == "softmax"


# -- images --------------------------------------------------------------------

def _as_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4) or min(image.shape[:2]) < 1:
        raise ExplainError(f"expected an image of shape (height, width, 3); got {image.shape}")
    return image[..., :3] if image.shape[2] == 4 else image


def _model_input_size(model, image: np.ndarray) -> tuple[int, int]:
    inputs = getattr(model, "inputs", None) or []
    shape = tuple(inputs[0].shape[1:]) if inputs else ()
    if len(shape) == 3 and shape[0] is not None and shape[1] is not None:
        return int(shape[0]), int(shape[1])
    return int(image.shape[0]), int(image.shape[1])


def _prepare(image: np.ndarray, input_shape: tuple[int, int, int]) -> np.ndarray:
    """The image at the model's input size and channels, as float32 0..255."""
    height, width, channels = input_shape
    rgb = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image
    picture = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8))
    if picture.size != (width, height):
        picture = picture.resize((width, height), Image.Resampling.BILINEAR)
    picture = picture.convert("L" if channels == 1 else "RGB")
    array = np.asarray(picture, dtype=np.float32)
    return array[..., None] if channels == 1 else array


def _resize_map(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A float map resized bilinearly to (height, width)."""
    height, width = size
    if values.shape == (height, width):
        return values.astype(np.float32)
    return np.asarray(Image.fromarray(values.astype(np.float32)).resize((width, height), Image.Resampling.BILINEAR),
                      dtype=np.float32)


def _numpy(tensor) -> np.ndarray:
    import keras

    return np.asarray(keras.ops.convert_to_numpy(tensor), dtype=np.float32)


def _numpy_dtype(dtype) -> np.dtype:
    try:
        return np.dtype(str(dtype))
    except TypeError:
        return np.dtype(np.float32)


# Explainers by model, dropped with their model: an Explainer holds the model's layers, never the
# model itself, or the model (a ResNet50 is 100 MB) would live as long as the process.
_PREPARED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()
