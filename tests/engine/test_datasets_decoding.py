"""engine.datasets.decoding: worker processes decode exactly as this process does."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from datasetfiles import folder_cfg, texts, write_image_folder
from engine.datasets import decoding, load_dataset


def test_a_decode_worker_process_decodes_like_this_process(tmp_path):
    pngs = write_image_folder(tmp_path / "pets", per_class=4)
    (tmp_path / "broken.png").write_bytes(b"no png")
    paths = sorted(pngs) + [str(tmp_path / "broken.png")] + [str(p) for p in sorted((tmp_path / "pets").rglob("*.jpg"))]
    worker = decoding.DecodeWorker()
    try:
        images, failed = worker.decode(paths, (24, 24))
        again, _ = worker.decode(paths[:2], (24, 24))
    finally:
        worker.close()
    expected, expected_failed = decoding.decode_chunk(paths, (24, 24))
    assert failed == expected_failed == [len(pngs)]
    np.testing.assert_array_equal(images, expected)
    np.testing.assert_array_equal(again, expected[:2])


def test_reading_with_worker_processes_gives_the_same_result(tmp_path, monkeypatch):
    write_image_folder(tmp_path / "pets", per_class=10)
    (tmp_path / "pets" / "dog" / "broken.png").write_bytes(b"no png")
    serial = load_dataset(folder_cfg(tmp_path / "pets"))
    monkeypatch.setattr(decoding, "worker_count", lambda count: 2)
    monkeypatch.setattr(decoding, "CHUNK_SIZE", 2)
    monkeypatch.setenv("CIFAR_STUDIO_CACHE_DIR", str(tmp_path / "other-cache"))
    events = []
    pooled = load_dataset(folder_cfg(tmp_path / "pets"), report=events.append)
    np.testing.assert_array_equal(pooled.x_train, serial.x_train)
    np.testing.assert_array_equal(pooled.y_train, serial.y_train)
    assert any(t.startswith("Skipped 1 file was") for t in texts(events))


@pytest.mark.parametrize("python", ["/no/such/python", "/bin/false"])
def test_workers_that_cannot_start_leave_the_work_to_this_process(tmp_path, monkeypatch, python):
    write_image_folder(tmp_path / "pets", per_class=4)
    monkeypatch.setattr(decoding, "worker_count", lambda count: 2)
    monkeypatch.setattr(decoding, "CHUNK_SIZE", 2)
    monkeypatch.setattr(sys, "executable", python)
    ds = load_dataset(folder_cfg(tmp_path / "pets"))
    assert len(ds.y_train) == 12


def test_small_folders_are_decoded_without_workers():
    assert decoding.worker_count(decoding.POOL_MIN_IMAGES - 1) == 0
