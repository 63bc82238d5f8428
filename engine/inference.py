"""Open a saved model safely, describe it, and classify image files with it.

Models made here or in a notebook, as .h5 or .keras. Opening never runs
code embedded in the file: Keras' safe mode stays on (it refuses Python
lambdas in Lambda layers) and custom objects are never registered.
Class names travel inside the file (an h5py attribute on .h5, an entry in
the .keras zip); a foreign model with 10 outputs gets CIFAR-10's names.
Images are decoded by engine.datasets.decode_image, as in training, so a
picture gives the model the same pixels in Classify as in an image folder.

Files are classified a chunk at a time (decode a few dozen, predict them,
hand the results over, go on), so the first results come at once, a long
folder can be cancelled between chunks, and memory holds one chunk.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from engine.datasets import cifar10_class_names, decode_image, is_image_name
from engine.errors import DatasetError, EngineError, ModelError
from engine.text import printable

CLASS_NAMES_ENTRY = "cifar_studio_class_names.json"
TTA_ATTRIBUTE = "test_time_augmentation"  # .h5: an attribute of the file, like class_names
TTA_ENTRY = "cifar_studio_test_time_augmentation.txt"  # .keras: an entry of the zip
FAST_PATH_MAX_IMAGES = 256  # on JAX and PyTorch, at most this many skip model.predict's per-call set-up
CHUNK_SIZE = 64  # files decoded and predicted together: large enough for speed, small enough to report often
TOP_K = 5
ANY_SIZE = 32  # the side images get when the model accepts any height and width
MODEL_SUFFIXES = (".h5", ".keras", ".hdf5")
SAME_CLASS_MIN_IMAGES = 4  # below this, pictures all of one class say nothing about the scaling

# How pixels are scaled before they reach the model, when the model does not do it itself.
PREPROCESSING_LABELS = {
    "inside": "inside the model",
    "unit": "0..1",
    "symmetric": "-1..1",
    "caffe": "ImageNet (caffe-style: BGR, mean subtracted)",
    "raw": "none (0..255)",
}
PREPROCESSING_CHOICES = ("unit", "symmetric", "caffe", "raw")
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)  # keras.applications' preprocess_input(mode="caffe")
# keras.applications' models that leave preprocessing to the caller (their names as Keras gives them),
# and what each was trained on: a model built on one, without scaling inside, most likely expects that.
_BASE_PREPROCESSING = ((re.compile(r"(resnet(50|101|152)|vgg(16|19))"), "caffe"),
                       (re.compile(r"(resnet\d+v2|mobilenet(v2)?_[\d.]+_\d+|xception|inception_v3|"
                                   r"inception_resnet_v2|nasnet(large|mobile)?)"), "symmetric"))
_NAMES_FROM_FILE = "from the file"
_SCALES = {"auto": None, "255": "raw", "1": "unit"}


def write_class_names(path: str | Path, class_names, tta: str = "none") -> None:
    """Store class names inside a saved model file, so Classify shows names;
    and with `tta` "flip", that the run predicts with test-time flip averaging."""
    path = Path(path)
    names = json.dumps(list(class_names))
    if path.suffix == ".h5":
        import h5py

        with h5py.File(path, "a") as handle:
            handle.attrs["class_names"] = names
            if tta != "none":
                handle.attrs[TTA_ATTRIBUTE] = tta
    elif path.suffix == ".keras":
        with zipfile.ZipFile(path, "a") as archive:
            present = archive.namelist()
            if CLASS_NAMES_ENTRY not in present:
                archive.writestr(CLASS_NAMES_ENTRY, names)
            if tta != "none" and TTA_ENTRY not in present:
                archive.writestr(TTA_ENTRY, tta)


def read_tta(path: str | Path) -> str:
    """The test-time augmentation a saved model's run used: "flip", or "none"
    (also for any file made elsewhere, or one that cannot be read)."""
    path = Path(path)
    try:
        if path.suffix in (".h5", ".hdf5"):
            import h5py

            with h5py.File(path, "r") as handle:
                raw = handle.attrs.get(TTA_ATTRIBUTE)
            value = raw.decode() if isinstance(raw, bytes) else raw
        elif path.suffix == ".keras":
            with zipfile.ZipFile(path) as archive:
                value = archive.read(TTA_ENTRY).decode() if TTA_ENTRY in archive.namelist() else None
        else:
            value = None
    except (OSError, ValueError, TypeError, zipfile.BadZipFile, KeyError, UnicodeDecodeError):
        value = None
    return "flip" if value == "flip" else "none"


def read_class_names(path: str | Path) -> list[str] | None:
    path = Path(path)
    try:
        if path.suffix in (".h5", ".hdf5"):
            import h5py

            with h5py.File(path, "r") as handle:
                raw = handle.attrs.get("class_names")
            if raw is None:
                return None
            return [str(name) for name in json.loads(raw if isinstance(raw, str) else raw.decode())]
        if path.suffix == ".keras":
            with zipfile.ZipFile(path) as archive:
                if CLASS_NAMES_ENTRY in archive.namelist():
                    return [str(name) for name in json.loads(archive.read(CLASS_NAMES_ENTRY))]
    except (OSError, ValueError, TypeError, zipfile.BadZipFile, KeyError):
        return None
    return None


@dataclass
class Prediction:
    """Top-k classes of one image, or the reason it could not be classified."""

    path: str
    labels: list[str] = field(default_factory=list)
    probabilities: list[float] = field(default_factory=list)
    error: str = ""
    nan_output: bool = False  # the model answered NaN: the file was fine, the model is broken

    @property
    def top(self) -> str:
        """The most likely class, or "" when there is none (an error)."""
        return self.labels[0] if self.labels else ""


@dataclass(frozen=True)
class ModelInfo:
    """What the Classify tab and `predict` say about an opened model.

    `input_shape` is (height, width, channels) as the model declares it
    (None: any size); images are resized to `image_size` (height, width).
    `preprocessing` is the scaling used unless the user picks another;
    `reason` says in one line which it is and why.
    """

    path: str
    name: str
    input_shape: tuple
    image_size: tuple[int, int]
    outputs: int
    class_names: list[str]
    names_source: str
    parameters: int
    inside: str  # the preprocessing layers found inside the model, "" when none
    preprocessing: str
    reason: str
    sigmoid: bool = False

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def lines(self) -> list[str]:
        """The description as short lines, for a label or a terminal."""
        height, width, channels = self.input_shape
        shape = f"{height or 'any'} x {width or 'any'} x {channels}"
        if (height, width) != self.image_size:
            shape += f" (pictures are fed at {self.image_size[0]} x {self.image_size[1]})"
        names = ", ".join(self.class_names[:10]) + (", …" if self.num_classes > 10 else "")
        classes = f"{self.num_classes} classes"
        if self.sigmoid:
            classes += " (one sigmoid output p, shown as two classes: 1 - p and p)"
        return [f"{self.name} ({Path(self.path).name})", f"input {shape}; {classes}",
                f"class names ({self.names_source}): {names}", f"{self.parameters:,} parameters",
                f"preprocessing: {self.reason}"]


class FastPredictor:
    """Class scores for a handful of images without `model.predict`'s set-up.

    `predict` builds a data adapter, an epoch iterator and a callback list on
    every call, which for one 32x32 image costs several times the model
    itself. This calls the model in inference mode through one compiled
    function (TensorFlow: a tf.function over any batch size, `compiled`;
    JAX and PyTorch: the model called directly). On TensorFlow, chunks of a
    few hundred images through it beat `predict` at the same batch size
    (benchmarks/bench_inference.py).
    """

    def __init__(self, model):
        import keras

        self.model = model
        self.compiled = keras.backend.backend() == "tensorflow"
        if self.compiled:
            import tensorflow as tf

            shape = (None,) + tuple(model.input_shape[1:])
            self.function = tf.function(lambda images: model(images, training=False),
                                        input_signature=[tf.TensorSpec(shape, "float32")])
        else:
            self.function = lambda images: model(images, training=False)

    def __call__(self, images):
        import keras

        scores = self.function(keras.ops.convert_to_tensor(np.asarray(images, dtype="float32")))
        return keras.ops.convert_to_numpy(scores)


class Classifier:
    """A loaded model ready to classify images of any size.

    `preprocessing` is one of PREPROCESSING_CHOICES, or None for the model's
    own (ModelInfo.preprocessing: "inside" when the model scales its input
    itself, as every model made here does). The older `scale` ("auto",
    "255": feed 0..255, "1": feed 0..1) is the command line's `--scale`.
    A Classifier is not changed once made (`with_preprocessing` gives a
    copy), so a task may use it while the window opens another.
    """

    def __init__(self, path: str | Path, scale: str = "auto", preprocessing: str | None = None,
                 tta: str | None = None):
        self.path = Path(path)
        # "flip": each image's answer is the mean of its own and its mirror image's, as the run that saved
        # the file evaluated it (read_tta); None = what the file says.
        self.tta = read_tta(self.path) if tta is None else tta
        if scale not in _SCALES:
            raise ModelError(f"scale = {scale!r} is not allowed; choose auto, 255 or 1")
        self.model = load_model_safely(self.path)
        self._fast = None
        self.info = describe_model(self.model, self.path)
        self.height, self.width = self.info.image_size
        self.channels = self.info.input_shape[2]
        self.class_names = self.info.class_names
        self.num_classes = self.info.num_classes
        self.sigmoid = self.info.sigmoid
        chosen = preprocessing or _SCALES[scale]
        if self.info.inside and chosen == "raw":
            chosen = "inside"  # 0..255 is what a model that scales inside itself takes
        self.preprocessing = self._checked(chosen or self.info.preprocessing)

    @property
    def scale(self) -> str:
        """The pixel range fed as the command line names it: "255", "1", or a preprocessing key."""
        return {"inside": "255", "raw": "255", "unit": "1"}.get(self.preprocessing, self.preprocessing)

    @property
    def input_size(self) -> tuple[int, int]:
        return self.height, self.width

    @property
    def preprocessing_reason(self) -> str:
        """One line: which scaling is used, and why."""
        if self.preprocessing == self.info.preprocessing:
            return self.info.reason
        default = PREPROCESSING_LABELS[self.info.preprocessing]
        also = " on top of the model's own scaling" if self.info.inside else ""
        return f"{PREPROCESSING_LABELS[self.preprocessing]}, as chosen{also} (the default is {default})"

    def with_preprocessing(self, preprocessing: str) -> "Classifier":
        """The same loaded model (shared, not copied) with another scaling of its input pixels."""
        copy = object.__new__(Classifier)
        copy.__dict__.update(self.__dict__)
        copy.preprocessing = self._checked(preprocessing)
        return copy

    def _checked(self, preprocessing: str) -> str:
        if preprocessing in PREPROCESSING_CHOICES or (preprocessing == "inside" and self.info.inside):
            return preprocessing
        raise ModelError(f"{self.path.name}: preprocessing {preprocessing!r} is not one of "
                         f"{', '.join(PREPROCESSING_CHOICES)}")

    def load_image(self, path: str | Path) -> np.ndarray:
        """Read an image file as (H, W, C) uint8 at the model's input size.

        Raises DatasetError naming the file when it is not a readable image.
        """
        return self.to_channels(decode_image(path, (self.width, self.height)))

    def to_channels(self, rgb: np.ndarray) -> np.ndarray:
        """RGB uint8 images (one or a stack) as the model's channels: gray levels for a one-channel model."""
        if self.channels == 3:
            return rgb
        # ITU-R 601 luma in Pillow's own integer arithmetic, so the gray levels equal convert("L")'s.
        r, g, b = (rgb[..., i].astype(np.uint32) for i in range(3))
        return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)[..., None]

    def model_input(self, images: np.ndarray) -> np.ndarray:
        """uint8 images at the input size as the float32 values the model expects."""
        x = images.astype(np.float32)
        if self.preprocessing == "unit":
            x /= 255.0
        elif self.preprocessing == "symmetric":
            x = x / 127.5 - 1.0
        elif self.preprocessing == "caffe":
            if self.channels == 3:
                x = x[..., ::-1] - np.array(CAFFE_BGR_MEAN, dtype=np.float32)
            else:
                x -= np.float32(np.mean(CAFFE_BGR_MEAN))
        return np.ascontiguousarray(x)

    def predict_arrays(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Class probabilities for uint8 images already at the input size.

        `batch_size` images at a time go through one compiled function
        (FastPredictor): predict() sets up an adapter, iterator and
        callbacks per call (~40 ms for one image against ~1 ms), and only
        one chunk is ever held in float32. Where the backend has no such
        function (JAX, PyTorch), large sets go through predict(). Scores
        that are not probabilities (logits) are softmaxed; a one-unit
        output becomes two columns (1 - p, p); a row the model answered
        with NaN or infinity stays NaN, for the caller to report. With
        `tta` "flip", the mean of the probabilities for the images and for
        their mirror images.
        """
        probs = self._probabilities(images, batch_size)
        if self.tta == "flip":
            from engine.evaluation import flipped  # the evaluation's own mirror images

            probs = (probs + self._probabilities(flipped(images), batch_size)) / 2
        return probs

    def _probabilities(self, images: np.ndarray, batch_size: int) -> np.ndarray:
        if self._fast is None:
            self._fast = FastPredictor(self.model)
        if self._fast.compiled or len(images) <= FAST_PATH_MAX_IMAGES:
            chunks = [self._fast(self.model_input(images[start:start + batch_size]))
                      for start in range(0, len(images), batch_size)]
            scores = np.concatenate(chunks).astype(np.float64)
        else:
            scores = np.asarray(self.model.predict(self.model_input(images), batch_size=batch_size, verbose=0),
                                dtype=np.float64)
        scores = scores.reshape(len(images), -1)
        broken = ~np.isfinite(scores).all(axis=1)
        scores[broken] = 0.0
        if self.sigmoid:
            if np.any(scores < 0) or np.any(scores > 1):
                scores = 1.0 / (1.0 + np.exp(-scores))
            probs = np.concatenate([1.0 - scores, scores], axis=1)
        else:
            probs = scores
            sums = probs.sum(axis=1, keepdims=True)
            if np.any(probs < 0) or not np.allclose(sums[~broken], 1.0, atol=1e-3):
                probs = np.exp(probs - probs.max(axis=1, keepdims=True))
                probs /= probs.sum(axis=1, keepdims=True)
        probs[broken] = np.nan
        return probs

    def predictions(self, paths: Sequence[str], probs: np.ndarray, top_k: int = TOP_K) -> list[Prediction]:
        """Probabilities (one row per path) as top-k Predictions; NaN rows get an error instead."""
        k = min(top_k, probs.shape[1])
        order = np.argsort(-np.nan_to_num(probs, nan=0.0), axis=1, kind="stable")[:, :k]
        results = []
        for path, row, best in zip(paths, probs, order):
            if np.isnan(row).any():
                results.append(Prediction(str(path), error=f"{self.path.name} gave NaN (not a number) for this "
                                                           "image, so it has no class", nan_output=True))
            else:
                results.append(Prediction(str(path), [self.class_names[i] for i in best],
                                          [float(row[i]) for i in best]))
        return results

    def classify(self, paths, top_k: int = 3, batch_size: int = CHUNK_SIZE) -> list[Prediction]:
        """Top-k for each file; unreadable files get an error, not an exception."""
        results: list[Prediction] = []
        for chunk in classify_in_chunks([self], [str(p) for p in paths], top_k=top_k, chunk_size=batch_size):
            results.extend(chunk.predictions[0])
        return results


@dataclass
class Chunk:
    """The results of one chunk of files, for each classifier given.

    `start` is the position of its first file among all the files asked for;
    `predictions[m][i]` is classifier m's answer for `paths[i]`;
    `thumbnails[i]` is that picture as the model saw it (uint8 RGB, at most
    `thumbnail_size` on a side), None where it could not be read or when no
    thumbnails were asked for.
    """

    start: int
    paths: list[str]
    predictions: list[list[Prediction]]
    thumbnails: list[np.ndarray | None]


def classify_in_chunks(classifiers: Sequence[Classifier], paths: Sequence[str], top_k: int = TOP_K,
                       chunk_size: int = CHUNK_SIZE, thumbnail_size: int = 0,
                       should_stop: Callable[[], bool] | None = None) -> Iterator[Chunk]:
    """Decode a chunk of files, predict it with every classifier, yield it; then the next.

    Never decodes all files first: the first results come after one chunk,
    and memory holds one chunk. Each file is decoded once per input size
    among the classifiers (two models of one size share it). A file that
    cannot be read (not an image, truncated, a decompression bomb) gets its
    error on every classifier's Prediction and the rest go on.
    `should_stop` is asked before each chunk (the window's Cancel).
    """
    paths = [str(p) for p in paths]
    for start in range(0, len(paths), max(1, chunk_size)):
        if should_stop is not None and should_stop():
            return
        names = paths[start:start + chunk_size]
        decoded: dict[tuple[int, int], tuple[np.ndarray, list[int], dict[int, str]]] = {}
        for classifier in classifiers:
            if classifier.input_size not in decoded:
                decoded[classifier.input_size] = _decode_chunk(names, classifier.input_size)
        per_model = []
        for classifier in classifiers:
            images, readable, errors = decoded[classifier.input_size]
            results = [Prediction(name, error=errors.get(i, "")) for i, name in enumerate(names)]
            if readable:
                probs = classifier.predict_arrays(classifier.to_channels(images), batch_size=chunk_size)
                for i, prediction in zip(readable, classifier.predictions([names[i] for i in readable], probs,
                                                                          top_k)):
                    results[i] = prediction
            per_model.append(results)
        thumbnails: list[np.ndarray | None] = [None] * len(names)
        if thumbnail_size and classifiers:
            images, readable, _ = decoded[classifiers[0].input_size]
            for position, i in enumerate(readable):
                thumbnails[i] = thumbnail(images[position], thumbnail_size)
        yield Chunk(start, names, per_model, thumbnails)


def _decode_chunk(paths: list[str], size: tuple[int, int]) -> tuple[np.ndarray, list[int], dict[int, str]]:
    """The readable files of `paths` as RGB at `size` (height, width), their positions, and the errors."""
    height, width = size
    images, readable, errors = [], [], {}
    for i, path in enumerate(paths):
        try:
            images.append(decode_image(path, (width, height)))
            readable.append(i)
        except DatasetError as exc:
            errors[i] = str(exc)
        except (MemoryError, ValueError) as exc:  # a picture too big for memory or a malformed resize
            errors[i] = f"{os.path.basename(path)} could not be decoded: {exc}"
    stack = np.stack(images) if images else np.zeros((0, height, width, 3), np.uint8)
    return stack, readable, errors


def thumbnail(image: np.ndarray, size: int) -> np.ndarray:
    """A uint8 RGB image shrunk to fit `size` (never enlarged): small enough to keep thousands."""
    height, width = image.shape[:2]
    if max(height, width) <= size:
        return np.ascontiguousarray(image)
    from PIL import Image

    ratio = size / max(height, width)
    small = Image.fromarray(image).resize((max(1, round(width * ratio)), max(1, round(height * ratio))),
                                          Image.Resampling.BILINEAR)
    return np.asarray(small)


class BatchTally:
    """Counts over a batch of Predictions, added as they come, so a long job keeps counts, not results.

    `unreadable` counts files that could not be read (`first_error` is the
    first one's message); `nan_outputs` the images the model answered with
    NaN; `tops` the top classes seen.
    """

    def __init__(self, predictions: Sequence[Prediction] = ()):
        self.images = self.classified = self.unreadable = self.nan_outputs = 0
        self.first_error = ""
        self.tops: set[str] = set()
        self.add(predictions)

    def add(self, predictions: Sequence[Prediction]) -> None:
        for prediction in predictions:
            self.images += 1
            if prediction.labels:
                self.classified += 1
                self.tops.add(prediction.labels[0])
            elif prediction.nan_output:
                self.nan_outputs += 1
            elif prediction.error:
                self.unreadable += 1
                self.first_error = self.first_error or prediction.error

    def warnings(self, classifier: Classifier) -> list[str]:
        """What the user should hear about the batch beyond each file's own error.

        A model that answers NaN is broken, and saying so beats showing "nan%".
        When every picture of several comes out as one class, the likeliest
        cause is pixels scaled as the model was not trained on.
        """
        name = classifier.path.name
        warnings = []
        if self.nan_outputs:
            warnings.append(f"{name} gave NaN (not a number) for {self.nan_outputs} of {self.images} images: "
                            "its weights are broken (a training that diverged?), so those have no class")
        if len(self.tops) == 1 and self.classified >= SAME_CLASS_MIN_IMAGES and classifier.num_classes > 1:
            top = next(iter(self.tops))
            if classifier.preprocessing == "inside":
                hint = "the model scales its input itself, so the pictures may be unlike its training images"
            else:
                hint = (f"the pixel scaling may be wrong for this model (it is fed "
                        f"{PREPROCESSING_LABELS[classifier.preprocessing]}: try another)")
            warnings.append(f"every picture came out as '{top}' with {name}: {hint}")
        return warnings


def batch_warnings(predictions: Sequence[Prediction], classifier: Classifier) -> list[str]:
    """BatchTally(predictions).warnings(classifier): NaN outputs, and every picture of one class."""
    return BatchTally(predictions).warnings(classifier)


def describe_model(model, path: str | Path) -> ModelInfo:
    """A loaded model's ModelInfo; raises ModelError (naming the file) for a model that is not an
    image classifier: several inputs, inputs that are not images, or not one vector of scores out."""
    path = Path(path)
    shape = model.input_shape
    if isinstance(shape, list) or (isinstance(shape, tuple) and shape and isinstance(shape[0], tuple)):
        raise ModelError(f"{path.name} has {len(shape)} inputs; an image classifier has one")
    if len(shape) != 4 or shape[-1] not in (1, 3):
        raise ModelError(f"{path.name} takes inputs of shape {tuple(shape[1:])}, not images "
                         "(height, width, 1 or 3 channels)")
    outputs = model.output_shape
    if isinstance(outputs, list) or (outputs and isinstance(outputs[0], tuple)):
        raise ModelError(f"{path.name} has {len(outputs)} outputs; an image classifier has one vector of "
                         "class scores")
    if len(outputs) != 2 or not outputs[-1]:
        raise ModelError(f"{path.name} outputs shape {tuple(outputs[1:])}, not one vector of class scores")
    units = int(outputs[-1])
    sigmoid = units == 1
    count = 2 if sigmoid else units
    names, source = _class_names(read_class_names(path), count, units)
    height, width = shape[1], shape[2]
    image_size = (height or ANY_SIZE, width or ANY_SIZE)
    inside, preprocessing, reason = _preprocessing(model)
    return ModelInfo(path=str(path), name=model.name, input_shape=(height, width, int(shape[3])),
                     image_size=image_size, outputs=units, class_names=names, names_source=source,
                     parameters=int(model.count_params()), inside=inside, preprocessing=preprocessing,
                     reason=reason, sigmoid=sigmoid)


def _class_names(stored: list[str] | None, count: int, units: int) -> tuple[list[str], str]:
    if stored and len(stored) == count:
        return stored, _NAMES_FROM_FILE
    mismatch = f"the file's {len(stored)} names do not fit its {units} outputs" if stored else "the file has none"
    if count == 10:
        return cifar10_class_names(), f"CIFAR-10's names ({mismatch}; it has 10 outputs)"
    return [f"class {i}" for i in range(count)], f"class 0… ({mismatch})"


def _preprocessing(model) -> tuple[str, str, str]:
    """(the layers that scale the input inside the model, the preprocessing to use, why).

    Inside means a Rescaling or Normalization layer before the first layer
    with weights (augmentation and resizing may come first), looking into
    nested models. Else the default is what the model's pretrained base was
    trained on when its name says which, else 0..1, the usual x / 255 of a
    notebook.
    """
    import keras

    found = []
    for layer in _flat_layers(model):
        if isinstance(layer, keras.layers.Rescaling):
            found.append(_describe_rescaling(layer))
        elif isinstance(layer, keras.layers.Normalization):
            found.append(_describe_normalization(layer))
        elif layer.weights and ".preprocessing." not in type(layer).__module__:
            break
    if found:
        inside = "; ".join(found)
        return inside, "inside", f"inside the model ({inside}): pictures are fed as 0..255"
    for nested in _nested_models(model):
        for pattern, key in _BASE_PREPROCESSING:
            if pattern.fullmatch(nested.name.lower()):
                return "", key, (f"{PREPROCESSING_LABELS[key]}: none inside the model, and its {nested.name} "
                                 "base was trained so")
    return "", "unit", ("0..1: no Rescaling or Normalization layer inside the model, and notebooks "
                        "usually train on x / 255")


def _describe_rescaling(layer) -> str:
    scale, offset = float(np.ravel(layer.scale)[0]), float(np.ravel(layer.offset)[0])
    text = f"x / {1 / scale:g}" if scale and abs(1 / scale - round(1 / scale, 3)) < 1e-6 else f"x * {scale:g}"
    return "Rescaling " + text + (f" {'+' if offset > 0 else '-'} {abs(offset):g}" if offset else "")


def _describe_normalization(layer) -> str:
    try:
        mean = np.ravel(np.asarray(layer.mean, dtype=np.float64))
        variance = np.ravel(np.asarray(layer.variance, dtype=np.float64))
    except (AttributeError, TypeError, ValueError):
        return "Normalization"
    return (f"Normalization: mean {', '.join(f'{v:.4g}' for v in mean[:3])}, "
            f"std {', '.join(f'{math.sqrt(max(v, 0)):.4g}' for v in variance[:3])}")


def check_output_file(target: Path, what: str, inputs: Sequence[str | Path] = ()) -> Path:
    """Refuse a file a result cannot be written to, before the work that makes it.

    A folder, something that is not a regular file, one of the `inputs` (a
    slip in a save dialog would destroy it), no permission, or a missing or
    read-only folder: each a message naming `what` is written there.
    """
    if target.is_dir():
        raise EngineError(f"{printable(target)} is a folder; give a file name for the {what}")
    if target.exists():
        if not target.is_file():
            raise EngineError(f"{printable(target)} exists and is not a regular file")
        resolved = target.resolve()
        if any(Path(p).resolve() == resolved for p in inputs):
            raise EngineError(f"{printable(target.name)} is one of the files being read; give another name")
        if not os.access(target, os.W_OK):
            raise EngineError(f"{printable(target)} cannot be written (no permission)")
    parent = target.parent
    if not parent.is_dir():
        raise EngineError(f"the folder {printable(parent)} does not exist")
    if not os.access(parent, os.W_OK):
        raise EngineError(f"cannot write into {printable(parent)} (no permission)")
    return target


def check_csv_path(path: str | Path, inputs: Sequence[str | Path] = ()) -> Path:
    """Refuse a CSV path that cannot be written, before any image is classified;
    also an image or model file name, which a CSV would overwrite."""
    text = str(path).strip()
    if not text:
        raise EngineError("no CSV file given")
    target = Path(text).expanduser()
    if not target.is_dir() and (is_image_name(target.name) or target.suffix.lower() in MODEL_SUFFIXES):
        raise EngineError(f"{printable(target.name)} looks like an image or model file; the CSV needs a .csv name")
    return check_output_file(target, "CSV", inputs)


class PredictionCsv:
    """A CSV of predictions, written as they come: one row per file, flushed per chunk.

    Columns: file, top_class, probability, class_1, probability_1, …,
    class_k, probability_k, error. With several models, each model's columns
    are led by its label ("A_top_class", …, "B_error").
    """

    def __init__(self, path: str | Path, top_k: int = TOP_K, models: Sequence[str] = ("",)):
        self.path = Path(path)
        self.top_k = top_k
        self.models = list(models)
        self.rows = 0
        self._handle = open(self.path, "w", newline="", encoding="utf-8")
        self._writer = csv.writer(self._handle)
        columns = ["top_class", "probability"] + [c for i in range(1, top_k + 1)
                                                  for c in (f"class_{i}", f"probability_{i}")] + ["error"]
        header = ["file"] + [f"{m}_{c}" if m else c for m in self.models for c in columns]
        self._writer.writerow(header)

    def write(self, paths: Sequence[str], predictions: Sequence[Sequence[Prediction]]) -> None:
        """One row per path; predictions[m][i] is model m's for paths[i]."""
        for i, path in enumerate(paths):
            row = [path]
            for per_model in predictions:
                prediction = per_model[i]
                pairs = [v for pair in zip(prediction.labels, prediction.probabilities)
                         for v in (pair[0], f"{pair[1]:.6f}")]
                pairs += [""] * (2 * self.top_k - len(pairs))
                row += pairs[:2] + pairs + [prediction.error]
            self._writer.writerow(row)
        self.rows += len(paths)
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> "PredictionCsv":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def image_files(paths) -> list[Path]:
    """Expand folders into their image files (sorted as paths sort), keep files as given.

    os.walk rather than Path.rglob: four times faster on a folder of 10,000
    pictures (it reads each directory once and makes no Path per entry),
    and symlinked folders are not followed, so a link loop cannot hang it.
    """
    found: list[Path] = []
    for item in map(Path, paths):
        if not item.is_dir():
            found.append(item)
            continue
        names = [os.path.join(folder, name) for folder, _, files in os.walk(item) for name in files
                 if is_image_name(name)]
        found.extend(Path(name) for name in sorted(names, key=lambda name: name.split(os.sep)))
    return found


def is_model_file(path: str | Path) -> bool:
    """True for a name a Keras model file has (.h5, .hdf5, .keras): what a drop opens as a model."""
    return Path(path).suffix.lower() in MODEL_SUFFIXES


def load_model_safely(path: str | Path):
    """keras.models.load_model in safe mode, with the app's own messages."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: no such file")
    if path.is_dir():
        raise ModelError(f"{path.name} is a folder, not a Keras model file (.h5 or .keras)")
    if path.suffix not in MODEL_SUFFIXES:
        raise ModelError(f"{path.name} is not a Keras model file (.h5 or .keras)")
    _check_container(path)
    import keras

    from engine.system import prepare_tensorflow

    prepare_tensorflow()

    from engine.models import making_layers

    try:
        with making_layers():  # it makes layers: not while a run builds its model in another thread
            return keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many kinds here; all mean "cannot open"
        text = str(exc)
        if "lambda" in text.lower() or "safe_mode" in text:
            raise ModelError(
                f"{path.name} contains a Lambda layer with Python code; opening it would run that code, "
                "so it is refused. Rebuild the model without Lambda layers."
            ) from None
        if "Could not locate" in text or "Unknown layer" in text or "custom" in text.lower():
            raise ModelError(
                f"{path.name} uses a custom layer or object that is not part of Keras; "
                "it cannot be opened without that code, which this app never runs."
            ) from None
        first_line = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        raise ModelError(f"{path.name} could not be opened as a Keras model: {first_line[:200]}") from None


def _check_container(path: Path) -> None:
    """Refuse files that are not HDF5 / zip before Keras sees them."""
    with path.open("rb") as handle:
        magic = handle.read(8)
    if path.suffix == ".keras":
        if not zipfile.is_zipfile(path):
            raise ModelError(f"{path.name} is not a Keras model file (not a .keras zip archive)")
        with zipfile.ZipFile(path) as archive:
            if "config.json" not in archive.namelist():
                raise ModelError(f"{path.name} is a zip archive but not a saved Keras model (no config.json)")
        return
    if magic != b"\x89HDF\r\n\x1a\n":
        raise ModelError(f"{path.name} is not a Keras model file (not an HDF5 file)")
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            whole = "model_config" in handle.attrs
    except OSError as exc:
        raise ModelError(f"{path.name} is a damaged HDF5 file: {exc}") from None
    if not whole:
        raise ModelError(f"{path.name} holds weights only, not a whole model; open the full model file instead")


def _flat_layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:
            yield from _flat_layers(layer)
        else:
            yield layer


def _nested_models(model):
    yield model
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:
            yield from _nested_models(layer)
