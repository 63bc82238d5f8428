"""The run store: a real SQLite file and real run folders."""

import sqlite3

import pytest

from engine.config import preset
from engine.errors import RunStoreError
from engine.runs import RunStore


def test_create_list_read_rename_delete(tmp_path):
    store = RunStore(tmp_path)
    config = preset("Paper Table 1")
    config.name = "first"
    record = store.create_run(config, params_total=123210)
    (store.run_dir(record.run_id) / "history.csv").write_text("epoch,accuracy,loss\n0,0.5,1.2\n1,0.6,1.0\n")
    store.update(record.run_id, status="finished", test_accuracy=0.7)

    reopened = RunStore(tmp_path)
    [row] = reopened.list_runs()
    assert (row.name, row.status, row.test_accuracy, row.params_total) == ("first", "finished", 0.7, 123210)
    assert reopened.config(row.run_id) == config
    assert reopened.history(row.run_id) == {"epoch": [0.0, 1.0], "accuracy": [0.5, 0.6], "loss": [1.2, 1.0]}
    assert reopened.get("first").run_id == row.run_id  # by name
    assert reopened.get(row.run_id[:17]).run_id == row.run_id  # by prefix

    reopened.rename(row.run_id, "renamed")
    assert RunStore(tmp_path).get(row.run_id).name == "renamed"
    with sqlite3.connect(tmp_path / "runs.db") as db:
        assert db.execute("SELECT name FROM runs").fetchall() == [("renamed",)]

    reopened.delete(row.run_id)
    assert RunStore(tmp_path).list_runs() == []
    assert not store.run_dir(row.run_id).exists()


def test_unknown_run_and_empty_name_are_clear_errors(tmp_path):
    store = RunStore(tmp_path)
    with pytest.raises(RunStoreError, match="no run 'nope'"):
        store.get("nope")
    record = store.create_run(preset("Paper Table 1"))
    with pytest.raises(RunStoreError, match="cannot be empty"):
        store.rename(record.run_id, "  ")


def test_a_running_row_whose_process_is_gone_becomes_interrupted(tmp_path):
    store = RunStore(tmp_path)
    record = store.create_run(preset("Paper Table 1"))
    store.update(record.run_id, pid=2**22 + 12345)  # no such process
    assert RunStore(tmp_path).get(record.run_id).status == "interrupted"


def test_default_location_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CIFAR_STUDIO_HOME", str(tmp_path / "home"))
    assert RunStore().root == tmp_path / "home"
    assert (tmp_path / "home" / "runs.db").exists()


def test_an_unwritable_location_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(RunStoreError, match="cannot open the run store"):
        RunStore(blocker / "store")
