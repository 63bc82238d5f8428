"""Dataset sources turned into uint8 image arrays, labels and class names.

Every source ends as the same `Dataset`, so models and the Trainer never care
where the images came from. Sources: CIFAR-10 (Keras' download cache, which
keras_downloads fills itself so it can report progress), the official
CIFAR-10 python archive (cifar10), an image folder with one subfolder per
class (folder: decoded in parallel by decoding, cached by cache), and
CIFAR-100 and Fashion-MNIST through `keras.datasets`. Subsets and the
validation split are applied last, the same way for every source (splits).
images decodes one file, for training and Classify alike.

Every problem with the input raises DatasetError with a message for the user.
Keras (and so TensorFlow) is imported only by the sources that need it.
"""

from __future__ import annotations

from typing import Callable

from engine.config import DatasetConfig
from engine.datasets.cache import cache_dir
from engine.datasets.cifar10 import cifar10_class_names, read_archive_source
from engine.datasets.dataset import Dataset, Progress
from engine.datasets.folder import read_folder_source
from engine.datasets.images import IMAGE_EXTENSIONS, decode_image, is_image_name
from engine.datasets.keras_downloads import keras_datasets_dir, read_cifar10, read_cifar100, read_fashion_mnist
from engine.datasets.splits import split
from engine.errors import DatasetError
from engine.events import StageEvent

__all__ = [
    "IMAGE_EXTENSIONS",
    "Dataset",
    "cache_dir",
    "cifar10_class_names",
    "decode_image",
    "is_image_name",
    "keras_datasets_dir",
    "load_dataset",
]

_READERS = {
    "cifar10": read_cifar10,
    "cifar10_archive": read_archive_source,
    "folder": read_folder_source,
    "cifar100": read_cifar100,
    "fashion_mnist": read_fashion_mnist,
}


def load_dataset(
    cfg: DatasetConfig,
    report: Callable[[StageEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Dataset:
    """Read the source `cfg` names, then apply its subsets and validation split."""
    _check_options(cfg)
    reader = _READERS.get(cfg.source)
    if reader is None:
        raise DatasetError(f"unknown dataset source {cfg.source!r}; choose one of {', '.join(_READERS)}")
    progress = Progress(report, should_stop)
    source = reader(cfg, progress)
    progress.check_stop()
    return split(source, cfg)


def _check_options(cfg: DatasetConfig) -> None:
    if cfg.train_subset < 0 or cfg.test_subset < 0:
        raise DatasetError("the train and test subsets must be 0 (all images) or a positive count")
    if not 0.0 <= cfg.validation_split <= 0.5:
        raise DatasetError(f"the validation split must be between 0 and 0.5, not {cfg.validation_split}")
    if cfg.seed < 0:
        raise DatasetError(f"the dataset seed must be 0 or positive, not {cfg.seed}")
    if cfg.image_size < 0:
        raise DatasetError(f"the image size must be 0 (as the files are) or positive, not {cfg.image_size}")
