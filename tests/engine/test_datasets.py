"""engine.datasets.load_dataset's options, and the subsets and validation split (splits)."""

from __future__ import annotations

import numpy as np
import pytest

from datasetfiles import (
    archive_cfg, folder_cfg, index_by_pixels, solid, write_cifar_folder, write_image, write_image_folder,
)
from engine.config import DatasetConfig
from engine.datasets import load_dataset
from engine.errors import DatasetError


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


@pytest.mark.parametrize("make_cfg", [folder_cfg, archive_cfg])
def test_missing_path(tmp_path, make_cfg):
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(make_cfg(tmp_path / "nowhere"))


@pytest.mark.parametrize("make_cfg", [folder_cfg, archive_cfg])
def test_empty_path_setting(make_cfg):
    with pytest.raises(DatasetError, match="no .* chosen"):
        load_dataset(make_cfg(""))


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
