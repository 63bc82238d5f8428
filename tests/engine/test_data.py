"""engine.data on real files: each format written in its real layout in tmp_path."""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import subprocess
import sys
import tarfile
import textwrap

import numpy as np
import pytest
from PIL import Image

from engine import data
from engine.config import DatasetConfig
from engine.data import Dataset, cifar10_class_names, load_dataset
from engine.errors import DatasetError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(autouse=True)
def private_caches(tmp_path, monkeypatch):
    """Never touch the user's app cache or Keras cache, and never download."""
    monkeypatch.setenv("CIFAR_STUDIO_CACHE_DIR", str(tmp_path / "app-cache"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    monkeypatch.setattr(data, "CIFAR10_URL", (tmp_path / "no-such-download.tar.gz").as_uri())


# --- builders for the on-disk formats ---------------------------------------


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


def solid(color, size=(32, 32)):
    """An image with a distinct pattern, so pixels identify it."""
    pixels = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    pixels[...] = color
    pixels[0, 0] = (255 - color[0], 7, 9)
    return pixels


def write_image(path, pixels, fmt):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(pixels).save(path, format=fmt)


def write_image_folder(root, per_class=4, classes=("cat", "dog", "frog")):
    """Class subfolders of PNGs (exact) and JPEGs; returns {png path: pixels}."""
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


# --- CIFAR-10 python archive ----------------------------------------------------


def check_cifar(ds, arrays):
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


def test_cifar10_folder_keeps_pixels_labels_and_names(tmp_path):
    arrays = write_cifar_folder(tmp_path / "cifar-10-batches-py")
    ds = load_dataset(archive_cfg(tmp_path / "cifar-10-batches-py"))
    check_cifar(ds, arrays)
    assert "CIFAR-10 archive" in ds.description


def test_cifar10_tar_gz_is_read_without_unpacking(tmp_path):
    path, arrays = write_cifar_tar(tmp_path)
    before = set(os.listdir(tmp_path))
    events = []
    ds = load_dataset(archive_cfg(path), report=events.append)
    check_cifar(ds, arrays)
    assert set(os.listdir(tmp_path)) == before
    assert any("data_batch_3" in text for text in texts(events))


def test_cifar10_parent_folder_and_missing_meta(tmp_path):
    arrays = write_cifar_folder(tmp_path / "download" / "cifar-10-batches-py", meta=False)
    check_cifar(load_dataset(archive_cfg(tmp_path / "download")), arrays)


# --- image folders ---------------------------------------------------------------


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


def test_a_decode_worker_process_decodes_like_this_process(tmp_path):
    pngs = write_image_folder(tmp_path / "pets", per_class=4)
    (tmp_path / "broken.png").write_bytes(b"no png")
    paths = sorted(pngs) + [str(tmp_path / "broken.png")] + [str(p) for p in sorted((tmp_path / "pets").rglob("*.jpg"))]
    worker = data._DecodeWorker()
    try:
        images, failed = worker.decode(paths, (24, 24))
        again, _ = worker.decode(paths[:2], (24, 24))
    finally:
        worker.close()
    expected, expected_failed = data._decode_chunk(paths, (24, 24))
    assert failed == expected_failed == [len(pngs)]
    np.testing.assert_array_equal(images, expected)
    np.testing.assert_array_equal(again, expected[:2])


def test_reading_with_worker_processes_gives_the_same_result(tmp_path, monkeypatch):
    write_image_folder(tmp_path / "pets", per_class=10)
    (tmp_path / "pets" / "dog" / "broken.png").write_bytes(b"no png")
    serial = load_dataset(folder_cfg(tmp_path / "pets"))
    monkeypatch.setattr(data, "_worker_count", lambda count: 2)
    monkeypatch.setattr(data, "CHUNK_SIZE", 2)
    monkeypatch.setenv("CIFAR_STUDIO_CACHE_DIR", str(tmp_path / "other-cache"))
    events = []
    pooled = load_dataset(folder_cfg(tmp_path / "pets"), report=events.append)
    np.testing.assert_array_equal(pooled.x_train, serial.x_train)
    np.testing.assert_array_equal(pooled.y_train, serial.y_train)
    assert any(t.startswith("Skipped 1 file was") for t in texts(events))


@pytest.mark.parametrize("python", ["/no/such/python", "/bin/false"])
def test_workers_that_cannot_start_leave_the_work_to_this_process(tmp_path, monkeypatch, python):
    write_image_folder(tmp_path / "pets", per_class=4)
    monkeypatch.setattr(data, "_worker_count", lambda count: 2)
    monkeypatch.setattr(data, "CHUNK_SIZE", 2)
    monkeypatch.setattr(sys, "executable", python)
    ds = load_dataset(folder_cfg(tmp_path / "pets"))
    assert len(ds.y_train) == 12


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


# --- the folder cache --------------------------------------------------------------


def test_second_read_comes_from_the_cache_until_the_folder_changes(tmp_path):
    write_image_folder(tmp_path / "pets")
    cfg = folder_cfg(tmp_path / "pets")
    first_events, second_events = [], []
    first = load_dataset(cfg, report=first_events.append)
    assert any(t.startswith("Reading images") for t in texts(first_events))
    entries = os.listdir(tmp_path / "app-cache" / "datasets")
    assert len(entries) == 1
    assert os.path.isfile(tmp_path / "app-cache" / "datasets" / entries[0] / "x_train.npy")

    second = load_dataset(cfg, report=second_events.append)
    assert any("from the cache" in t for t in texts(second_events))
    assert not any(t.startswith("Reading images") for t in texts(second_events))
    np.testing.assert_array_equal(first.x_train, second.x_train)

    changed = solid((1, 250, 3))
    path = tmp_path / "pets" / "dog" / "000.png"
    write_image(str(path), changed, "PNG")
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 10**9))
    events = []
    third = load_dataset(cfg, report=events.append)
    assert not any("from the cache" in t for t in texts(events))
    assert index_by_pixels(third.x_train, third.y_train)[changed.tobytes()] == 1

    write_image(str(tmp_path / "pets" / "frog" / "new.png"), solid((5, 5, 5)), "PNG")
    events = []
    fourth = load_dataset(cfg, report=events.append)
    assert not any("from the cache" in t for t in texts(events))
    assert len(fourth.y_train) == 13


