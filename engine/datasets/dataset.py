"""What every source reads, what load_dataset returns, and how loading reports progress."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from engine.errors import DatasetError
from engine.events import StageEvent

# Seconds between two progress events: a few a second, never per image.
PROGRESS_INTERVAL = 0.25
# What makes a dataset odd enough to warn about before a user trains on it.
MANY_CLASSES = 50  # more classes than this: a folder of folders that are not classes?
FEW_IMAGES = 10  # a class with fewer training images than this can hardly be learned or measured


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
    test_files: list[str] | None = None  # the file of each test image, for sources made of files

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

    def warnings(self) -> list[str]:
        """What is odd about this dataset, one sentence each: very many
        classes, classes with a handful of training images, no test split."""
        found = []
        if self.num_classes > MANY_CLASSES:
            found.append(f"{self.num_classes} classes: check that each subfolder really is a class")
        counts = self.class_counts("train")
        few = [str(self.class_names[i]) for i in np.flatnonzero(counts < FEW_IMAGES)]
        if few:
            shown = ", ".join(few[:5]) + (f" and {len(few) - 5} more" if len(few) > 5 else "")
            found.append(f"{len(few)} class(es) have fewer than {FEW_IMAGES} training images ({shown}): "
                         "their scores will be noise")
        if not len(self.y_test):
            found.append("no test split: runs are evaluated on the validation split instead (add a test/ "
                         "folder beside train/ for a held-out score)")
        if not len(self.y_val):
            found.append("no validation split: the best epoch cannot be chosen (set a validation split)")
        return found


@dataclass
class Source:
    """What a source reads, before subsets and the validation split."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]
    description: str
    test_files: list[str] | None = None


class Progress:
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
