"""Dataset sources turned into uint8 image arrays, labels and class names.

Every source ends as the same `Dataset`, so models and the Trainer never care
where the images came from. Sources: CIFAR-10 (Keras' download cache, which
this module fills itself so it can report progress), the official CIFAR-10
python archive, an image folder with one subfolder per class (read in
parallel and cached as .npy so a second read is instant), and CIFAR-100 and
Fashion-MNIST through `keras.datasets`. Subsets and the validation split are
applied last, the same way for every source: stratified and seeded.

Every problem with the input raises DatasetError with a message for the user.
Keras (and so TensorFlow) is imported only by the sources that need it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
from PIL import Image, ImageOps

from engine.config import DatasetConfig
from engine.errors import DatasetError
from engine.events import StageEvent

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_SHA256 = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"

# Names keras.datasets.cifar10.load_data (Keras 3) uses in its cache, so the
# app and Keras share one download; the Keras 2 names are read as well.
KERAS_CIFAR10_ARCHIVE = "cifar-10-batches-py-target_archive"
KERAS_CIFAR10_FOLDER = "cifar-10-batches-py-target"
KERAS2_CIFAR10_ARCHIVE = "cifar-10-batches-py.tar.gz"

CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_FILES = CIFAR10_TRAIN_BATCHES + ("test_batch", "batches.meta")

IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "bmp", "gif", "webp", "tif", "tiff", "ppm", "pgm"})

# Bump when the cached arrays' layout changes, so old entries are ignored.
CACHE_VERSION = 1
# Seconds between two progress events: a few a second, never per image.
PROGRESS_INTERVAL = 0.25
# Below this many images, starting worker processes costs more than it saves.
POOL_MIN_IMAGES = 4000
# At most this many worker processes (0: decode in this process only).
MAX_WORKERS = 8
CHUNK_SIZE = 256

_CIFAR100_CLASS_NAMES = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus "
    "butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch "
    "crab crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo "
    "keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse "
    "mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy "
    "porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper "
    "snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television "
    "tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm"
).split()
_FASHION_MNIST_CLASS_NAMES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]


@dataclass
class Dataset:
    """Images as uint8 (N, H, W, C) and int64 labels, split three ways.

    The validation and test splits may have 0 rows (no validation share, or
    a source without a test split). The training and validation images come
    shuffled (seeded), so a trainer with a small shuffle buffer still sees
    mixed batches; the test images keep the source's order.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]
    description: str

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def class_counts(self, split: str) -> np.ndarray:
        """Images per class in "train", "val" or "test"."""
        labels = {"train": self.y_train, "val": self.y_val, "test": self.y_test}.get(split)
        if labels is None:
            raise ValueError(f"unknown split {split!r}; use 'train', 'val' or 'test'")
        return np.bincount(labels, minlength=self.num_classes)