def test_cache_is_kept_per_image_size(tmp_path):
    write_image_folder(tmp_path / "pets")
    load_dataset(folder_cfg(tmp_path / "pets", image_size=32))
    load_dataset(folder_cfg(tmp_path / "pets", image_size=16))
    assert len(os.listdir(tmp_path / "app-cache" / "datasets")) == 2
    events = []
    ds = load_dataset(folder_cfg(tmp_path / "pets", image_size=16), report=events.append)
    assert ds.image_shape == (16, 16, 3) and any("from the cache" in t for t in texts(events))


# --- subsets and the validation split ------------------------------------------------


def test_subsets_and_validation_split_are_stratified(tmp_path):
    write_cifar_folder(tmp_path / "c")
    cfg = archive_cfg(tmp_path / "c", train_subset=40, test_subset=10, validation_split=0.25)
    ds = load_dataset(cfg)
    np.testing.assert_array_equal(ds.class_counts("test"), np.ones(10))
    np.testing.assert_array_equal(ds.class_counts("val"), np.ones(10))
    np.testing.assert_array_equal(ds.class_counts("train"), np.full(10, 3))
    train, val = index_by_pixels(ds.x_train, ds.y_train), index_by_pixels(ds.x_val, ds.y_val)
    assert not set(train) & set(val)
    assert ds.y_val.dtype == np.int64 and ds.x_val.dtype == np.uint8


def test_splits_are_deterministic_per_seed(tmp_path):
    write_cifar_folder(tmp_path / "c")
    a = load_dataset(archive_cfg(tmp_path / "c", train_subset=50, validation_split=0.2, seed=3))
    b = load_dataset(archive_cfg(tmp_path / "c", train_subset=50, validation_split=0.2, seed=3))
    c = load_dataset(archive_cfg(tmp_path / "c", train_subset=50, validation_split=0.2, seed=4))
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.x_val, b.x_val)
    assert set(index_by_pixels(a.x_val, a.y_val)) != set(index_by_pixels(c.x_val, c.y_val))
    assert len(a.y_train) == 40 and len(a.y_val) == 10


def test_validation_split_never_empties_a_class(tmp_path):
    root = tmp_path / "uneven"
    for label, count in enumerate((6, 3, 1)):
        for i in range(count):
            write_image(str(root / f"class{label}" / f"{i}.png"), solid((label * 50, i * 20, 0)), "PNG")
    ds = load_dataset(folder_cfg(root, validation_split=0.5))
    assert len(ds.y_val) == 5
    assert ds.class_counts("train").min() >= 1
    np.testing.assert_array_equal(ds.class_counts("train") + ds.class_counts("val"), [6, 3, 1])


def test_zero_validation_split_and_subset_larger_than_the_data(tmp_path):
    write_cifar_folder(tmp_path / "c")
    ds = load_dataset(archive_cfg(tmp_path / "c", train_subset=10_000, test_subset=10_000))
    assert len(ds.y_train) == 100 and len(ds.y_test) == 30 and len(ds.y_val) == 0


# --- bad input ---------------------------------------------------------------------


