"""A tiny learnable image problem for engine tests.

Each class is a bright square in its own quadrant on noise, so a small CNN
learns it in a few epochs and accuracy rises far above chance.
"""

from __future__ import annotations

import numpy as np

from engine.config import RunConfig, preset
from engine.datasets import Dataset

CLASS_NAMES = ["top_left", "top_right", "bottom_left", "bottom_right"]


def toy_images(count: int, seed: int = 0, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % len(CLASS_NAMES)
    rng.shuffle(labels)
    images = rng.integers(0, 90, size=(count, size, size, 3), dtype=np.uint8)
    half = size // 2
    for image, label in zip(images, labels):
        row, col = divmod(int(label), 2)
        image[row * half:(row + 1) * half, col * half:(col + 1) * half] += 150
    return images, labels.astype(np.int64)


def toy_dataset(train: int = 160, val: int = 40, test: int = 40, size: int = 32) -> Dataset:
    x_train, y_train = toy_images(train, seed=1, size=size)
    x_val, y_val = toy_images(val, seed=2, size=size)
    x_test, y_test = toy_images(test, seed=3, size=size)
    return Dataset(x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val, x_test=x_test, y_test=y_test,
                   class_names=list(CLASS_NAMES), description="toy quadrants")


def toy_config(epochs: int = 1, **training) -> RunConfig:
    """Paper Table 1 made quick for the toy data: Adam 2e-3, batch 16, the
    whole split each epoch; keyword arguments set other training fields."""
    config = preset("Paper Table 1")
    config.name = "toy"
    t = config.training
    t.epochs, t.steps_per_epoch, t.validation_steps = epochs, 0, 0
    t.optimizer, t.learning_rate, t.batch_size = "adam", 2e-3, 16
    for key, value in training.items():
        setattr(t, key, value)
    return config


def write_toy_folder(root, splits=(("train", 120, 1), ("test", 40, 2))):
    """The toy images as a user's image folder: <root>/<split>/<class>/<i>.png, for (split, count, seed) in splits."""
    from PIL import Image

    for split, count, seed in splits:
        images, labels = toy_images(count, seed=seed)
        for i, (image, label) in enumerate(zip(images, labels)):
            folder = root / split / CLASS_NAMES[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / f"{i}.png")
    return root
