"""The model zoo: the seeds' classifiers, with all preprocessing inside the model.

Every model takes raw 0..255 RGB images (uint8 or float) and does its own
scaling, ImageNet normalisation, resizing and augmentation with built-in Keras
layers, so a saved .h5 or .keras file opens with plain
`keras.models.load_model` (safe mode, no custom objects) and needs nothing
else to classify a picture. None of these layers has parameters, so the
counts match the seeds' models exactly.

Written against `keras` only, so it runs on the TensorFlow, JAX and PyTorch
backends.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import socket
import threading

import keras
from keras import layers

from engine.config import ModelConfig
from engine.errors import ModelError
from engine.registry import ARCHITECTURES, AUGMENTATIONS, HEADS, WEIGHTS

MIN_PRETRAINED_SIDE = 32  # keras.applications refuses smaller inputs
MIN_SCRATCH_SIDE = 18  # three valid 3x3 convs and two poolings leave 1x1
IMAGENET_RGB_MEAN = (123.68, 116.779, 103.939)  # preprocess_input's BGR mean, in RGB order
FIRST_CONV = {"resnet50": "conv1_conv", "vgg16": "block1_conv1"}  # the bases that expect BGR
TRANSLATION = 0.125  # 4 pixels of 32, as the usual pad-and-crop
ERASE_PROBABILITY = 0.5
ERASE_AREA = (0.02, 0.2)

# Where keras.applications fetches the bases without their top. The cache is
# Keras' own (~/.keras/models), so a file it already downloaded is reused.
IMAGENET_BASE_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"
WEIGHTS_CACHE_DIR: str | None = None
DOWNLOAD_TIMEOUT_S = 30
MOBILENETV2_SIZES = (96, 128, 160, 192, 224)


def resolved_input_size(cfg: ModelConfig, input_shape: tuple[int, int, int]) -> int:
    """The side of the square images the base sees.

    Input size 0 is the architecture's default: ResNet50's is 224 (the first
    seed's 7x upsampling of CIFAR); VGG16's and MobileNetV2's the data's own
    side, at least 32 (the smallest keras.applications accepts). The models
    trained from scratch take the data as it is.
    """
    side = max(int(input_shape[0]), int(input_shape[1]))
    architecture = ARCHITECTURES[cfg.architecture]
    if not architecture.pretrained:
        return side
    if cfg.input_size:
        return int(cfg.input_size)
    return architecture.default_input_size or max(side, MIN_PRETRAINED_SIDE)


# Keras draws each new layer's initializer seed from Python's global `random` as the layer is made, so
# a model built while another thread makes layers (the window counts parameters and opens model files on
# other threads than the one that trains) would start from other weights than its seed gives. Everything
# in the app that makes Keras layers holds this lock meanwhile; the Trainer sets the seed inside it.
_MAKING_LAYERS = threading.RLock()


@contextlib.contextmanager
def making_layers(seed: int | None = None):
    """Hold while building or loading a model; with `seed`, Keras' seeds are set first, inside the hold."""
    with _MAKING_LAYERS:
        if seed is not None:
            keras.utils.set_random_seed(seed)
        yield


def build_model(
    cfg: ModelConfig,
    input_shape: tuple[int, int, int],
    num_classes: int,
    augmentation: str = "none",
    seed: int | None = None,
) -> keras.Model:
    """Build the classifier `cfg` describes; not compiled.

    `seed` seeds the augmentation and dropout layers; initial weights follow
    `keras.utils.set_random_seed`. Raises ModelError for anything the user
    can fix (a missing weights file, no internet for ImageNet, images too
    small or with the wrong number of channels).
    """
    input_shape = _check(cfg, input_shape, num_classes, augmentation)
    if not ARCHITECTURES[cfg.architecture].pretrained:
        return _build_scratch(cfg.architecture, input_shape, num_classes, augmentation, seed)
    return _build_transfer(cfg, input_shape, num_classes, augmentation, seed)


def param_counts(model: keras.Model) -> dict[str, int]:
    """Total, trainable and non-trainable parameters as model.summary() counts them.

    An optimizer's variables are not included (summary lists them apart).
    """
    trainable = _count(model.trainable_weights)
    non_trainable = _count(model.non_trainable_weights)
    return {"total": trainable + non_trainable, "trainable": trainable, "non_trainable": non_trainable}


def multiply_accumulates(model: keras.Model) -> int:
    """Multiply-accumulates of one image's forward pass through the
    convolutions and dense layers (nested models included), the work a
    training step grows with; the other layers cost little beside them.
    A layer whose output shape is unknown (a subclassed model) counts 0."""
    total = 0
    for layer in model.layers:
        if hasattr(layer, "layers"):
            total += multiply_accumulates(layer)
            continue
        kernel = getattr(layer, "kernel", None)
        if kernel is None or not isinstance(layer, (layers.Conv2D, layers.DepthwiseConv2D, layers.Dense)):
            continue
        try:
            outputs = math.prod(int(n) for n in layer.output.shape[1:])
        except (AttributeError, ValueError, TypeError):
            continue
        kh_kw_in = math.prod(int(n) for n in kernel.shape[:-1])  # Dense: the inputs; Conv2D: kh * kw * inputs/groups
        if isinstance(layer, layers.DepthwiseConv2D):
            kh_kw_in = math.prod(int(n) for n in kernel.shape[:2])  # each output reads one input channel
        total += outputs * kh_kw_in
    return total


def estimate_param_counts(
    cfg: ModelConfig, input_shape: tuple[int, int, int], num_classes: int
) -> dict[str, int]:
    """The counts build_model's model would have, without loading any weights.

    Builds the same model with random weights (no download, no file), so the
    GUI can show a live count that honours the head and the frozen layers.
    Cached, since building ResNet50 takes a moment.
    """
    shape = tuple(int(n) for n in input_shape)
    return dict(
        _estimate(cfg.architecture, cfg.trainable_layers, cfg.input_size, cfg.head, shape, int(num_classes))
    )


def describe_model(model: keras.Model) -> list[tuple[str, str, int]]:
    """(layer name, output shape, parameters) per top-level layer, for a summary table."""
    rows = []
    for layer in model.layers:
        try:
            shape = str(tuple(layer.output.shape))
        except (AttributeError, ValueError):
            shape = "?"
        rows.append((layer.name, shape, int(layer.count_params()) if layer.built else 0))
    return rows


@functools.lru_cache(maxsize=32)
def _estimate(architecture, trainable_layers, input_size, head, input_shape, num_classes):
    cfg = ModelConfig(
        architecture=architecture, weights="none", trainable_layers=trainable_layers,
        input_size=input_size, head=head,
    )
    with making_layers():
        return tuple(param_counts(build_model(cfg, input_shape, num_classes)).items())


def _count(weights) -> int:
    return int(sum(math.prod(w.shape) for w in weights))


def _check(cfg, input_shape, num_classes, augmentation) -> tuple[int, int, int]:
    """Refuse settings Keras would fail on later with a less clear message."""
    if cfg.architecture not in ARCHITECTURES:
        raise ModelError(
            f"Unknown architecture '{cfg.architecture}'; choose one of {', '.join(ARCHITECTURES)}."
        )
    if augmentation not in AUGMENTATIONS:
        raise ModelError(f"Unknown augmentation '{augmentation}'; choose one of {', '.join(AUGMENTATIONS)}.")
    if cfg.head not in HEADS:
        raise ModelError(f"Unknown head '{cfg.head}'; choose one of {', '.join(HEADS)}.")
    if len(input_shape) != 3 or any(int(n) < 1 for n in input_shape):
        raise ModelError(f"Images must have a shape (height, width, channels); got {tuple(input_shape)}.")
    if num_classes < 2:
        raise ModelError(f"A classifier needs at least 2 classes; the dataset has {num_classes}.")
    height, width, channels = (int(n) for n in input_shape)
    if not ARCHITECTURES[cfg.architecture].pretrained:
        if min(height, width) < MIN_SCRATCH_SIDE:
            raise ModelError(
                f"Images of {height}x{width} are too small for {cfg.architecture}: "
                f"it needs at least {MIN_SCRATCH_SIDE}x{MIN_SCRATCH_SIDE}."
            )
        return height, width, channels
    name = ARCHITECTURES[cfg.architecture].label
    if channels not in (1, 3):
        raise ModelError(
            f"{name} takes RGB images (3 channels) or grayscale (1 channel, repeated to RGB); "
            f"these images have {channels} channels."
        )
    size = resolved_input_size(cfg, (height, width, channels))
    if size < MIN_PRETRAINED_SIDE:
        raise ModelError(f"input_size {size} is too small for {name}: it needs at least {MIN_PRETRAINED_SIDE}.")
    if cfg.weights == "file":
        _check_weights_file(cfg, size)
    elif cfg.weights not in WEIGHTS:
        raise ModelError(f"Unknown weights '{cfg.weights}'; choose one of {', '.join(WEIGHTS)}.")
    return height, width, channels


def _expected_weights(architecture: str, size: int) -> str:
    name = ARCHITECTURES[architecture].label
    return (
        f"expected Keras .h5 weights of {name} without its top (include_top=False), "
        f"such as {_imagenet_file(architecture, size)[0]}"
    )


def _weights_file(cfg: ModelConfig) -> str:
    return os.path.expanduser(cfg.weights_file.strip())


def _check_weights_file(cfg: ModelConfig, size: int) -> None:
    """Refuse a missing file before the base is built, which takes seconds."""
    path = _weights_file(cfg)
    expected = _expected_weights(cfg.architecture, size)
    if not path:
        raise ModelError(f"No weights file is set; {expected}.")
    if not os.path.isfile(path):
        raise ModelError(f"The weights file {path} does not exist; {expected}.")
    if not path.endswith((".h5", ".hdf5", ".keras")):
        raise ModelError(f"The weights file {path} is not an .h5 or .keras file; {expected}.")


def _augment(x, augmentation: str, seed: int | None):
    """Keras' random layers: active in fit(), identity in predict() and evaluate()."""
    if augmentation in ("flip", "flip_crop", "flip_crop_erase"):
        x = layers.RandomFlip("horizontal", seed=seed, name="augment_flip")(x)
    if augmentation in ("flip_crop", "flip_crop_erase"):
        shift_seed = None if seed is None else seed + 1
        x = layers.RandomTranslation(
            TRANSLATION, TRANSLATION, fill_mode="reflect", seed=shift_seed, name="augment_shift"
        )(x)
    if augmentation == "flip_crop_erase":  # cutout: half the images lose a patch of 2-20% of their area to noise
        x = layers.RandomErasing(factor=(ERASE_PROBABILITY, ERASE_PROBABILITY), scale=ERASE_AREA,
                                 value_range=(0, 255), seed=None if seed is None else seed + 2,
                                 name="augment_erase")(x)
    return x


def _classifier(x, num_classes: int):
    # float32 so softmax stays accurate under a mixed-precision policy.
    return layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions")(x)


def _build_scratch(architecture, input_shape, num_classes, augmentation, seed) -> keras.Model:
    """SimCNN (with batch norm) or the second seed's CNN; valid padding throughout."""
    inputs = keras.Input(shape=input_shape, name="image")
    x = _augment(inputs, augmentation, seed)
    x = layers.Rescaling(1.0 / 255, name="scale")(x)
    simcnn = architecture == "simcnn"
    filters = (32, 64, 64) if simcnn else (32, 64, 128)
    for index, count in enumerate(filters, start=1):
        x = layers.Conv2D(count, 3, activation="relu", name=f"conv{index}")(x)
        if simcnn:
            x = layers.BatchNormalization(name=f"bn{index}")(x)
        if index < len(filters):
            x = layers.MaxPooling2D(name=f"pool{index}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(64 if simcnn else 128, activation="relu", name="dense")(x)
    return keras.Model(inputs, _classifier(x, num_classes), name=architecture)


def _build_transfer(cfg, input_shape, num_classes, augmentation, seed) -> keras.Model:
    """Input - [augment] - resize - [gray to RGB] - normalise - base - head."""
    architecture = cfg.architecture
    size = resolved_input_size(cfg, input_shape)
    inputs = keras.Input(shape=input_shape, name="image")
    x = _augment(inputs, augmentation, seed)
    x = _resize(x, input_shape, size)
    if input_shape[2] == 1:
        x = layers.Concatenate(name="gray_to_rgb")([x, x, x])
    if architecture == "mobilenetv2":
        x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale")(x)
    else:
        x = layers.Normalization(mean=IMAGENET_RGB_MEAN, variance=(1.0, 1.0, 1.0), name="imagenet_mean")(x)

    weights_path = _weights_path(cfg, size)
    base = _base(architecture, size)
    if weights_path:
        _load_base_weights(base, weights_path, architecture, size)
        if architecture in FIRST_CONV:
            _take_rgb(base, FIRST_CONV[architecture])
    _freeze(base, cfg.trainable_layers)
    x = base(x)

    head = ARCHITECTURES[architecture].default_head if cfg.head == "default" else cfg.head
    if architecture == "vgg16":
        x = layers.Flatten(name="flatten")(x)
    else:
        x = layers.GlobalAveragePooling2D(name="pool")(x)
    if head == "dense256":
        x = layers.Dense(256, activation="relu", name="dense_256")(x)
        x = layers.Dropout(0.5, seed=seed, name="dropout")(x)
    elif head == "dense1024_512":
        if architecture != "vgg16":
            x = layers.Flatten(name="flatten")(x)  # a no-op after pooling: the first seed's layout
        x = layers.Dense(1024, activation="relu", name="dense_1024")(x)
        x = layers.Dense(512, activation="relu", name="dense_512")(x)
    return keras.Model(inputs, _classifier(x, num_classes), name=f"{architecture}_transfer")


def _resize(x, input_shape, size: int):
    """Upsample by an integer factor when it fits (as the first seed), else resize."""
    height, width = input_shape[0], input_shape[1]
    if (height, width) == (size, size):
        return x
    if size % height == 0 and size // height * width == size:
        return layers.UpSampling2D(size // height, name="upsample")(x)
    return layers.Resizing(size, size, name="resize")(x)


def _base(architecture: str, size: int) -> keras.Model:
    """The pretrained network without its top, randomly initialised."""
    shape = (size, size, 3)
    if architecture == "resnet50":
        return keras.applications.ResNet50(include_top=False, weights=None, input_shape=shape)
    if architecture == "vgg16":
        return keras.applications.VGG16(include_top=False, weights=None, input_shape=shape)
    return keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=shape, name="mobilenetv2")


def _imagenet_file(architecture: str, size: int) -> tuple[str, str, str | None]:
    """(file name, URL, md5) of the weights keras.applications would fetch."""
    if architecture == "resnet50":
        name = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
        return name, f"{IMAGENET_BASE_URL}resnet/{name}", "4d473c1dd8becc155b73f8504c6f6626"
    if architecture == "vgg16":
        name = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
        return name, f"{IMAGENET_BASE_URL}vgg16/{name}", "6d6bbae143d832006294945121d1f1fc"
    rows = size if size in MOBILENETV2_SIZES else 224
    name = f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{rows}_no_top.h5"
    return name, f"{IMAGENET_BASE_URL}mobilenet_v2/{name}", None


def _download_imagenet(architecture: str, size: int) -> str:
    """Fetch (or find in Keras' cache) the ImageNet weights; fail fast when offline.

    urlretrieve has no timeout of its own, so a default socket timeout is set
    for the download when none is set: a blocked network then fails in
    seconds instead of hanging the run.
    """
    name, url, md5 = _imagenet_file(architecture, size)
    previous = socket.getdefaulttimeout()
    if previous is None:
        socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        return keras.utils.get_file(
            name, url, cache_subdir="models", file_hash=md5, cache_dir=WEIGHTS_CACHE_DIR
        )
    except Exception:
        raise ModelError(
            f"Could not download the ImageNet weights for {ARCHITECTURES[architecture].label} "
            "(no internet connection?). Use a local weights file (weights: file) "
            "or train without pretrained weights (weights: none)."
        ) from None
    finally:
        socket.setdefaulttimeout(previous)


def _weights_path(cfg: ModelConfig, size: int) -> str | None:
    """The weights file for the base, fetched first so that being offline fails before a long build."""
    if cfg.weights == "imagenet":
        return _download_imagenet(cfg.architecture, size)
    if cfg.weights == "file":
        return _weights_file(cfg)
    return None


def _load_base_weights(base: keras.Model, path: str, architecture: str, size: int) -> None:
    """Load the weights file into the base, as keras.applications would."""
    try:
        base.load_weights(path)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"The weights file {path} does not fit {ARCHITECTURES[architecture].label} ({reason}); "
            f"{_expected_weights(architecture, size)}."
        ) from None


def _take_rgb(base: keras.Model, first_conv: str) -> None:
    """Reverse the input channels of the first convolution's kernel.

    ResNet50 and VGG16 were trained on BGR images (caffe preprocessing). A
    flipped kernel applied to RGB is the same arithmetic as the original
    kernel applied to BGR, with no channel-flip layer (Keras has no
    parameter-free built-in one, and a Lambda would not load in safe mode).
    """
    layer = base.get_layer(first_conv)
    layer.kernel.assign(keras.ops.flip(layer.kernel, axis=2))


def _freeze(base: keras.Model, trainable_layers: int) -> None:
    """0 freezes the base, N > 0 trains its last N layers, -1 trains it all.

    Fine-tuning the last N layers keeps every batch normalization frozen, so
    it keeps the pretrained statistics in inference mode (the Keras transfer
    learning guide's advice). In Keras 3 `base(x, training=False)` does not
    do this: fit()'s training=True reaches nested models
    (keras-team/keras#20285); a BatchNormalization with trainable=False
    uses its moving statistics whatever `training` says. -1 trains batch
    normalization too, as the first seed trained ResNet50 (26,162,698
    trainable parameters; only the moving statistics are not).
    """
    if trainable_layers == 0:
        base.trainable = False
        return
    base.trainable = True
    if trainable_layers < 0:
        return
    for layer in base.layers[:-trainable_layers]:
        layer.trainable = False
    for layer in base.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.trainable = False