@pytest.mark.parametrize("make_cfg", [folder_cfg, archive_cfg])
def test_missing_path(tmp_path, make_cfg):
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(make_cfg(tmp_path / "nowhere"))


@pytest.mark.parametrize("make_cfg", [folder_cfg, archive_cfg])
def test_empty_path_setting(make_cfg):
    with pytest.raises(DatasetError, match="no .* chosen"):
        load_dataset(make_cfg(""))


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


def test_corrupt_tar_gz(tmp_path):
    (tmp_path / "junk.tar.gz").write_bytes(b"\x1f\x8b not really gzip" * 10)
    with pytest.raises(DatasetError, match="damaged or not a tar.gz"):
        load_dataset(archive_cfg(tmp_path / "junk.tar.gz"))


def test_truncated_tar_gz(tmp_path):
    path, _ = write_cifar_tar(tmp_path)
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])
    with pytest.raises(DatasetError, match="damaged or not a tar.gz"):
        load_dataset(archive_cfg(path))


def test_folder_that_is_not_cifar(tmp_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "hello.txt").write_text("hi")
    with pytest.raises(DatasetError, match="not a CIFAR-10 python folder"):
        load_dataset(archive_cfg(tmp_path / "other"))


def test_missing_batch_file(tmp_path):
    write_cifar_folder(tmp_path / "c")
    os.remove(tmp_path / "c" / "data_batch_4")
    with pytest.raises(DatasetError, match="data_batch_4 missing"):
        load_dataset(archive_cfg(tmp_path / "c"))


@pytest.mark.parametrize(
    "content, message",
    [
        (["a", "list"], "holds a list, not a dict"),
        ({b"data": [1, 2, 3], b"labels": [0]}, "needs 'data'"),
        ({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}, "expected uint8 \\(N, 3072\\)"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "2 images but 1 labels"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 12]}, "labels outside 0..9"),
    ],
)
def test_pickle_with_the_wrong_structure(tmp_path, content, message):
    write_cifar_folder(tmp_path / "c")
    with open(tmp_path / "c" / "data_batch_2", "wb") as f:
        pickle.dump(content, f)
    with pytest.raises(DatasetError, match=message):
        load_dataset(archive_cfg(tmp_path / "c"))


class RunsCode:
    """A pickle that would call os.getcwd on load if the reader allowed it."""

    def __reduce__(self):
        return (os.getcwd, ())


def test_pickle_naming_code_is_refused(tmp_path):
    write_cifar_folder(tmp_path / "c")
    with open(tmp_path / "c" / "test_batch", "wb") as f:
        pickle.dump({b"data": RunsCode(), b"labels": []}, f)
    with pytest.raises(DatasetError, match="test_batch could not be read.*posix.getcwd"):
        load_dataset(archive_cfg(tmp_path / "c"))


def test_unreadable_pickle(tmp_path):
    write_cifar_folder(tmp_path / "c")
    (tmp_path / "c" / "data_batch_1").write_bytes(b"\x80\x04 garbage")
    with pytest.raises(DatasetError, match="data_batch_1 could not be read"):
        load_dataset(archive_cfg(tmp_path / "c"))


def test_bad_options():
    with pytest.raises(DatasetError, match="validation split"):
        load_dataset(DatasetConfig(source="folder", path="x", validation_split=0.9))
    with pytest.raises(DatasetError, match="seed"):
        load_dataset(DatasetConfig(source="folder", path="x", seed=-1))
    with pytest.raises(DatasetError, match="unknown dataset source"):
        load_dataset(DatasetConfig(source="mnist"))


def test_class_counts_rejects_an_unknown_split(tmp_path):
    write_image_folder(tmp_path / "pets", per_class=1)
    with pytest.raises(ValueError):
        load_dataset(folder_cfg(tmp_path / "pets")).class_counts("training")


# --- CIFAR-10 through Keras' cache -------------------------------------------------


def keras_datasets(tmp_path):
    return tmp_path / "keras-home" / "datasets"


def test_cifar10_from_an_unpacked_keras_cache(tmp_path):
    arrays = write_cifar_folder(keras_datasets(tmp_path) / data.KERAS_CIFAR10_FOLDER / "cifar-10-batches-py")
    events = []
    ds = load_dataset(DatasetConfig(source="cifar10", validation_split=0.0), report=events.append)
    check_cifar(ds, arrays)
    assert ds.description == "CIFAR-10 (Keras download)"
    assert not [e for e in events if e.stage == "download"]


