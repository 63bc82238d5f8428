"""Helpers for the window's tests: the tiny dataset's images and quick run settings."""

from __future__ import annotations

from pathlib import Path

import numpy as np

CLASS_NAMES = ["top_left", "top_right", "bottom_left", "bottom_right"]
RUN_TIMEOUT_MS = 180_000


def quadrant_image(label: int, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """Noise with a bright square in the quadrant of the class: learnable fast."""
    image = rng.integers(0, 90, size=(size, size, 3), dtype=np.uint8)
    half = size // 2
    row, column = divmod(label, 2)
    image[row * half:(row + 1) * half, column * half:(column + 1) * half] += 150
    return image


def use_tiny_run(window, folder: Path, epochs: int = 1, batch_size: int = 8) -> None:
    """Set the panels to SimCNN on the tiny folder dataset, with quick settings."""
    data = window.dataset_panel
    data.source.set_value("folder")
    data.path.setText(str(folder))
    data.validation_split.setText("0.25")
    data.train_subset.setText("all")
    data.test_subset.setText("all")
    window.model_panel.architecture.set_value("simcnn")
    hyper = window.hyperparameter_panel
    hyper.optimizer.set_value("adam")
    hyper.learning_rate.setText("0.003")
    hyper.schedule.set_value("constant")
    hyper.warmup_epochs.setText("0")
    hyper.batch_size.setText(str(batch_size))
    hyper.epochs.setText(str(epochs))
    hyper.steps_per_epoch.setText("auto")
    hyper.validation_steps.setText("all")
    hyper.augmentation.set_value("none")
    hyper.early_stopping.setText("off")