@dataclass
class _Source:
    """What a source reads, before subsets and the validation split."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]
    description: str


class _Progress:
    """Sends StageEvents at a bounded rate and answers "was I asked to stop?"."""

    def __init__(self, report, should_stop):
        self._report = report
        self._should_stop = should_stop
        self._last = 0.0

    def send(self, stage: str, text: str, fraction: float | None = None, force: bool = True) -> None:
        now = time.monotonic()
        if self._report is None or (not force and now - self._last < PROGRESS_INTERVAL):
            return
        self._last = now
        self._report(StageEvent(stage, text, fraction))

    def check_stop(self) -> None:
        if self._should_stop is not None and self._should_stop():
            raise DatasetError("loading was cancelled")


def cifar10_class_names() -> list[str]:
    return ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def load_dataset(
    cfg: DatasetConfig,
    report: Callable[[StageEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Dataset:
    """Read the source `cfg` names, then apply its subsets and validation split."""
    _check_options(cfg)
    readers = {
        "cifar10": _read_cifar10_keras_cache,
        "cifar10_archive": _read_cifar10_archive_source,
        "folder": _read_folder_source,
        "cifar100": _read_cifar100,
        "fashion_mnist": _read_fashion_mnist,
    }
    reader = readers.get(cfg.source)
    if reader is None:
        raise DatasetError(f"unknown dataset source {cfg.source!r}; choose one of {', '.join(readers)}")
    progress = _Progress(report, should_stop)
    source = reader(cfg, progress)
    progress.check_stop()
    return _split(source, cfg)


def _check_options(cfg: DatasetConfig) -> None:
    if cfg.train_subset < 0 or cfg.test_subset < 0:
        raise DatasetError("the train and test subsets must be 0 (all images) or a positive count")
    if not 0.0 <= cfg.validation_split <= 0.5:
        raise DatasetError(f"the validation split must be between 0 and 0.5, not {cfg.validation_split}")
    if cfg.seed < 0:
        raise DatasetError(f"the dataset seed must be 0 or positive, not {cfg.seed}")
    if cfg.image_size < 0:
        raise DatasetError(f"the image size must be 0 (as the files are) or positive, not {cfg.image_size}")


# --- subsets and splits ----------------------------------------------------


def _split(source: _Source, cfg: DatasetConfig) -> Dataset:
    """Test subset, then training subset, then the validation share of it."""
    num_classes = len(source.class_names)
    test_rng = np.random.default_rng([cfg.seed, 1])
    train_rng = np.random.default_rng([cfg.seed, 2])
    val_rng = np.random.default_rng([cfg.seed, 3])

    test_index = np.arange(len(source.y_test))
    if cfg.test_subset:
        test_index = _stratified_pick(source.y_test, cfg.test_subset, num_classes, test_rng)

    train_index = np.arange(len(source.y_train))
    if cfg.train_subset:
        train_index = _stratified_pick(source.y_train, cfg.train_subset, num_classes, train_rng)

    val_count = int(np.floor(len(train_index) * cfg.validation_split + 0.5))
    chosen = _stratified_pick(source.y_train[train_index], val_count, num_classes, val_rng, keep_one=True)
    is_val = np.zeros(len(train_index), dtype=bool)
    is_val[chosen] = True
    val_index = val_rng.permutation(train_index[is_val])
    train_index = val_rng.permutation(train_index[~is_val])

    return Dataset(
        x_train=source.x_train[train_index],
        y_train=source.y_train[train_index].astype(np.int64),
        x_val=source.x_train[val_index],
        y_val=source.y_train[val_index].astype(np.int64),
        x_test=source.x_test[test_index],
        y_test=source.y_test[test_index].astype(np.int64),
        class_names=list(source.class_names),
        description=source.description,
    )


def _stratified_pick(labels, count, num_classes, rng, keep_one=False) -> np.ndarray:
    """Sorted indices of `count` items drawn per class in proportion to its size.

    Quotas are rounded by largest remainder, so a balanced source gives
    exactly equal classes. With `keep_one`, a class never gives up its last
    item (the validation split must not empty a class of the training split).
    """
    labels = np.asarray(labels)
    if count >= len(labels) and not keep_one:
        return np.arange(len(labels))
    counts = np.bincount(labels, minlength=num_classes)
    limits = np.maximum(counts - 1, 0) if keep_one else counts
    count = min(count, int(limits.sum()))
    exact = counts * (count / max(len(labels), 1))
    quotas = np.minimum(np.floor(exact).astype(np.int64), limits)
    order = np.argsort(-(exact - quotas), kind="stable")
    left = count - int(quotas.sum())
    while left > 0:
        for cls in order:
            if left and quotas[cls] < limits[cls]:
                quotas[cls] += 1
                left -= 1
    picked = [
        rng.choice(np.flatnonzero(labels == cls), size=int(quotas[cls]), replace=False)
        for cls in range(num_classes)
        if quotas[cls]
    ]
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)


# --- CIFAR-10 python format ------------------------------------------------


# Pickles name numpy's internals by the module of the numpy that wrote them.
_NUMPY_CORE = "numpy._core" if int(np.__version__.split(".")[0]) >= 2 else "numpy.core"


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


def _cifar10_from_files(files: dict[str, bytes], where: str, description: str) -> _Source:
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
    return _Source(x_train, y_train, np.ascontiguousarray(x_test), y_test, class_names, description)


def _read_cifar10_folder(folder: str, description: str, progress: _Progress) -> _Source:
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


def _read_cifar10_tar(path: str, description: str, progress: _Progress) -> _Source:
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


def _read_cifar10_archive(path: str, description: str, progress: _Progress) -> _Source:
    if not os.path.exists(path):
        raise DatasetError(f"{path} does not exist; choose cifar-10-python.tar.gz or the cifar-10-batches-py folder")
    if os.path.isdir(path):
        folder = _find_batches_folder(path)
        if folder is None:
            raise DatasetError(
                f"{path} is not a CIFAR-10 python folder: it has no data_batch_1..5, test_batch "
                "or batches.meta (choose cifar-10-batches-py, or the 'folder' source for images)"
            )
        return _read_cifar10_folder(folder, description, progress)
    return _read_cifar10_tar(path, description, progress)


def _read_cifar10_archive_source(cfg: DatasetConfig, progress: _Progress) -> _Source:
    if not cfg.path.strip():
        raise DatasetError(
            "no CIFAR-10 archive chosen: choose cifar-10-python.tar.gz or the cifar-10-batches-py folder"
        )
    path = os.path.abspath(os.path.expanduser(cfg.path.strip()))
    return _read_cifar10_archive(path, f"CIFAR-10 archive {path}", progress)


# --- CIFAR-10 through Keras' download cache ----------------------------------


def keras_datasets_dir() -> str:
    """Keras' download cache (KERAS_HOME or ~/.keras, then datasets/), as Keras finds it."""
    home = os.path.expanduser(os.environ.get("KERAS_HOME", ""))
    if not home:
        base = os.path.expanduser("~")
        if not os.access(base, os.W_OK):
            base = tempfile.gettempdir()
        home = os.path.join(base, ".keras")
    return os.path.join(home, "datasets")