def test_cifar10_archive_in_the_keras_cache_is_unpacked_where_keras_looks(tmp_path):
    path, arrays = write_cifar_tar(tmp_path)
    keras_datasets(tmp_path).mkdir(parents=True)
    os.replace(path, keras_datasets(tmp_path) / data.KERAS_CIFAR10_ARCHIVE)
    events = []
    ds = load_dataset(DatasetConfig(source="cifar10", validation_split=0.0), report=events.append)
    check_cifar(ds, arrays)
    assert not [e for e in events if e.stage == "download"]
    unpacked = keras_datasets(tmp_path) / data.KERAS_CIFAR10_FOLDER / "cifar-10-batches-py"
    assert sorted(os.listdir(unpacked)) == sorted(data.CIFAR10_FILES)


def test_cifar10_download_failure_says_how_to_go_on(tmp_path):
    with pytest.raises(DatasetError) as caught:
        load_dataset(DatasetConfig(source="cifar10"))
    message = str(caught.value)
    assert "Downloading CIFAR-10 failed" in message
    assert "CIFAR-10 archive" in message and "image folder" in message
    assert not list(keras_datasets(tmp_path).iterdir())


def test_cifar10_download_reports_progress_and_fills_the_keras_cache(tmp_path, monkeypatch):
    path, arrays = write_cifar_tar(tmp_path)
    monkeypatch.setattr(data, "CIFAR10_URL", path.as_uri())
    monkeypatch.setattr(data, "CIFAR10_SHA256", hashlib.sha256(path.read_bytes()).hexdigest())
    events = []
    ds = load_dataset(DatasetConfig(source="cifar10", validation_split=0.0), report=events.append)
    check_cifar(ds, arrays)
    downloads = [e for e in events if e.stage == "download"]
    assert downloads[0].text == "Downloading CIFAR-10: 0%" and downloads[-1].fraction == 1.0
    assert (keras_datasets(tmp_path) / data.KERAS_CIFAR10_ARCHIVE).is_file()


def test_cifar10_download_with_a_wrong_checksum_is_discarded(tmp_path, monkeypatch):
    path, _ = write_cifar_tar(tmp_path)
    monkeypatch.setattr(data, "CIFAR10_URL", path.as_uri())
    with pytest.raises(DatasetError, match="damaged"):
        load_dataset(DatasetConfig(source="cifar10"))
    assert not list(keras_datasets(tmp_path).iterdir())


# --- Keras' own loaders (a fresh process, so KERAS_HOME applies) ----------------------


def write_idx(path, array):
    header = (b"\0\0\x08\x01" + len(array).to_bytes(4, "big")) if array.ndim == 1 else (
        b"\0\0\x08\x03" + b"".join(n.to_bytes(4, "big") for n in array.shape)
    )
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


def test_keras_sources_fashion_mnist_from_cache_and_cifar100_failure(tmp_path):
    folder = tmp_path / "keras-home" / "datasets" / "fashion-mnist"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, (20, 28, 28), dtype=np.uint8)
    x_test = rng.integers(0, 256, (10, 28, 28), dtype=np.uint8)
    write_idx(folder / "train-images-idx3-ubyte.gz", x_train)
    write_idx(folder / "train-labels-idx1-ubyte.gz", (np.arange(20) % 10).astype(np.uint8))
    write_idx(folder / "t10k-images-idx3-ubyte.gz", x_test)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", (np.arange(10) % 10).astype(np.uint8))
    script = textwrap.dedent(
        """
        import numpy as np
        from engine.config import DatasetConfig
        from engine.data import load_dataset
        from engine.errors import DatasetError
        ds = load_dataset(DatasetConfig(source="fashion_mnist", validation_split=0.0))
        print("fashion", ds.x_train.shape, ds.x_test.shape, ds.x_train.dtype, ds.y_train.dtype, ds.class_names[0])
        print("sum", int(ds.x_test.astype(np.int64).sum()))
        try:
            load_dataset(DatasetConfig(source="cifar100"))
        except DatasetError as exc:
            print("cifar100 error:", exc)
        """
    )
    env = dict(os.environ, PYTHONPATH=REPO, KERAS_HOME=str(tmp_path / "keras-home"),
               http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9",
               HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9", no_proxy="", NO_PROXY="",
               TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "fashion (20, 28, 28, 1) (10, 28, 28, 1) uint8 int64 T-shirt/top" in result.stdout
    assert f"sum {int(x_test.astype(np.int64).sum())}" in result.stdout
    assert "cifar100 error: Loading CIFAR-100 through Keras failed" in result.stdout
    assert "internet connection" in result.stdout


def test_class_name_lists():
    assert cifar10_class_names() == [
        "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"
    ]
    assert len(data._CIFAR100_CLASS_NAMES) == 100
    assert data._CIFAR100_CLASS_NAMES == sorted(data._CIFAR100_CLASS_NAMES)
    assert len(data._FASHION_MNIST_CLASS_NAMES) == 10
