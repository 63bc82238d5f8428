"""Open a saved model safely and classify image files with it.

Models made here or in a notebook, as .h5 or .keras. Opening never runs
code embedded in the file: Keras' safe mode stays on (it refuses Python
lambdas in Lambda layers) and custom objects are never registered.
Class names travel inside the file (an h5py attribute on .h5, an entry in
the .keras zip); a foreign model with 10 outputs gets CIFAR-10's names.
Images are decoded by engine.datasets.decode_image, as in training, so a
picture gives the model the same pixels in Classify as in an image folder.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.datasets import cifar10_class_names, decode_image, is_image_name
from engine.errors import DatasetError, ModelError

CLASS_NAMES_ENTRY = "cifar_studio_class_names.json"
FAST_PATH_MAX_IMAGES = 256  # on JAX and PyTorch, at most this many skip model.predict's per-call set-up


def write_class_names(path: str | Path, class_names) -> None:
    """Store class names inside a saved model file, so Classify shows names."""
    path = Path(path)
    names = json.dumps(list(class_names))
    if path.suffix == ".h5":
        import h5py

        with h5py.File(path, "a") as handle:
            handle.attrs["class_names"] = names
    elif path.suffix == ".keras":
        with zipfile.ZipFile(path, "a") as archive:
            if CLASS_NAMES_ENTRY not in archive.namelist():
                archive.writestr(CLASS_NAMES_ENTRY, names)


def read_class_names(path: str | Path) -> list[str] | None:
    path = Path(path)
    try:
        if path.suffix == ".h5":
            import h5py

            with h5py.File(path, "r") as handle:
                raw = handle.attrs.get("class_names")
            if raw is None:
                return None
            return list(json.loads(raw if isinstance(raw, str) else raw.decode()))
        if path.suffix == ".keras":
            with zipfile.ZipFile(path) as archive:
                if CLASS_NAMES_ENTRY in archive.namelist():
                    return list(json.loads(archive.read(CLASS_NAMES_ENTRY)))
    except (OSError, ValueError, zipfile.BadZipFile, KeyError):
        return None
    return None


@dataclass
class Prediction:
    """Top-k classes of one image, or the reason it could not be read."""

    path: str
    labels: list[str] = field(default_factory=list)
    probabilities: list[float] = field(default_factory=list)
    error: str = ""


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

    `scale` says what pixel range the model expects: "auto" feeds 0..255
    when the model rescales inside itself (every model made here does), and
    0..1 otherwise (the usual notebook model trained on x / 255).
    """

    def __init__(self, path: str | Path, scale: str = "auto"):
        self.path = Path(path)
        self.model = load_model_safely(self.path)
        self._fast = None
        shape = self.model.input_shape
        if isinstance(shape, list):
            raise ModelError(f"{self.path.name} has {len(shape)} inputs; an image classifier has one")
        if len(shape) != 4 or shape[-1] not in (1, 3):
            raise ModelError(
                f"{self.path.name} takes inputs of shape {tuple(shape[1:])}, not images "
                "(height, width, 1 or 3 channels)"
            )
        self.height, self.width, self.channels = shape[1] or 32, shape[2] or 32, shape[3]
        outputs = self.model.output_shape
        if isinstance(outputs, list) or len(outputs) != 2:
            raise ModelError(f"{self.path.name} does not output one vector of class scores")
        self.num_classes = int(outputs[-1])
        names = read_class_names(self.path)
        if names and len(names) == self.num_classes:
            self.class_names = names
        elif self.num_classes == 10:
            self.class_names = cifar10_class_names()
        else:
            self.class_names = [f"class {i}" for i in range(self.num_classes)]
        if scale == "auto":
            scale = "255" if _rescales_inside(self.model) else "1"
        if scale not in ("255", "1"):
            raise ModelError(f"scale = {scale!r} is not allowed; choose auto, 255 or 1")
        self.scale = scale

    @property
    def input_size(self) -> tuple[int, int]:
        return self.height, self.width

    def load_image(self, path: str | Path) -> np.ndarray:
        """Read an image file as (H, W, C) uint8 at the model's input size.

        Raises DatasetError naming the file when it is not a readable image.
        """
        rgb = decode_image(path, (self.width, self.height))
        if self.channels == 3:
            return rgb
        from PIL import Image

        return np.asarray(Image.fromarray(rgb).convert("L"))[..., None]

    def predict_arrays(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Class probabilities for uint8 images already at the input size.

        `batch_size` images at a time go through one compiled function
        (FastPredictor): predict() sets up an adapter, iterator and
        callbacks per call (~40 ms for one image against ~1 ms), and only
        one chunk is ever held in float32. Where the backend has no such
        function (JAX, PyTorch), large sets go through predict().
        """
        if self._fast is None:
            self._fast = FastPredictor(self.model)
        if self._fast.compiled or len(images) <= FAST_PATH_MAX_IMAGES:
            chunks = [self._fast(self._model_input(images[start:start + batch_size]))
                      for start in range(0, len(images), batch_size)]
            probs = np.concatenate(chunks).astype(np.float64)
        else:
            probs = np.asarray(self.model.predict(self._model_input(images), batch_size=batch_size, verbose=0),
                               dtype=np.float64)
        sums = probs.sum(axis=1, keepdims=True)
        if np.any(probs < 0) or not np.allclose(sums, 1.0, atol=1e-3):
            # Logits rather than probabilities: softmax them for display.
            probs = np.exp(probs - probs.max(axis=1, keepdims=True))
            probs /= probs.sum(axis=1, keepdims=True)
        return probs

    def _model_input(self, images: np.ndarray) -> np.ndarray:
        x = images.astype(np.float32)
        if self.scale == "1":
            x /= 255.0
        return x

    def classify(self, paths, top_k: int = 3, batch_size: int = 256) -> list[Prediction]:
        """Top-k for each file; unreadable files get an error, not an exception."""
        results = [Prediction(path=str(p)) for p in paths]
        readable, arrays = [], []
        for result in results:
            try:
                arrays.append(self.load_image(result.path))
                readable.append(result)
            except DatasetError as exc:
                result.error = str(exc)
        if arrays:
            probs = self.predict_arrays(np.stack(arrays), batch_size=batch_size)
            k = min(top_k, self.num_classes)
            order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
            for result, row, best in zip(readable, probs, order):
                result.labels = [self.class_names[i] for i in best]
                result.probabilities = [float(row[i]) for i in best]
        return results


def image_files(paths) -> list[Path]:
    """Expand folders into their image files (sorted), keep files as given."""
    found: list[Path] = []
    for item in map(Path, paths):
        if item.is_dir():
            found.extend(sorted(p for p in item.rglob("*") if is_image_name(p.name)))
        else:
            found.append(item)
    return found


def load_model_safely(path: str | Path):
    """keras.models.load_model in safe mode, with the app's own messages."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: no such file")
    if path.suffix not in (".h5", ".keras", ".hdf5"):
        raise ModelError(f"{path.name} is not a Keras model file (.h5 or .keras)")
    _check_container(path)
    import keras

    from engine.system import prepare_tensorflow

    prepare_tensorflow()

    try:
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
        return
    if magic != b"\x89HDF\r\n\x1a\n":
        raise ModelError(f"{path.name} is not a Keras model file (not an HDF5 file)")
    import h5py

    with h5py.File(path, "r") as handle:
        if "model_config" not in handle.attrs:
            raise ModelError(
                f"{path.name} holds weights only, not a whole model; open the full model file instead"
            )


def _rescales_inside(model) -> bool:
    """True when a Rescaling or Normalization layer comes before any weights."""
    import keras

    for layer in _flat_layers(model):
        if isinstance(layer, (keras.layers.Rescaling, keras.layers.Normalization)):
            return True
        if layer.weights:
            return False
    return False


def _flat_layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:
            yield from _flat_layers(layer)
        else:
            yield layer