def _read_cifar10_keras_cache(cfg: DatasetConfig, progress: _Progress) -> _Source:
    """CIFAR-10 from Keras' cache, downloading and extracting it there if missing."""
    description = "CIFAR-10 (Keras download)"
    datasets = keras_datasets_dir()
    extracted = os.path.join(datasets, KERAS_CIFAR10_FOLDER, "cifar-10-batches-py")
    for folder in (extracted, os.path.join(datasets, "cifar-10-batches-py")):
        if all(os.path.isfile(os.path.join(folder, name)) for name in CIFAR10_FILES[:-1]):
            return _read_cifar10_folder(folder, description, progress)

    archive = os.path.join(datasets, KERAS_CIFAR10_ARCHIVE)
    if not os.path.isfile(archive) and os.path.isfile(os.path.join(datasets, KERAS2_CIFAR10_ARCHIVE)):
        archive = os.path.join(datasets, KERAS2_CIFAR10_ARCHIVE)
    if not os.path.isfile(archive):
        try:
            os.makedirs(datasets, exist_ok=True)
        except OSError as exc:
            raise DatasetError(f"cannot create Keras' dataset folder {datasets}: {exc.strerror or exc}") from None
        _download_cifar10(archive, progress)
    _extract_cifar10(archive, os.path.join(datasets, KERAS_CIFAR10_FOLDER), progress)
    return _read_cifar10_folder(extracted, description, progress)


def _download_failed(reason: str) -> DatasetError:
    return DatasetError(
        f"Downloading CIFAR-10 failed ({reason}). Without an internet connection, download "
        f"cifar-10-python.tar.gz by hand from {CIFAR10_URL} on another computer, then choose the "
        "\"CIFAR-10 archive\" source and point it at that file; or use an image folder."
    )


