"""A frozen base's output computed once: the head trains on cached features.

When nothing before the first trainable layer changes from epoch to epoch
(no augmentation, no dropout, batch normalization there in inference mode,
no trainable weight), that part of the model gives every image the same
output in every epoch. Training then pushes each image through it once
(`compute_features`), keeps the output in the data cache as a memory-mapped
.npy, and fits `FrozenSplit.head`, a model that shares its layers (and so
its weights) with the whole model: the whole model is what is saved, and it
takes raw images as before.

Where the cut is: at the input of the first layer with trainable weights,
after the parameter-free layers that follow it (GlobalAveragePooling for
ResNet50 and MobileNetV2, 2,048 and 1,280 floats an image; Flatten for
VGG16). With the base frozen that is the head's first Dense; with the last
N layers trainable it is inside the base (VGG16 fine-tune: block3_conv3's
input, 8x8x256 at 32x32).

Stored as float32 when the head trains on the frozen base's output (it is
small: 2,048 floats an image, 8 KB; and the run's numbers are then exactly
the whole model's), as float16 inside a fine-tuned base or where float32
would not fit the budget (`training.feature_cache_gb`): half the disk, and
the trainable layers see the features rounded to float16 (about 3 decimal
digits), which is where mixed precision would round them anyway.

A cached file is used only for the same images and the same frozen part:
its name hashes the images' bytes, the frozen part's layers (class and
settings, names left out: Keras numbers its auto-named layers per process)
with its input shape and precision, every weight's bytes, the Keras backend
and the stored dtype. So a changed image, input size, base, weights file or
preprocessing makes a new file. Imported when a run starts (it imports keras).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable

import keras
import numpy as np

from engine.datasets.cache import cache_dir
from engine.events import StageEvent

FEATURE_CACHE_VERSION = 1
REPORT_INTERVAL = 0.25  # seconds between progress reports of the feature pass
RANDOM_LAYERS = (keras.layers.Dropout, keras.layers.GaussianNoise, keras.layers.GaussianDropout,
                 keras.layers.AlphaDropout, keras.layers.SpatialDropout2D)
STAGE = "features"


class NotSplittable(Exception):
    """The model has no fixed part before its trainable layers; the text says why."""


@dataclass
class FrozenSplit:
    """The whole model cut before its first trainable layer.

    `frozen`: raw images to features; `head`: features to probabilities,
    sharing its layers with the whole model; `cut`: where, in words."""

    frozen: keras.Model
    head: keras.Model
    cut: str
    inside_base: bool
    feature_shape: tuple[int, ...]
    dtype: str = "float32"
    key: str = ""

    @property
    def floats_per_image(self) -> int:
        return int(np.prod(self.feature_shape))

    def bytes_for(self, images: int, dtype: str | None = None) -> int:
        return images * self.floats_per_image * np.dtype(dtype or self.dtype).itemsize


@dataclass
class FeatureUse:
    """What a run did with the feature cache, for its log and for tests."""

    cut: str
    dtype: str
    floats_per_image: int
    computed: dict[str, int] = field(default_factory=dict)  # split: images pushed through the frozen part
    reused: dict[str, int] = field(default_factory=dict)  # split: images read from the cache
    seconds: float = 0.0  # the feature pass's wall time
    seconds_per_image: float | None = None  # the frozen part's, where known
    files: dict[str, str] = field(default_factory=dict)


def feature_dir() -> str:
    """Beside the decoded datasets in the data cache (CIFAR_STUDIO_CACHE_DIR overrides it)."""
    return os.path.join(os.path.dirname(cache_dir()), "features")


def split_model(model: keras.Model, dtype: str = "float32") -> FrozenSplit:
    """The frozen part and the head of `model` (a zoo model: a linear chain
    of layers, the pretrained base one of them). Raises NotSplittable where
    a random layer or a trainable batch normalization comes before the first
    trainable weight, or where the base cannot be cut there (a residual
    branch crosses the cut)."""
    outer = model.layers
    position = next((i for i, layer in enumerate(outer) if layer.trainable_weights), None)
    if position is None:
        raise NotSplittable("the model has no trainable weights")
    first = outer[position]
    _check_fixed(outer[:position])
    if not hasattr(first, "layers"):
        if not any(layer.weights for layer in outer[:position]):
            raise NotSplittable("nothing with weights comes before the first trainable layer")
        frozen = keras.Model(model.input, first.input, name="frozen_part")
        tail = keras.Model(first.input, model.output, name="head_part")
        shape = tuple(int(n) for n in first.input.shape[1:])
        inputs = keras.Input(shape, dtype=dtype, name="features")
        return FrozenSplit(frozen, keras.Model(inputs, tail(inputs), name="head"), f"the input of '{first.name}'",
                           False, shape, dtype)
    base = first
    inner_position = next(i for i, layer in enumerate(base.layers) if layer.trainable_weights)
    inner = base.layers[inner_position]
    _check_fixed(base.layers[:inner_position])
    if not any(layer.weights for layer in base.layers[:inner_position]):
        raise NotSplittable(f"the first layer of {base.name} is trainable")
    if position == 0 or position + 1 >= len(outer):
        raise NotSplittable(f"{base.name} is not between other layers")
    try:
        front = keras.Model(base.input, inner.input, name="base_front")
        back = keras.Model(inner.input, base.output, name="base_back")
    except ValueError:
        raise NotSplittable(f"{base.name} cannot be cut before '{inner.name}': another branch crosses there") from None
    frozen = keras.Model(model.input, front(outer[position - 1].output), name="frozen_part")
    after = keras.Model(outer[position + 1].input, model.output, name="head_part")
    shape = tuple(int(n) for n in inner.input.shape[1:])
    inputs = keras.Input(shape, dtype=dtype, name="features")
    return FrozenSplit(frozen, keras.Model(inputs, after(back(inputs)), name="head"),
                       f"the input of '{inner.name}' inside {base.name}", True, shape, dtype)


def _check_fixed(layers) -> None:
    for layer in _flat(layers):
        if isinstance(layer, RANDOM_LAYERS) or type(layer).__name__.startswith("Random"):
            raise NotSplittable(f"'{layer.name}' is random before the first trainable layer")
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable:
            raise NotSplittable(f"'{layer.name}' normalizes with each batch's statistics while training")


def _flat(layers) -> list:
    found = []
    for layer in layers:
        found.extend(_flat(layer.layers) if hasattr(layer, "layers") else [layer])
    return found


def frozen_key(frozen: keras.Model, dtype: str) -> str:
    """A hash of everything the features depend on but the images."""
    digest = hashlib.sha256(f"{FEATURE_CACHE_VERSION} {keras.backend.backend()} {dtype}\n".encode())
    inputs = frozen.inputs[0]
    digest.update(f"{tuple(inputs.shape[1:])} {inputs.dtype}\n".encode())
    for layer in _flat(frozen.layers):
        config = {k: v for k, v in layer.get_config().items() if k != "name"}
        digest.update(f"{type(layer).__name__} {json.dumps(config, sort_keys=True, default=str)}\n".encode())
    for weight in frozen.weights:
        array = np.ascontiguousarray(keras.ops.convert_to_numpy(weight))
        digest.update(f"{array.dtype.str} {array.shape}\n".encode())
        digest.update(array.reshape(-1).view(np.uint8))
    return digest.hexdigest()


def images_hash(images: np.ndarray) -> str:
    images = np.ascontiguousarray(images)
    digest = hashlib.sha256(f"{images.dtype.str} {tuple(images.shape)}\n".encode())
    digest.update(images.reshape(-1).view(np.uint8))
    return digest.hexdigest()


def feature_path(split: FrozenSplit, images: np.ndarray) -> str:
    name = hashlib.sha256(f"{split.key}\0{images_hash(images)}".encode()).hexdigest()[:32]
    return os.path.join(feature_dir(), f"{name}-{split.dtype}.npy")


def read_features(path: str, count: int, split: FrozenSplit) -> np.ndarray | None:
    """The cached features memory-mapped, or None where there are none of this shape."""
    try:
        features = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if features.shape != (count, *split.feature_shape) or features.dtype != np.dtype(split.dtype):
        return None
    return features


def seconds_per_image(path: str) -> float | None:
    """The frozen part's time per image when the file was computed."""
    try:
        with open(path + ".json", encoding="utf-8") as f:
            value = json.load(f).get("seconds_per_image")
    except (OSError, ValueError):
        return None
    return float(value) if isinstance(value, (int, float)) else None


