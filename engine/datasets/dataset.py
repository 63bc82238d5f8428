"""What every source reads, what load_dataset returns, and how loading reports progress."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from engine.errors import DatasetError
from engine.events import StageEvent

# Seconds between two progress events: a few a second, never per image.
PROGRESS_INTERVAL = 0.25


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