def _download_cifar10(target: str, progress: _Progress) -> None:
    """Fetch the archive to `target` (via a .part file), checking its SHA-256."""
    import http.client  # imported here: decode workers and the GUI's start need no network code
    import urllib.error
    import urllib.request

    partial = target + ".part"
    digest = hashlib.sha256()
    progress.send("download", "Downloading CIFAR-10: 0%", 0.0)
    try:
        with urllib.request.urlopen(CIFAR10_URL, timeout=60) as response, open(partial, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            while chunk := response.read(1 << 20):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                progress.check_stop()
                if total:
                    fraction = min(done / total, 1.0)
                    progress.send("download", f"Downloading CIFAR-10: {fraction:.0%}", fraction, force=False)
                else:
                    progress.send("download", f"Downloading CIFAR-10: {done >> 20} MB", None, force=False)
        if digest.hexdigest() != CIFAR10_SHA256:
            raise _download_failed("the downloaded file is damaged: its checksum does not match")
        os.replace(partial, target)
    except urllib.error.URLError as exc:
        raise _download_failed(str(exc.reason)) from None
    except (OSError, ValueError, http.client.HTTPException) as exc:
        raise _download_failed(str(exc) or type(exc).__name__) from None
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    progress.send("download", "Downloading CIFAR-10: 100%", 1.0)


def _extract_cifar10(archive: str, destination: str, progress: _Progress) -> None:
    """Unpack the batch files where Keras would, and nothing else from the archive."""
    progress.send("load", "Unpacking CIFAR-10")
    parent = os.path.dirname(destination)
    staging = None
    try:
        staging = tempfile.mkdtemp(prefix=".unpack-", dir=parent)
        inner = os.path.join(staging, "cifar-10-batches-py")
        os.makedirs(inner)
        with tarfile.open(archive, "r|*") as tar:
            for member in tar:
                name = os.path.basename(member.name)
                if member.isfile() and name in CIFAR10_FILES + ("readme.html",):
                    progress.check_stop()
                    with open(os.path.join(inner, name), "wb") as out:
                        shutil.copyfileobj(tar.extractfile(member), out)
        if os.path.isdir(destination):
            shutil.rmtree(destination)
        os.replace(staging, destination)
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise DatasetError(
            f"the CIFAR-10 archive in Keras' cache is damaged ({exc}); delete {archive} and try again"
        ) from None
    except OSError as exc:
        raise DatasetError(f"cannot unpack CIFAR-10 into {parent}: {exc.strerror or exc}") from None
    finally:
        if staging is not None and os.path.isdir(staging):
            shutil.rmtree(staging, ignore_errors=True)


# --- CIFAR-100 and Fashion-MNIST through keras.datasets ----------------------


def _load_with_keras(module_name: str, title: str, progress: _Progress, **kwargs):
    progress.send("download", f"Loading {title} through Keras (downloaded the first time)")
    try:
        import keras

        loader = getattr(keras.datasets, module_name).load_data
        (x_train, y_train), (x_test, y_test) = loader(**kwargs)
    except Exception as exc:  # Keras reports a failed download as a bare Exception
        raise DatasetError(
            f"Loading {title} through Keras failed ({exc}). Keras downloads it the first time, which "
            "needs an internet connection; without one, use an image folder instead."
        ) from None
    return x_train, np.ravel(y_train).astype(np.int64), x_test, np.ravel(y_test).astype(np.int64)


def _read_cifar100(cfg: DatasetConfig, progress: _Progress) -> _Source:
    x_train, y_train, x_test, y_test = _load_with_keras("cifar100", "CIFAR-100", progress, label_mode="fine")
    return _Source(x_train, y_train, x_test, y_test, list(_CIFAR100_CLASS_NAMES), "CIFAR-100 (Keras download)")


def _read_fashion_mnist(cfg: DatasetConfig, progress: _Progress) -> _Source:
    x_train, y_train, x_test, y_test = _load_with_keras("fashion_mnist", "Fashion-MNIST", progress)
    return _Source(
        x_train[..., np.newaxis], y_train, x_test[..., np.newaxis], y_test,
        list(_FASHION_MNIST_CLASS_NAMES), "Fashion-MNIST (Keras download)",
    )


# --- image folders ---------------------------------------------------------


@dataclass
class _FolderScan:
    """The files of an image folder, listed once for both the cache check and reading."""

    class_names: list[str]
    train_files: list[str]
    train_labels: list[int]
    test_files: list[str]
    test_labels: list[int]
    not_images: list[str]
    fingerprint: str


def _visible_entries(folder: str) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as it:
            entries = [e for e in it if not e.name.startswith(".") and e.name != "__MACOSX"]
    except OSError as exc:
        raise DatasetError(f"cannot read the folder {folder}: {exc.strerror or exc}") from None
    return sorted(entries, key=lambda e: e.name)


def _subfolders(folder: str) -> list[str]:
    return [e.name for e in _visible_entries(folder) if e.is_dir()]


def _walk_files(folder: str, relative: str, records: list[str], files: list[str], not_images: list[str]) -> None:
    """Every file under `folder` (sorted), noting size and mtime for the fingerprint.

    `relative` is the folder's path below the dataset root, ending in a separator;
    string joins, not os.path.relpath, keep this fast for 50,000 files.
    """
    for entry in _visible_entries(folder):
        if entry.is_dir(follow_symlinks=False):
            _walk_files(entry.path, relative + entry.name + os.sep, records, files, not_images)
            continue
        try:
            stat = entry.stat()
        except OSError:
            not_images.append(relative + entry.name)
            continue
        records.append(f"{relative}{entry.name}\0{stat.st_size}\0{stat.st_mtime_ns}")
        if _is_image_name(entry.name):
            files.append(entry.path)
        else:
            not_images.append(relative + entry.name)


def _is_image_name(name: str) -> bool:
    return "." in name and name.rpartition(".")[2].lower() in IMAGE_EXTENSIONS


def _scan_folder(root: str, progress: _Progress) -> _FolderScan:
    if not os.path.exists(root):
        raise DatasetError(f"the folder {root} does not exist")
    if not os.path.isdir(root):
        raise DatasetError(
            f"{root} is a file, not a folder; choose a folder with one subfolder of images per class "
            "(for cifar-10-python.tar.gz choose the \"CIFAR-10 archive\" source)"
        )
    top_level = _subfolders(root)
    train_dir, test_dir = root, None
    if "train" in top_level and _subfolders(os.path.join(root, "train")):
        train_dir = os.path.join(root, "train")
        if "test" in top_level:
            test_dir = os.path.join(root, "test")
        ignored = [name for name in top_level if name not in ("train", "test")]
        if ignored:
            progress.send("load", f"Ignoring {', '.join(ignored)} beside train/ and test/ "
                          "(the validation images are taken from train/)")
    class_names = _subfolders(train_dir)
    if not class_names:
        has_images = any(_is_image_name(e.name) for e in _visible_entries(train_dir))
        hint = " (the images lie directly in it)" if has_images else ""
        raise DatasetError(
            f"{train_dir} has no class subfolders{hint}: put the images of each class in a subfolder "
            "named after the class, e.g. cat/ and dog/, optionally inside train/ and test/"
        )
    records: list[str] = []
    not_images: list[str] = []
    splits = {}
    for split, split_dir in (("train", train_dir), ("test", test_dir)):
        files: list[str] = []
        labels: list[int] = []
        if split_dir is not None:
            present = _subfolders(split_dir)
            unknown = sorted(set(present) - set(class_names))
            if unknown:
                raise DatasetError(
                    f"{split_dir} has class folders that {train_dir} does not: {', '.join(unknown)}; "
                    "the test classes must be training classes"
                )
            for label, name in enumerate(class_names):
                if name in present:
                    before = len(files)
                    relative = os.path.relpath(os.path.join(split_dir, name), root) + os.sep
                    _walk_files(os.path.join(split_dir, name), relative, records, files, not_images)
                    labels.extend([label] * (len(files) - before))
        splits[split] = (files, labels)
    if not splits["train"][0]:
        raise DatasetError(
            f"{train_dir} has class subfolders ({', '.join(class_names[:5])}"
            f"{', ...' if len(class_names) > 5 else ''}) but no images in them (JPEG or PNG)"
        )
    fingerprint = hashlib.sha256("\n".join(records).encode("utf-8", "surrogateescape")).hexdigest()
    return _FolderScan(class_names, *splits["train"], *splits["test"], not_images, fingerprint)


def _decode_image(path: str, size: tuple[int, int] | None) -> np.ndarray:
    """One file as an RGB uint8 array, resized to `size` (width, height) if given."""
    with open(path, "rb") as f:
        data = f.read()
    with Image.open(io.BytesIO(data)) as image:
        if size is not None and image.format == "JPEG" and min(image.size) >= 2 * max(size):
            image.draft("RGB", (max(size), max(size)))  # decode big photos at 1/2 to 1/8 scale
        if "exif" in image.info:
            image = ImageOps.exif_transpose(image)
        if image.mode == "P":
            image = image.convert("RGBA")
        if image.mode != "RGB":
            image = image.convert("RGB")
        if size is not None and image.size != size:
            image = image.resize(size, Image.Resampling.BILINEAR)
        width, height = image.size
        return np.frombuffer(image.tobytes(), dtype=np.uint8).reshape(height, width, 3)


def _decode_chunk(paths: list[str], size: tuple[int, int]) -> tuple[np.ndarray, list[int]]:
    """Decode a run of files; returns the images and the positions that failed.

    Module-level so worker processes can run it.
    """
    width, height = size
    images = np.zeros((len(paths), height, width, 3), dtype=np.uint8)
    failed = []
    for i, path in enumerate(paths):
        try:
            images[i] = _decode_image(path, size)
        except Exception:  # Pillow raises many kinds of errors for files it cannot read
            failed.append(i)
    return images, failed


def _worker_count(count: int) -> int:
    """One worker process per core; this process only feeds them once they run."""
    if count < POOL_MIN_IMAGES or getattr(sys, "frozen", False):
        return 0
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    return min(cpus, MAX_WORKERS) if cpus > 1 else 0


class _DecodeWorker:
    """A child Python process that decodes chunks of files for `_decode_all`.

    A plain subprocess rather than multiprocessing: spawn-mode multiprocessing
    re-runs the caller's main script in every child (the GUI's imports, or
    all of an unguarded user script); this child imports only engine.data.
    Requests and replies are raw bytes, never pickles.
    """

    def __init__(self):
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from engine.data import _serve_decoding; _serve_decoding()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
        )

    def decode(self, paths: list[str], size: tuple[int, int]) -> tuple[np.ndarray, list[int]]:
        request = json.dumps({"paths": paths, "size": list(size)}).encode()
        self.process.stdin.write(len(request).to_bytes(4, "little") + request)
        self.process.stdin.flush()
        failed_count = int.from_bytes(self._read(4), "little")
        failed = np.frombuffer(self._read(4 * failed_count), dtype="<i4").tolist()
        width, height = size
        images = np.frombuffer(self._read(len(paths) * height * width * 3), dtype=np.uint8)
        return images.reshape(len(paths), height, width, 3), failed

    def _read(self, count: int) -> bytes:
        data = self.process.stdout.read(count)
        if len(data) != count:
            raise EOFError("the decode worker stopped")
        return data

    def close(self) -> None:
        """Kill first: closing a pipe that a feeder thread is reading would wait for that read."""
        self.process.kill()
        self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            try:
                pipe.close()
            except OSError:
                pass


