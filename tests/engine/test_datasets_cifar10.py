"""engine.datasets.cifar10: the CIFAR-10 python archive as a tar.gz or a folder, and damaged ones."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from datasetfiles import archive_cfg, check_cifar, texts, write_cifar_folder, write_cifar_tar
from engine.datasets import cifar10_class_names, load_dataset
from engine.errors import DatasetError


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


def test_class_names():
    assert cifar10_class_names() == [
        "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"
    ]


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
