"""Datasets Keras downloads: CIFAR-10 through Keras' cache, CIFAR-100 and Fashion-MNIST through keras.datasets.

CIFAR-10 is fetched by this module itself, into the files Keras' own loader
uses, so it can report progress and checks the archive's checksum, and the
app and a notebook share one download. Keras (and so TensorFlow) is imported
only for CIFAR-100 and Fashion-MNIST.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import zlib

import numpy as np

from engine.config import DatasetConfig
from engine.datasets.cifar10 import CIFAR10_FILES, KERAS_CIFAR10_FOLDER, read_batches_folder
from engine.datasets.dataset import Progress, Source
from engine.errors import DatasetError

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_SHA256 = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"

# Names keras.datasets.cifar10.load_data (Keras 3) uses in its cache, so the
# app and Keras share one download; the Keras 2 name is read as well.
KERAS_CIFAR10_ARCHIVE = "cifar-10-batches-py-target_archive"
KERAS2_CIFAR10_ARCHIVE = "cifar-10-batches-py.tar.gz"

CIFAR100_CLASS_NAMES = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus "
    "butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch "
    "crab crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo "
    "keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse "
    "mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy "
    "porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper "
    "snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television "
    "tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm"
).split()
FASHION_MNIST_CLASS_NAMES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]


def keras_datasets_dir() -> str:
    """Keras' download cache (KERAS_HOME or ~/.keras, then datasets/), as Keras finds it."""
    home = os.path.expanduser(os.environ.get("KERAS_HOME", ""))
    if not home:
        base = os.path.expanduser("~")
        if not os.access(base, os.W_OK):
            base = tempfile.gettempdir()
        home = os.path.join(base, ".keras")
    return os.path.join(home, "datasets")


def read_cifar10(cfg: DatasetConfig, progress: Progress) -> Source:
    """CIFAR-10 from Keras' cache, downloading and extracting it there if missing."""
    description = "CIFAR-10 (Keras download)"
    datasets = keras_datasets_dir()
    extracted = os.path.join(datasets, KERAS_CIFAR10_FOLDER, "cifar-10-batches-py")
    for folder in (extracted, os.path.join(datasets, "cifar-10-batches-py")):
        if all(os.path.isfile(os.path.join(folder, name)) for name in CIFAR10_FILES[:-1]):
            return read_batches_folder(folder, description, progress)

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
    return read_batches_folder(extracted, description, progress)


def _download_failed(reason: str) -> DatasetError:
    return DatasetError(
        f"Downloading CIFAR-10 failed ({reason}). Without an internet connection, download "
        f"cifar-10-python.tar.gz by hand from {CIFAR10_URL} on another computer, then choose the "
        "\"CIFAR-10 archive\" source and point it at that file; or use an image folder."
    )


def _download_cifar10(target: str, progress: Progress) -> None:
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


def _extract_cifar10(archive: str, destination: str, progress: Progress) -> None:
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


def _load_with_keras(module_name: str, title: str, progress: Progress, **kwargs):
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


def read_cifar100(cfg: DatasetConfig, progress: Progress) -> Source:
    x_train, y_train, x_test, y_test = _load_with_keras("cifar100", "CIFAR-100", progress, label_mode="fine")
    return Source(x_train, y_train, x_test, y_test, list(CIFAR100_CLASS_NAMES), "CIFAR-100 (Keras download)")


def read_fashion_mnist(cfg: DatasetConfig, progress: Progress) -> Source:
    x_train, y_train, x_test, y_test = _load_with_keras("fashion_mnist", "Fashion-MNIST", progress)
    return Source(
        x_train[..., np.newaxis], y_train, x_test[..., np.newaxis], y_test,
        list(FASHION_MNIST_CLASS_NAMES), "Fashion-MNIST (Keras download)",
    )