def _serve_decoding() -> None:
    """A decode worker's main loop: requests on stdin, images on stdout, until EOF."""
    requests = sys.stdin.buffer
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # a stray print must not corrupt a reply
    while len(header := requests.read(4)) == 4:
        request = json.loads(requests.read(int.from_bytes(header, "little")))
        images, failed = _decode_chunk(request["paths"], tuple(request["size"]))
        replies.write(len(failed).to_bytes(4, "little") + np.asarray(failed, dtype="<i4").tobytes())
        replies.write(images.tobytes())
        replies.flush()


def _start_workers(count: int) -> list[_DecodeWorker]:
    workers = []
    for _ in range(count):
        try:
            workers.append(_DecodeWorker())
        except OSError:  # no Python to start (an embedded or frozen app): decode here
            break
    return workers


def _decode_all(paths: list[str], size: tuple[int, int], progress: _Progress) -> tuple[np.ndarray, list[int]]:
    """Decode every file, with worker processes when there are many.

    Pillow spends most of a small image's time in Python (header parsing),
    so threads fight over the GIL; processes scale with the cores. A thread
    per worker process takes chunks from the front. Until a worker has
    delivered, this thread decodes from the back (and takes over chunks that
    workers still hold once none are left), so slow-starting or failing
    workers never make this slower than decoding alone; after that it only
    waits, so the feeder threads get the GIL at once. Only this thread
    reports progress and checks for stop.
    """
    width, height = size
    images = np.empty((len(paths), height, width, 3), dtype=np.uint8)
    failed: set[int] = set()
    starts = list(range(0, len(paths), CHUNK_SIZE))
    changed = threading.Condition()
    workers = _start_workers(_worker_count(len(paths)))
    state = {"front": 0, "back": len(starts), "done": 0, "from_workers": 0, "alive": len(workers)}
    finished: set[int] = set()
    held: dict[int, bool] = {}  # chunks a worker was given and not yet finished, in order

    def take(from_front: bool) -> int | None:
        """The next unassigned chunk (call with `changed` held)."""
        if state["front"] >= state["back"]:
            return None
        if from_front:
            state["front"] += 1
            return starts[state["front"] - 1]
        state["back"] -= 1
        return starts[state["back"]]

    def store(start: int, chunk: np.ndarray, bad: list[int], by_worker: bool) -> None:
        with changed:
            held.pop(start, None)
            if start not in finished:
                images[start:start + len(chunk)] = chunk
                failed.update(start + i for i in bad)
                finished.add(start)
                state["done"] += len(chunk)
                state["from_workers"] += by_worker
            changed.notify_all()

    def feed(worker: _DecodeWorker) -> None:
        try:
            while True:
                with changed:
                    start = take(from_front=True)
                    if start is None:
                        return
                    held[start] = True
                store(start, *worker.decode(paths[start:start + CHUNK_SIZE], size), by_worker=True)
        except (OSError, ValueError, EOFError):  # the worker died or was closed; its chunk stays held
            pass
        finally:
            with changed:
                state["alive"] -= 1
                changed.notify_all()

    feeders = [threading.Thread(target=feed, args=(worker,), daemon=True) for worker in workers]
    for feeder in feeders:
        feeder.start()
    try:
        while True:
            progress.check_stop()
            with changed:
                if len(finished) == len(starts):
                    break
                if state["from_workers"] and state["alive"]:
                    changed.wait(PROGRESS_INTERVAL)
                    start = None
                else:
                    start = take(from_front=False)
                    if start is None:
                        start = next((s for s in reversed(held) if s not in finished), None)
            if start is not None:
                store(start, *_decode_chunk(paths[start:start + CHUNK_SIZE], size), by_worker=False)
            done = state["done"]
            progress.send("load", f"Reading images {done}/{len(paths)}", done / len(paths), force=False)
    finally:
        for worker in workers:
            worker.close()
        for feeder in feeders:
            feeder.join()
    return images, sorted(failed)