def batch_for(split: FrozenSplit) -> int:
    """Images per predict batch: 256 at 32x32, fewer for big inputs (ResNet50 at 224: 16)."""
    side = max(int(n) for n in split.frozen.inputs[0].shape[1:3])
    return int(np.clip(2 ** 18 // (side * side), 16, 256))


def compute_features(split: FrozenSplit, images: np.ndarray, path: str, should_stop: Callable[[], bool],
                     progress: Callable[[int], None]) -> np.ndarray | None:
    """Push `images` through the frozen part once, batch by batch, into a
    memory-mapped .npy written beside `path` and then moved there (a reader
    never sees half a file). None when `should_stop` said so between batches."""
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    handle, staging = tempfile.mkstemp(prefix=".write-", suffix=".npy", dir=folder)
    os.close(handle)
    batch = batch_for(split)
    began = time.perf_counter()
    try:
        out = np.lib.format.open_memmap(staging, mode="w+", dtype=split.dtype,
                                        shape=(len(images), *split.feature_shape))
        for start in range(0, len(images), batch):
            if should_stop():
                return None
            chunk = split.frozen.predict_on_batch(images[start:start + batch])
            out[start:start + len(chunk)] = keras.ops.convert_to_numpy(chunk).astype(split.dtype, copy=False)
            progress(start + len(chunk))
        out.flush()
        del out
        seconds = time.perf_counter() - began
        with open(staging + ".json", "w", encoding="utf-8") as f:
            json.dump({"images": len(images), "seconds_per_image": seconds / max(len(images), 1),
                       "shape": list(split.feature_shape), "dtype": split.dtype}, f)
        os.replace(staging + ".json", path + ".json")
        os.replace(staging, path)
    finally:
        for leftover in (staging, staging + ".json"):
            if os.path.exists(leftover):
                os.remove(leftover)
    return np.load(path, mmap_mode="r", allow_pickle=False)


def features_for_splits(split: FrozenSplit, arrays: dict[str, np.ndarray], should_stop: Callable[[], bool],
                        report: Callable[[StageEvent], None]) -> tuple[dict[str, np.ndarray], FeatureUse] | None:
    """Every split's features, from the cache where they are there, else
    computed in one stage with progress ("features"). None when stopped."""
    use = FeatureUse(cut=split.cut, dtype=split.dtype, floats_per_image=split.floats_per_image)
    paths = {name: feature_path(split, images) for name, images in arrays.items()}
    found: dict[str, np.ndarray] = {}
    missing = []
    for name, images in arrays.items():
        cached = read_features(paths[name], len(images), split)
        if cached is None:
            missing.append(name)
        else:
            found[name], use.reused[name] = cached, len(images)
        use.files[name] = paths[name]
    total = sum(len(arrays[name]) for name in missing)
    began = time.monotonic()
    if total:
        text = f"Computing the frozen base's features once: {total} images"
        report(StageEvent(STAGE, text, 0.0))
        done_before = 0
        last = [0.0]

        for name in missing:
            def progress(done: int, before: int = done_before) -> None:
                now = time.monotonic()
                if now - last[0] >= REPORT_INTERVAL or before + done == total:
                    last[0] = now
                    report(StageEvent(STAGE, text, (before + done) / total))

            computed = compute_features(split, arrays[name], paths[name], should_stop, progress)
            if computed is None:
                return None
            found[name], use.computed[name] = computed, len(arrays[name])
            done_before += len(arrays[name])
        use.seconds = time.monotonic() - began
        use.seconds_per_image = use.seconds / total
    else:
        known = [seconds_per_image(paths[name]) for name in arrays]
        use.seconds_per_image = known[0] if known and known[0] is not None else None
    return found, use


class OnWholeModel(keras.callbacks.Callback):
    """Runs a checkpoint callback on the whole model while fit trains its
    head: what best.h5 and last.keras hold is the whole model (base and
    head, taking raw images), with the optimizer state the head trained with."""

    def __init__(self, inner: keras.callbacks.Callback, whole: keras.Model):
        super().__init__()
        self.inner = inner
        self.whole = whole

    def set_params(self, params):
        super().set_params(params)
        self.inner.set_params(params)

    def set_model(self, model):
        super().set_model(model)
        self.inner.set_model(self.whole)

    def on_train_begin(self, logs=None):
        self.inner.on_train_begin(logs)

    def on_epoch_begin(self, epoch, logs=None):
        self.inner.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        self.inner.on_epoch_end(epoch, logs)

    def on_train_end(self, logs=None):
        self.inner.on_train_end(logs)
