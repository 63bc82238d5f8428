"""The official CIFAR-10 python archive: the tar.gz, or its cifar-10-batches-py folder.

The batches are pickles; they are read with an unpickler that refuses
anything a CIFAR batch never holds, so a tampered file cannot run code.
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile
import zlib

import numpy as np

from engine.config import DatasetConfig
from engine.datasets.dataset import Progress, Source
from engine.errors import DatasetError

CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_FILES = CIFAR10_TRAIN_BATCHES + ("test_batch", "batches.meta")

# The folder Keras 3 unpacks its download into, searched as well when a parent folder is chosen.
KERAS_CIFAR10_FOLDER = "cifar-10-batches-py-target"

# Pickles name numpy's internals by the module of the numpy that wrote them.
_NUMPY_CORE = "numpy._core" if int(np.__version__.split(".")[0]) >= 2 else "numpy.core"


def cifar10_class_names() -> list[str]:
    """CIFAR-10's classes in label order; also the names a foreign 10-class model gets."""
    return ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles only what CIFAR batches hold: dicts, lists, bytes, numpy arrays.

    Any other global (a class or function a tampered file names to run code)
    is refused.
    """

    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which a CIFAR batch never holds")
        if module.startswith(("numpy.core.", "numpy._core.")):
            module = _NUMPY_CORE + "." + module.split(".", 2)[2]
        return super().find_class(module, name)


def _unpickle(data: bytes, name: str) -> dict:
    try:
        content = _CifarUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as exc:  # a damaged pickle can raise nearly anything
        raise DatasetError(f"{name} could not be read as a CIFAR-10 file ({exc})") from None
    if not isinstance(content, dict):
        raise DatasetError(f"{name} is not a CIFAR-10 file: it holds a {type(content).__name__}, not a dict")
    return {key.decode("latin1") if isinstance(key, bytes) else key: value for key, value in content.items()}


def _batch_arrays(data: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A data/test batch as (N, 32, 32, 3) uint8 images and int64 labels."""
    batch = _unpickle(data, name)
    images, labels = batch.get("data"), batch.get("labels")
    if not isinstance(images, np.ndarray) or labels is None:
        raise DatasetError(f"{name} is not a CIFAR-10 batch: it needs 'data' (an array) and 'labels'")
    if images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != 3 * 32 * 32:
        raise DatasetError(
            f"{name} is not a CIFAR-10 batch: 'data' is {images.dtype} {images.shape}, "
            "expected uint8 (N, 3072)"
        )
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        raise DatasetError(f"{name} is not a CIFAR-10 batch: 'labels' are not whole numbers") from None
    if labels.shape != (len(images),):
        raise DatasetError(f"{name} is not a CIFAR-10 batch: {len(images)} images but {labels.size} labels")
    return images.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _meta_class_names(data: bytes | None, name: str) -> list[str]:
    if data is None:
        return cifar10_class_names()
    names = _unpickle(data, name).get("label_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, (bytes, str)) for n in names):
        raise DatasetError(f"{name} is not CIFAR-10's batches.meta: it has no list of 'label_names'")
    return [n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names]


def _cifar10_from_files(files: dict[str, bytes], where: str, description: str) -> Source:
    """Build the dataset from the raw bytes of the batch files."""
    missing = [name for name in CIFAR10_FILES[:-1] if name not in files]
    if missing:
        raise DatasetError(
            f"{where} is not a complete CIFAR-10 python archive: {', '.join(missing)} missing "
            "(it needs data_batch_1 to data_batch_5, test_batch and batches.meta)"
        )
    class_names = _meta_class_names(files.get("batches.meta"), "batches.meta")
    train = [_batch_arrays(files[name], name) for name in CIFAR10_TRAIN_BATCHES]
    x_test, y_test = _batch_arrays(files["test_batch"], "test_batch")
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    for name, labels in (("training batches", y_train), ("test_batch", y_test)):
        if labels.size and (labels.min() < 0 or labels.max() >= len(class_names)):
            raise DatasetError(
                f"{where}: the {name} have labels outside 0..{len(class_names) - 1} "
                f"({len(class_names)} class names in batches.meta)"
            )
    return Source(x_train, y_train, np.ascontiguousarray(x_test), y_test, class_names, description)


def read_batches_folder(folder: str, description: str, progress: Progress) -> Source:
    """CIFAR-10 from a folder holding the batch files themselves."""
    files = {}
    for step, name in enumerate(CIFAR10_FILES):
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            continue
        progress.check_stop()
        progress.send("load", f"Reading CIFAR-10: {name}", step / len(CIFAR10_FILES))
        try:
            with open(path, "rb") as f:
                files[name] = f.read()
        except OSError as exc:
            raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from None
    return _cifar10_from_files(files, folder, description)


def _read_tar(path: str, description: str, progress: Progress) -> Source:
    """Read the batches straight out of the tar.gz, without extracting to disk."""
    files = {}
    try:
        with tarfile.open(path, "r|*") as archive:
            for member in archive:
                name = os.path.basename(member.name)
                if member.isfile() and name in CIFAR10_FILES and name not in files:
                    progress.check_stop()
                    progress.send("load", f"Reading CIFAR-10: {name}", len(files) / len(CIFAR10_FILES))
                    files[name] = archive.extractfile(member).read()
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise DatasetError(
            f"{path} is damaged or not a tar.gz archive ({exc}); "
            "download cifar-10-python.tar.gz again or unpack it and choose the cifar-10-batches-py folder"
        ) from None
    return _cifar10_from_files(files, path, description)


def _find_batches_folder(folder: str) -> str | None:
    """The folder holding the batch files: the one given, or one inside it."""
    for candidate in (
        folder,
        os.path.join(folder, "cifar-10-batches-py"),
        os.path.join(folder, KERAS_CIFAR10_FOLDER, "cifar-10-batches-py"),
    ):
        if any(os.path.isfile(os.path.join(candidate, name)) for name in CIFAR10_FILES):
            return candidate
    return None


def read_archive_source(cfg: DatasetConfig, progress: Progress) -> Source:
    """The "cifar10_archive" source: `cfg.path` is the tar.gz or a folder with the batches."""
    if not cfg.path.strip():
        raise DatasetError(
            "no CIFAR-10 archive chosen: choose cifar-10-python.tar.gz or the cifar-10-batches-py folder"
        )
    path = os.path.abspath(os.path.expanduser(cfg.path.strip()))
    description = f"CIFAR-10 archive {path}"
    if not os.path.exists(path):
        raise DatasetError(f"{path} does not exist; choose cifar-10-python.tar.gz or the cifar-10-batches-py folder")
    if os.path.isdir(path):
        folder = _find_batches_folder(path)
        if folder is None:
            raise DatasetError(
                f"{path} is not a CIFAR-10 python folder: it has no data_batch_1..5, test_batch "
                "or batches.meta (choose cifar-10-batches-py, or the 'folder' source for images)"
            )
        return read_batches_folder(folder, description, progress)
    return _read_tar(path, description, progress)