def cache_dir() -> str:
    """Where decoded image folders are kept (CIFAR_STUDIO_CACHE_DIR overrides the app's cache)."""
    root = os.environ.get("CIFAR_STUDIO_CACHE_DIR")
    if not root:
        import platformdirs

        root = platformdirs.user_cache_dir("cifar-studio")
    return os.path.join(root, "datasets")


def _cache_entry(root: str, image_size: int) -> str:
    key = hashlib.sha256(f"{CACHE_VERSION}\0{root}\0{image_size}".encode("utf-8", "surrogateescape"))
    name = "".join(c if c.isalnum() or c in "-_" else "_" for c in os.path.basename(root))[:40]
    return os.path.join(cache_dir(), f"{name}-{image_size}-{key.hexdigest()[:16]}")


_CACHED_ARRAYS = ("x_train", "y_train", "x_test", "y_test")


def _read_cache(entry: str, scan: _FolderScan) -> tuple[dict[str, np.ndarray], dict] | None:
    """The cached arrays if they were made from exactly these files, else None."""
    try:
        with open(os.path.join(entry, "meta.json"), encoding="utf-8") as f:
            meta = json.load(f)
        if meta.get("version") != CACHE_VERSION or meta.get("fingerprint") != scan.fingerprint:
            return None
        arrays = {name: np.load(os.path.join(entry, name + ".npy"), allow_pickle=False) for name in _CACHED_ARRAYS}
    except (OSError, ValueError, EOFError):
        return None
    x_train, y_train = arrays["x_train"], arrays["y_train"]
    if meta.get("class_names") != scan.class_names or x_train.dtype != np.uint8 or x_train.ndim != 4:
        return None
    if len(x_train) != len(y_train) or len(arrays["x_test"]) != len(arrays["y_test"]):
        return None
    return arrays, meta


