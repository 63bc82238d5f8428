"""Builders for the dataset tests: each on-disk format written in its real layout."""

from __future__ import annotations

import os
import pickle
import tarfile

import numpy as np
from PIL import Image

from engine.config import DatasetConfig
from engine.datasets import Dataset, cifar10_class_names


def make_cifar_images(count, seed):
    """Distinct random 32x32 RGB images and balanced labels 0..9."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(count, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(count) % 10
    rng.shuffle(labels)
    return images, labels


def write_cifar_folder(folder, per_batch=20, test_count=30, protocol=2, meta=True):
    """A real cifar-10-batches-py folder; returns the arrays it holds (NHWC)."""
    os.makedirs(folder, exist_ok=True)
    x_train, y_train = make_cifar_images(5 * per_batch, seed=1)
    x_test, y_test = make_cifar_images(test_count, seed=2)
    for i in range(5):
        part = slice(i * per_batch, (i + 1) * per_batch)
        write_batch(os.path.join(folder, f"data_batch_{i + 1}"), x_train[part], y_train[part], protocol)
    write_batch(os.path.join(folder, "test_batch"), x_test, y_test, protocol)
    if meta:
        names = [name.encode() for name in cifar10_class_names()]
        with open(os.path.join(folder, "batches.meta"), "wb") as f:
            pickle.dump({b"label_names": names, b"num_vis": 3072}, f, protocol=protocol)
    return x_train, y_train, x_test, y_test


def write_batch(path, images, labels, protocol=2):
    batch = {
        b"batch_label": b"a tiny batch",
        b"data": images.transpose(0, 3, 1, 2).reshape(len(images), 3072),
        b"labels": [int(n) for n in labels],
        b"filenames": [f"{i}.png".encode() for i in range(len(images))],
    }
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=protocol)


def write_cifar_tar(tmp_path, name="cifar-10-python.tar.gz"):
    arrays = write_cifar_folder(tmp_path / "src" / "cifar-10-batches-py", protocol=pickle.HIGHEST_PROTOCOL)
    path = tmp_path / name
    with tarfile.open(path, "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return path, arrays


def check_cifar(ds, arrays):
    """`ds` holds exactly what write_cifar_folder wrote, with no validation share."""
    x_train, y_train, x_test, y_test = arrays
    assert isinstance(ds, Dataset)
    assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int64
    assert ds.x_train.shape == (100, 32, 32, 3) and ds.image_shape == (32, 32, 3)
    assert ds.x_val.shape == (0, 32, 32, 3) and ds.y_val.shape == (0,)
    assert ds.class_names == cifar10_class_names() and ds.num_classes == 10
    assert index_by_pixels(ds.x_train, ds.y_train) == index_by_pixels(x_train, y_train)
    np.testing.assert_array_equal(ds.x_test, x_test)
    np.testing.assert_array_equal(ds.y_test, y_test)
    assert ds.y_test.dtype == np.int64
    np.testing.assert_array_equal(ds.class_counts("train"), np.full(10, 10))


def solid(color, size=(32, 32)):
    """An image with a distinct pattern, so pixels identify it."""
    pixels = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    pixels[...] = color
    pixels[0, 0] = (255 - color[0], 7, 9)
    return pixels


def write_image(path, pixels, fmt, **options):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(pixels).save(path, format=fmt, **options)


def write_image_folder(root, per_class=4, classes=("cat", "dog", "frog")):
    """Class subfolders of PNGs (exact) and JPEGs; returns {png path: (pixels, label)}."""
    pngs = {}
    for label, name in enumerate(classes):
        for i in range(per_class):
            pixels = solid((label * 80, i * 23 % 256, 100))
            if i % 2 == 0:
                path = os.path.join(root, name, f"{i:03d}.png")
                write_image(path, pixels, "PNG")
                pngs[path] = (pixels, label)
            else:
                write_image(os.path.join(root, name, f"{i:03d}.jpg"), pixels, "JPEG")
    return pngs


def write_rotated_jpeg(path, size=(48, 24)):
    """A JPEG stored bright on top, with EXIF orientation 6: shown turned 90 degrees clockwise.

    Shown the right way, it is `size[1]` wide and `size[0]` tall, bright on the right.
    """
    width, height = size
    pixels = np.full((height, width, 3), 20, dtype=np.uint8)
    pixels[: height // 2] = 230
    exif = Image.Exif()
    exif[0x0112] = 6
    write_image(str(path), pixels, "JPEG", exif=exif, quality=95)
    return path


def write_gradient_png16(path, width=256, height=4):
    """A 16-bit grayscale PNG, 0 to 65535 from left to right; returns the 8-bit gradient it shows."""
    columns = np.linspace(0, 65535, width).round().astype(np.uint16)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.tile(columns, (height, 1))).save(path, format="PNG")
    assert Image.open(path).mode == "I;16"
    return np.tile(np.linspace(0, 255, width), (height, 1))


def index_by_pixels(x, y):
    return {image.tobytes(): int(label) for image, label in zip(x, y)}


def folder_cfg(path, **kwargs):
    split = kwargs.pop("validation_split", 0.0)
    return DatasetConfig(source="folder", path=str(path), validation_split=split, **kwargs)


def archive_cfg(path, **kwargs):
    return DatasetConfig(
        source="cifar10_archive", path=str(path), validation_split=kwargs.pop("validation_split", 0.0), **kwargs
    )


def texts(events):
    return [event.text for event in events]
