"""engine.datasets.cache: a folder read twice comes from the cache, until its files change."""

from __future__ import annotations

import os

import numpy as np
import pytest

from datasetfiles import folder_cfg, index_by_pixels, solid, texts, write_image, write_image_folder
from engine.datasets import cache_dir, load_dataset


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CIFAR_STUDIO_CACHE_DIR", str(tmp_path / "app-cache"))


def test_cache_dir_follows_the_environment(tmp_path):
    assert cache_dir() == str(tmp_path / "app-cache" / "datasets")


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


def test_skipped_files_are_reported_again_from_the_cache(tmp_path):
    write_image_folder(tmp_path / "pets", per_class=2)
    (tmp_path / "pets" / "dog" / "broken.jpg").write_bytes(b"this is no jpeg")
    load_dataset(folder_cfg(tmp_path / "pets"))
    events = []
    ds = load_dataset(folder_cfg(tmp_path / "pets"), report=events.append)
    assert len(ds.y_train) == 6 and any("from the cache" in t for t in texts(events))
    assert any(t.startswith("Skipped 1 file was") and "broken.jpg" in t for t in texts(events))