def _write_cache(entry: str, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Write a new entry beside the old one, then swap, so readers never see half of one."""
    parent = os.path.dirname(entry)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".write-", dir=parent)
    try:
        for name, array in arrays.items():
            np.save(os.path.join(staging, name + ".npy"), array, allow_pickle=False)
        with open(os.path.join(staging, "meta.json"), "w", encoding="utf-8") as f:
            json.dump(meta, f)
        if os.path.isdir(entry):
            shutil.rmtree(entry)
        os.replace(staging, entry)
    finally:
        if os.path.isdir(staging):
            shutil.rmtree(staging, ignore_errors=True)


def _report_skipped(progress: _Progress, skipped: list[str]) -> None:
    if skipped:
        examples = ", ".join(skipped[:3]) + (", ..." if len(skipped) > 3 else "")
        noun = "file was" if len(skipped) == 1 else "files were"
        progress.send("load", f"Skipped {len(skipped)} {noun} not a readable image: {examples}")


def _read_folder_source(cfg: DatasetConfig, progress: _Progress) -> _Source:
    if not cfg.path.strip():
        raise DatasetError("no image folder chosen: choose a folder with one subfolder of images per class")
    root = os.path.abspath(os.path.expanduser(cfg.path.strip()))
    description = f"image folder {root}"
    progress.send("load", f"Listing {root}")
    scan = _scan_folder(root, progress)
    entry = _cache_entry(root, cfg.image_size)
    cached = _read_cache(entry, scan)
    if cached is not None:
        arrays, meta = cached
        progress.send("load", f"Read {len(arrays['y_train']) + len(arrays['y_test'])} images from the cache", 1.0)
        _report_skipped(progress, meta.get("skipped", []))
        return _Source(
            arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"], scan.class_names, description
        )

    paths = scan.train_files + scan.test_files
    labels = np.array(scan.train_labels + scan.test_labels, dtype=np.int64)
    size = (cfg.image_size, cfg.image_size) if cfg.image_size else _first_image_size(paths)
    progress.send("load", f"Reading images 0/{len(paths)}", 0.0)
    images, failed = _decode_all(paths, size, progress)
    skipped = scan.not_images + [os.path.relpath(paths[i], root) for i in failed]
    train_count = len(scan.train_files) - sum(1 for i in failed if i < len(scan.train_files))
    if failed:
        keep = np.ones(len(paths), dtype=bool)
        keep[failed] = False
        images, labels = images[keep], labels[keep]
    if train_count == 0:
        raise DatasetError(f"none of the training image files in {root} could be read as an image")
    progress.send("load", f"Read {len(labels)} images", 1.0)
    _report_skipped(progress, skipped)

    arrays = {
        "x_train": images[:train_count],
        "y_train": labels[:train_count],
        "x_test": images[train_count:],
        "y_test": labels[train_count:],
    }
    meta = {
        "version": CACHE_VERSION,
        "fingerprint": scan.fingerprint,
        "class_names": scan.class_names,
        "skipped": skipped,
        "path": root,
        "image_size": cfg.image_size,
    }
    try:
        _write_cache(entry, arrays, meta)
    except OSError as exc:
        progress.send("load", f"Could not cache the decoded images in {cache_dir()} ({exc.strerror or exc})")
    return _Source(
        arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"], scan.class_names, description
    )


def _first_image_size(paths: list[str]) -> tuple[int, int]:
    """(width, height) of the first file that decodes: image_size 0 keeps that size."""
    for path in paths:
        try:
            image = _decode_image(path, None)
        except Exception:  # not an image; the decode pass counts it as skipped
            continue
        return image.shape[1], image.shape[0]
    raise DatasetError("none of the image files could be read as an image")
