"""engine.datasets.folder: image folders with class subfolders, and the ways they can be wrong."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from datasetfiles import (
    folder_cfg, index_by_pixels, solid, texts, write_cifar_tar, write_gradient_png16, write_image,
    write_image_folder, write_rotated_jpeg,
)
from engine.datasets import decode_image, load_dataset
from engine.errors import DatasetError


def test_image_folder_reads_png_exactly_and_jpeg_closely(tmp_path):
    pngs = write_image_folder(tmp_path / "pets")
    ds = load_dataset(folder_cfg(tmp_path / "pets"))
    assert ds.class_names == ["cat", "dog", "frog"]
    assert ds.x_train.shape == (12, 32, 32, 3) and ds.x_train.dtype == np.uint8
    assert ds.y_train.dtype == np.int64
    assert ds.x_test.shape == (0, 32, 32, 3) and ds.y_test.shape == (0,)
    np.testing.assert_array_equal(ds.class_counts("train"), [4, 4, 4])
    found = index_by_pixels(ds.x_train, ds.y_train)
    for pixels, label in pngs.values():
        assert found[pixels.tobytes()] == label
    png_pixels = {pixels.tobytes() for pixels, _ in pngs.values()}
    jpeg = next(i for i, image in enumerate(ds.x_train) if image.tobytes() not in png_pixels)
    label = ds.y_train[jpeg]
    expected = [solid((label * 80, i * 23 % 256, 100)) for i in (1, 3)]
    assert min(np.abs(ds.x_train[jpeg].astype(int) - e.astype(int)).mean() for e in expected) < 4
    assert ds.description == f"image folder {tmp_path / 'pets'}"


def test_image_folder_with_train_and_test_resizes_mixed_sizes(tmp_path):
    root = tmp_path / "data"
    write_image(str(root / "train" / "cat" / "a.png"), solid((10, 20, 30), (32, 32)), "PNG")
    write_image(str(root / "train" / "cat" / "b.jpg"), solid((10, 20, 30), (64, 48)), "JPEG")
    write_image(str(root / "train" / "dog" / "c.png"), solid((200, 20, 30), (20, 20)), "PNG")
    Image.new("L", (16, 16), 77).save(root / "train" / "dog" / "gray.png")
    Image.new("RGBA", (32, 32), (1, 2, 3, 128)).save(root / "train" / "dog" / "alpha.png")
    write_image(str(root / "test" / "dog" / "d.png"), solid((200, 20, 30), (32, 32)), "PNG")
    write_image(str(root / "test" / "cat" / "photo.jpg"), solid((90, 140, 190), (640, 480)), "JPEG")

    ds = load_dataset(folder_cfg(root, image_size=32))
    assert ds.class_names == ["cat", "dog"]
    assert ds.x_train.shape == (5, 32, 32, 3) and ds.x_test.shape == (2, 32, 32, 3)
    np.testing.assert_array_equal(ds.y_test, [0, 1])
    assert np.abs(ds.x_test[0].reshape(-1, 3).mean(axis=0) - (90, 140, 190)).max() < 3
    np.testing.assert_array_equal(ds.x_test[1], solid((200, 20, 30)))
    train = index_by_pixels(ds.x_train, ds.y_train)
    assert train[solid((10, 20, 30)).tobytes()] == 0
    assert train[np.full((32, 32, 3), 77, np.uint8).tobytes()] == 1
    assert train[np.broadcast_to(np.array([1, 2, 3], np.uint8), (32, 32, 3)).tobytes()] == 1

    small = load_dataset(folder_cfg(root, image_size=16))
    assert small.image_shape == (16, 16, 3)


def test_image_size_zero_keeps_the_first_images_size(tmp_path):
    write_image(str(tmp_path / "f" / "a" / "1.png"), solid((1, 2, 3), (40, 24)), "PNG")
    write_image(str(tmp_path / "f" / "b" / "2.png"), solid((9, 8, 7), (32, 32)), "PNG")
    ds = load_dataset(folder_cfg(tmp_path / "f", image_size=0))
    assert ds.image_shape == (24, 40, 3)


def test_rotated_jpegs_and_16_bit_pngs_are_read_as_decode_image_reads_them(tmp_path):
    write_rotated_jpeg(tmp_path / "f" / "photo" / "turned.jpg", size=(48, 24))
    write_gradient_png16(tmp_path / "f" / "scan" / "deep.png", width=64, height=64)
    ds = load_dataset(folder_cfg(tmp_path / "f", image_size=32))
    by_label = dict(zip(ds.y_train.tolist(), ds.x_train))
    np.testing.assert_array_equal(by_label[0], decode_image(tmp_path / "f" / "photo" / "turned.jpg", (32, 32)))
    np.testing.assert_array_equal(by_label[1], decode_image(tmp_path / "f" / "scan" / "deep.png", (32, 32)))
    assert by_label[0][:, 16:].mean() > 200 and by_label[0][:, :16].mean() < 50
    assert 100 < by_label[1].mean() < 155


def test_non_image_files_are_skipped_and_counted(tmp_path):
    write_image_folder(tmp_path / "pets", per_class=2)
    (tmp_path / "pets" / "cat" / "notes.txt").write_text("not an image")
    (tmp_path / "pets" / "dog" / "broken.jpg").write_bytes(b"this is no jpeg")
    (tmp_path / "pets" / "dog" / ".DS_Store").write_bytes(b"\0\0")
    events = []
    ds = load_dataset(folder_cfg(tmp_path / "pets"), report=events.append)
    assert len(ds.y_train) == 6
    skipped = [text for text in texts(events) if text.startswith("Skipped")]
    assert skipped and "Skipped 2 files" in skipped[0]
    assert "notes.txt" in skipped[0] and "broken.jpg" in skipped[0]


def test_folders_beside_train_and_test_are_named(tmp_path):
    write_image(str(tmp_path / "d" / "train" / "cat" / "a.png"), solid((1, 2, 3)), "PNG")
    write_image(str(tmp_path / "d" / "val" / "cat" / "b.png"), solid((1, 2, 3)), "PNG")
    events = []
    ds = load_dataset(folder_cfg(tmp_path / "d"), report=events.append)
    assert ds.class_names == ["cat"] and len(ds.y_test) == 0
    assert any(t.startswith("Ignoring val beside train/") for t in texts(events))


def test_cancel_stops_reading(tmp_path):
    write_image_folder(tmp_path / "pets")
    with pytest.raises(DatasetError, match="cancelled"):
        load_dataset(folder_cfg(tmp_path / "pets"), should_stop=lambda: True)


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no class subfolders"):
        load_dataset(folder_cfg(tmp_path / "empty"))


def test_images_without_class_subfolders(tmp_path):
    write_image(str(tmp_path / "flat" / "a.png"), solid((1, 2, 3)), "PNG")
    with pytest.raises(DatasetError, match="no class subfolders.*directly in it"):
        load_dataset(folder_cfg(tmp_path / "flat"))


def test_class_folders_without_images(tmp_path):
    (tmp_path / "f" / "cat").mkdir(parents=True)
    (tmp_path / "f" / "cat" / "readme.txt").write_text("hello")
    with pytest.raises(DatasetError, match="no images"):
        load_dataset(folder_cfg(tmp_path / "f"))


def test_only_unreadable_images(tmp_path):
    (tmp_path / "f" / "cat").mkdir(parents=True)
    (tmp_path / "f" / "cat" / "a.jpg").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="could be read as an image"):
        load_dataset(folder_cfg(tmp_path / "f"))


def test_test_classes_must_be_training_classes(tmp_path):
    write_image(str(tmp_path / "d" / "train" / "cat" / "a.png"), solid((1, 2, 3)), "PNG")
    write_image(str(tmp_path / "d" / "test" / "emu" / "b.png"), solid((1, 2, 3)), "PNG")
    with pytest.raises(DatasetError, match="emu"):
        load_dataset(folder_cfg(tmp_path / "d"))


def test_a_file_given_as_image_folder(tmp_path):
    path, _ = write_cifar_tar(tmp_path)
    with pytest.raises(DatasetError, match="is a file, not a folder.*CIFAR-10 archive"):
        load_dataset(folder_cfg(path))
