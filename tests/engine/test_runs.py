"""The run store: a real SQLite file and real run folders."""

import math
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from engine.config import preset
from engine.errors import RunStoreError
from engine.runs import SCHEMA_VERSION, RunStore


def test_create_list_read_rename_delete(tmp_path):
    store = RunStore(tmp_path)
    config = preset("Paper Table 1")
    config.name = "first"
    record = store.create_run(config, params_total=123210)
    store.append_history(record.run_id, 0, {"accuracy": 0.5, "loss": 1.2, "val_accuracy": 0.4}, 1.0)
    store.append_history(record.run_id, 1, {"accuracy": 0.6, "loss": 1.0, "val_accuracy": 0.5}, 2.0)
    store.update(record.run_id, status="finished", test_accuracy=0.7)

    reopened = RunStore(tmp_path)
    [row] = reopened.list_runs()
    assert (row.name, row.status, row.test_accuracy, row.params_total) == ("first", "finished", 0.7, 123210)
    assert reopened.config(row.run_id) == config
    assert reopened.history(row.run_id) == {"epoch": [0.0, 1.0], "accuracy": [0.5, 0.6], "loss": [1.2, 1.0],
                                            "val_accuracy": [0.4, 0.5], "elapsed": [1.0, 2.0]}
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


FIXTURE = Path(__file__).parents[1] / "data" / "store_v1"


def copy_of_fixture(tmp_path):
    """tests/data/store_v1 as CIFAR Studio wrote it before runs.db had a
    version (one finished run, its model files left out to keep it small)."""
    root = tmp_path / "store"
    shutil.copytree(FIXTURE, root)
    return root


def test_the_store_made_before_versions_opens_upgraded(tmp_path):
    root = copy_of_fixture(tmp_path)
    with sqlite3.connect(root / "runs.db") as db:
        assert db.execute("PRAGMA user_version").fetchone() == (0,)
        assert "evaluated_model" not in {row[1] for row in db.execute("PRAGMA table_info(runs)")}

    store = RunStore(root)
    assert any("upgraded from version 0" in notice for notice in store.notices)
    [record] = store.list_runs()
    assert (record.run_id, record.name, record.status) == ("20261201-224448-81b959", "fixture run", "finished")
    assert (record.epochs_done, record.test_accuracy, record.evaluated_model) == (2, 1.0, "model.h5")
    assert store.get("fixture run").run_id == record.run_id
    assert store.config(record.run_id).training.epochs == 2
    assert store.history(record.run_id)["val_loss"] == pytest.approx([1.2621071338653564, 1.1971347332000732])
    assert store.metrics(record.run_id)["images"] == 16
    with sqlite3.connect(root / "runs.db") as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    with sqlite3.connect(root / "runs.db.v0.bak") as db:  # the old index is kept as it was
        assert db.execute("PRAGMA user_version").fetchone() == (0,)
        assert db.execute("SELECT name FROM runs").fetchall() == [("fixture run",)]

    store.update(record.run_id, name="renamed")  # the upgraded index is written as any other
    reopened = RunStore(root)
    assert reopened.notices == [] and reopened.get("renamed").run_id == record.run_id


def test_a_store_from_a_newer_version_is_a_clear_error(tmp_path):
    RunStore(tmp_path).create_run(preset("Paper Table 1"))
    with sqlite3.connect(tmp_path / "runs.db") as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(RunStoreError, match="made by a newer CIFAR Studio"):
        RunStore(tmp_path)


def make_runs(store):
    """Two runs written through the store: one finished with a history and
    metrics, one renamed and still marked running by a process that is gone."""
    first = store.create_run(preset("Paper Table 1"), params_total=123210)
    for epoch in range(3):
        store.append_history(first.run_id, epoch, {"accuracy": 0.5 + epoch / 10, "loss": 1.0 - epoch / 10,
                                                   "val_accuracy": 0.4 + epoch / 10, "val_loss": 1.1}, epoch + 1.5)
    store.write_json(first.run_id, "metrics.json", {"accuracy": 0.7, "loss": 0.9, "model_file": "model.h5"})
    store.update(first.run_id, status="finished", epochs_done=3, test_accuracy=0.7, test_loss=0.9)
    second = store.create_run(preset("Paper Table 1"))
    store.rename(second.run_id, "second")
    store.update(second.run_id, pid=2**22 + 12345)
    return first.run_id, second.run_id


def rows(store):
    return {r.run_id: r for r in store.list_runs()}


def test_a_missing_index_is_rebuilt_from_the_run_folders(tmp_path):
    make_runs(RunStore(tmp_path))
    before = rows(RunStore(tmp_path))  # the second run is now "interrupted"
    for name in ("runs.db", "runs.db-wal", "runs.db-shm"):
        (tmp_path / name).unlink(missing_ok=True)

    store = RunStore(tmp_path)
    assert len(store.notices) == 1 and "runs.db was missing" in store.notices[0]
    assert "rebuilt from 2 run folder(s)" in store.notices[0]
    assert rows(store) == before  # run.json keeps every field, the name given later too


def test_a_garbage_index_is_kept_aside_and_rebuilt(tmp_path):
    first, second = make_runs(RunStore(tmp_path))
    for name in ("runs.db-wal", "runs.db-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    (tmp_path / "runs.db").write_bytes(os.urandom(8192))

    store = RunStore(tmp_path)
    [notice] = store.notices
    assert "runs.db could not be read" in notice and "rebuilt from 2 run folder(s)" in notice
    assert [p.name for p in tmp_path.glob("runs.db.damaged-*")]
    assert store.get("second").run_id == second and store.get(first).test_accuracy == 0.7

    with sqlite3.connect(tmp_path / "runs.db") as db:  # a readable database, but not an index of runs
        db.executescript("DROP TABLE runs; CREATE TABLE runs (run_id TEXT, colour TEXT)")
    store = RunStore(tmp_path)
    assert "has no column" in store.notices[0] and len(store.list_runs()) == 2
    kept = [p for p in tmp_path.glob("runs.db.damaged-*") if not p.name.endswith(("-wal", "-shm"))]
    assert len(kept) == 2  # each damaged index is kept (with its WAL files, if any)


def test_the_old_store_is_rebuilt_from_its_files_without_run_json(tmp_path):
    root = copy_of_fixture(tmp_path)
    (root / "runs.db").unlink()
    store = RunStore(root)
    assert "runs.db was missing" in store.notices[0]
    [record] = store.list_runs()
    assert (record.name, record.model, record.epochs, record.epochs_done) == ("fixture run", "simcnn", 2, 2)
    assert (record.best_epoch, record.best_val_accuracy, record.final_accuracy) == (1, 1.0, 1.0)
    assert (record.test_accuracy, record.evaluated_model) == (1.0, "model.h5")
    assert record.status == "interrupted"  # the fixture has no model.h5: the run never saved its final model


def test_rebuild_on_request_adds_folders_and_drops_rows_without_one(tmp_path):
    store = RunStore(tmp_path)
    first, second = make_runs(store)
    shutil.rmtree(store.run_dir(second))
    shutil.copytree(next((FIXTURE / "runs").iterdir()), store.runs_dir / "20261201-224448-81b959")
    (store.runs_dir / "not-a-run").mkdir()

    text = store.rebuild()
    assert "rebuilt from 2 run folder(s)" in text and "not-a-run" in text and text in store.notices
    assert sorted(rows(store)) == sorted([first, "20261201-224448-81b959"])
    assert store.get(first).params_total == 123210  # a listed run keeps its row


def test_history_has_csvloggers_columns_and_elapsed(tmp_path):
    store = RunStore(tmp_path)
    record = store.create_run(preset("Paper Table 1"))
    store.append_history(record.run_id, 0, {"loss": 1.5, "accuracy": 0.25}, 2.0)  # no validation
    store.append_history(record.run_id, 1, {"loss": 1.25, "accuracy": 0.5}, 3.5)
    path = store.run_dir(record.run_id) / "history.csv"
    assert path.read_bytes() == (b"epoch,accuracy,loss,val_accuracy,val_loss,elapsed\r\n"
                                 b"0,0.25,1.5,NA,NA,2.0\r\n1,0.5,1.25,NA,NA,3.5\r\n")
    history = store.history(record.run_id)
    assert history["elapsed"] == [2.0, 3.5] and math.isnan(history["val_loss"][1])


def test_a_full_id_wins_over_a_name_and_a_name_over_a_prefix(tmp_path):
    store = RunStore(tmp_path)
    first = store.create_run(preset("Paper Table 1"))
    impostor = store.create_run(preset("Paper Table 1"))
    store.rename(impostor.run_id, first.run_id)
    assert store.get(first.run_id).run_id == first.run_id
    store.rename(impostor.run_id, first.run_id[:10])
    assert store.get(first.run_id[:10]).run_id == impostor.run_id
    assert store.get(impostor.run_id[:-1]).run_id == impostor.run_id  # a unique prefix
    with pytest.raises(RunStoreError, match="matches 2 runs"):
        store.get(first.run_id[:8])


@pytest.mark.parametrize("blank", ["", "   ", "\t"])
def test_a_blank_run_matches_nothing(tmp_path, blank):
    store = RunStore(tmp_path)
    store.create_run(preset("Paper Table 1"))
    with pytest.raises(RunStoreError, match="no run given"):
        store.get(blank)


@pytest.mark.parametrize("tampered", ["../../victim", "{victim}", "20261201-224448-81b959/../../../victim"])
def test_a_tampered_run_id_cannot_reach_outside_the_store(tmp_path, tampered):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")
    tampered = tampered.format(victim=victim)
    store = RunStore(tmp_path / "store")
    record = store.create_run(preset("Paper Table 1"))
    with sqlite3.connect(tmp_path / "store" / "runs.db") as db:
        db.execute("UPDATE runs SET run_id = ?, name = 'tampered'", (tampered,))

    store = RunStore(tmp_path / "store")
    assert store.list_runs() == [] and "an id this store never makes" in store.notices[0]
    for action in (store.get, store.delete, store.history, store.config, store.metrics, store.evaluation_model):
        with pytest.raises(RunStoreError):
            action(tampered)
        with pytest.raises(RunStoreError):
            action("tampered")
    for call in (lambda: store.run_dir(tampered), lambda: store.update(tampered, status="failed"),
                 lambda: store.write_json(tampered, "metrics.json", {})):
        with pytest.raises(RunStoreError, match="not a run id of this store"):
            call()
    assert (victim / "precious.txt").read_text() == "keep me"
    assert store.run_dir(record.run_id).exists()  # the real folder is left alone too


def test_a_run_folder_that_links_outside_the_store_is_refused(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")
    store = RunStore(tmp_path / "store")
    record = store.create_run(preset("Paper Table 1"))
    store.update(record.run_id, status="finished")
    shutil.rmtree(store.runs_dir / record.run_id)
    (store.runs_dir / record.run_id).symlink_to(victim, target_is_directory=True)
    with pytest.raises(RunStoreError, match="not inside"):
        store.delete(record.run_id)
    assert (victim / "precious.txt").read_text() == "keep me"
