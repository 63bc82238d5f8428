"""Faults of the run store: a damaged index, damaged run files, a store that
cannot be written, a folder deleted behind the index's back, a process that
is gone or whose pid was reused, and a run stuck "running".

Each case runs the real command line in-process on a store written through
RunStore, checks its one-line message, and that nothing else in the store
changed (every file compared byte for byte).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import cli
from engine.config import preset
from engine.errors import RunStoreError
from engine.runs import SCHEMA_VERSION, RunStore, process_start_time

FIXTURE = Path(__file__).parents[1] / "data" / "store_v1"
HISTORY_HEADER = "epoch,accuracy,loss,val_accuracy,val_loss,elapsed\r\n"
METRICS = {"split": "test", "images": 8, "accuracy": 0.75, "loss": 0.5, "top5_accuracy": 1.0,
           "macro": {"precision": 0.8, "recall": 0.75, "f1": 0.7},
           "per_class": [{"class": name, "precision": 0.8, "recall": 0.75, "f1": 0.7, "support": 4}
                         for name in ("cat", "dog")], "model_file": "model.h5"}


def make_store(root: Path, count: int = 3) -> list[str]:
    """`count` finished runs named run-0, run-1, ... with two epochs of history and metrics."""
    store = RunStore(root)
    ids = []
    for i in range(count):
        config = preset("Paper Table 1")
        config.name = f"run-{i}"
        record = store.create_run(config, params_total=1000 + i)
        for epoch in range(2):
            store.append_history(record.run_id, epoch, {"accuracy": 0.5 + epoch / 10, "loss": 1.0 - epoch / 10,
                                                        "val_accuracy": 0.4, "val_loss": 1.1}, epoch + 1.0)
        store.write_json(record.run_id, "metrics.json", METRICS)
        store.update(record.run_id, status="finished", epochs_done=2, test_accuracy=0.75, test_loss=0.5)
        ids.append(record.run_id)
    return ids


def snapshot(root: Path) -> dict[str, str]:
    """Every file of the store by its hash (SQLite's -wal/-shm files come and go with connections)."""
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*")) if path.is_file() and not path.name.endswith(("-wal", "-shm"))}


def run(capsys, root: Path, *argv: str) -> tuple[int, str, str]:
    code = cli.main(["--store", str(root), *argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line(text: str) -> str:
    """The one line of `text` (a message is never more, and never a traceback)."""
    lines = text.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


# -- 1. runs.db damaged past its header ---------------------------------------------------------------------------

def damage_a_row(root: Path) -> None:
    """Bytes inside run-1's row become ones that are not UTF-8: SQLite reads the header and passes its
    quick_check, but that row cannot be read."""
    data = bytearray((root / "runs.db").read_bytes())
    at = data.index(b"run-1")
    data[at:at + 5] = b"\xff\xfe\xff\xfe\xff"
    (root / "runs.db").write_bytes(data)


def damage_a_page(root: Path) -> None:
    """The second page (the table's b-tree) overwritten: 'database disk image is malformed'."""
    data = bytearray((root / "runs.db").read_bytes())
    page = 4096
    data[page:2 * page] = bytes(range(256)) * 16
    (root / "runs.db").write_bytes(data)


@pytest.mark.parametrize("damage", [damage_a_row, damage_a_page])
@pytest.mark.parametrize("command", ["runs", "show"])
def test_an_index_damaged_past_its_header_is_kept_aside_and_rebuilt(tmp_path, capsys, damage, command):
    root = tmp_path / "store"
    ids = make_store(root)
    assert not (root / "runs.db-wal").exists()  # everything is in runs.db itself
    damage(root)
    damaged = (root / "runs.db").read_bytes()
    folders = snapshot(root / "runs")

    code, out, err = run(capsys, root, *([command] if command == "runs" else [command, ids[1]]))
    assert code == 0
    notice = one_line(err)
    assert "runs.db could not be read" in notice and "rebuilt from 3 run folder(s)" in notice
    [kept] = root.glob("runs.db.damaged-*")
    assert kept.read_bytes() == damaged  # set aside as it was
    if command == "runs":
        assert all(run_id in out for run_id in ids) and "run-1" in out
    else:
        assert f"run {ids[1]}: run-1" in out and "0.6000" in out
    assert snapshot(root / "runs") == folders
    assert [r.params_total for r in RunStore(root).list_runs()] == [1000, 1001, 1002]


def test_an_index_damaged_while_the_store_is_open_is_rebuilt_on_the_next_read(tmp_path):
    root = tmp_path / "store"
    ids = make_store(root)
    store = RunStore(root)  # as the window holds it
    damage_a_row(root)
    assert [r.run_id for r in store.list_runs()] == ids
    assert any("runs.db could not be read" in notice for notice in store.notices)
    store.update(ids[0], name="renamed")  # and it is written as any other
    assert RunStore(root).get("renamed").run_id == ids[0]


# -- 2. a damaged history.csv or metrics.json ---------------------------------------------------------------------

HISTORIES = {
    "garbage lines": (HISTORY_HEADER + "0,0.5,1.0,0.4,1.1,1.0\r\n%%% garbage %%%\r\n1,0.6,0.9,0.4,1.1,2.0\r\n",
                      "line 3 has 1 of 6 cells", [0.5, 0.6]),
    "a truncated last line": (HISTORY_HEADER + "0,0.5,1.0,0.4,1.1,1.0\r\n1,0.6,0.9", "line 3 has 3 of 6 cells",
                              [0.5]),
    "a cell that is no number": (HISTORY_HEADER + "0,0.5,1.0,0.4,1.1,1.0\r\n1,0.6,lots,0.4,1.1,2.0\r\n",
                                 "line 3: loss is 'lots', not a number", [0.5, 0.6]),
    "bytes that are not UTF-8": (HISTORY_HEADER + "0,0.5,1.0,0.4,1.1,1.0\r\n1,\xe9,0.9,0.4,1.1,2.0\r\n",
                                 "is not UTF-8", [0.5, float("nan")]),
}


@pytest.mark.parametrize("case", list(HISTORIES))
def test_a_damaged_history_shows_what_can_be_read(tmp_path, capsys, case):
    text, problem, accuracy = HISTORIES[case]
    root = tmp_path / "store"
    ids = make_store(root, count=2)
    path = RunStore(root).run_dir(ids[0]) / "history.csv"
    path.write_bytes(text.encode("latin-1"))
    before = snapshot(root)

    code, out, err = run(capsys, root, "show", ids[0])
    assert code == 0 and err == "" and "test split, 8 images:" in out  # the metrics are shown too
    [line] = [line for line in out.splitlines() if line.startswith("damaged:")]
    assert f"{path} is damaged" in line and problem in line and "the file is left as it is" in line
    assert "    1       1.0000       0.5000" in out  # the readable epochs are shown
    code, out, _ = run(capsys, root, "runs")
    assert code == 0 and ids[0] in out

    store = RunStore(root)
    history, reported = store.read_history(ids[0])
    assert history["accuracy"] == pytest.approx(accuracy, nan_ok=True) and problem in reported
    assert store.history(ids[0])["epoch"] == history["epoch"] and reported in store.notices
    with pytest.raises(RunStoreError, match="history.csv is damaged.*not added"):
        store.append_history(ids[0], 2, {"accuracy": 0.7}, 3.0)
    assert snapshot(root) == before
    store.update(ids[0], status="stopped")  # resuming would write over it: refused
    with pytest.raises(RunStoreError, match="cannot be resumed.*history.csv is damaged"):
        store.reopen_run(ids[0])
    assert path.read_bytes() == text.encode("latin-1") and store.get(ids[0]).status == "stopped"


@pytest.mark.parametrize("text, problem", [('{"accuracy": 0.75, "loss', "not JSON"),
                                           ("[0.75, 0.5]", "it holds a list, not the metrics"),
                                           ('{"accuracy": 0.75}', "it has no 'split'")])
def test_a_damaged_metrics_json_is_named_and_the_rest_shown(tmp_path, capsys, text, problem):
    root = tmp_path / "store"
    ids = make_store(root, count=2)
    path = RunStore(root).run_dir(ids[0]) / "metrics.json"
    path.write_text(text)
    before = snapshot(root)

    code, out, err = run(capsys, root, "show", ids[0])
    assert code == 0 and err == ""
    [line] = [line for line in out.splitlines() if line.startswith("damaged:")]
    assert f"{path} is damaged" in line and problem in line and "evaluating the run again rewrites it" in line
    assert "    2       0.9000       0.6000" in out  # the history is still shown
    store = RunStore(root)
    if "split" not in problem:
        assert store.metrics(ids[0]) == {} and any("metrics.json is damaged" in n for n in store.notices)
    assert snapshot(root) == before


# -- 3. a store that cannot be written ----------------------------------------------------------------------------

@pytest.fixture
def make_read_only():
    """Make a folder and everything in it unwritable: chmod for a user, the immutable attribute for root
    (root writes through any mode); skipped where neither can be done. Undone after the test."""
    done = []

    def make(root: Path) -> None:
        if os.geteuid() != 0:
            for path in [root, *root.rglob("*")]:
                path.chmod(path.stat().st_mode & 0o555)
            done.append(("chmod", root))
            return
        if shutil.which("chattr") is None or subprocess.run(["chattr", "-R", "+i", str(root)],
                                                            capture_output=True).returncode != 0:
            pytest.skip("running as root, and chattr +i is not possible here: a read-only store cannot be made")
        done.append(("chattr", root))

    yield make
    for how, root in done:
        if how == "chattr":
            subprocess.run(["chattr", "-R", "-i", str(root)], check=True)
        else:
            for path in [root, *root.rglob("*")]:
                path.chmod(path.stat().st_mode | 0o200)


def test_a_read_only_store_is_listed_and_shown_and_refuses_writes(tmp_path, capsys, make_read_only):
    root = tmp_path / "store"
    ids = make_store(root, count=2)
    stuck = RunStore(root).create_run(preset("Paper Table 1"))
    RunStore(root).update(stuck.run_id, pid=2 ** 22 + 4321)  # its process is gone, but it cannot be marked
    with sqlite3.connect(root / "runs.db") as db:
        db.execute("UPDATE runs SET status = 'running' WHERE run_id = ?", (stuck.run_id,))
    before = snapshot(root)
    make_read_only(root)
    readonly = f"the store at {root} is read-only: listing only"

    code, out, err = run(capsys, root, "runs")
    assert code == 0 and readonly in one_line(err)
    assert all(run_id in out for run_id in ids) and "interrupted" in out
    code, out, err = run(capsys, root, "show", "run-1")
    assert code == 0 and readonly in one_line(err) and f"run {ids[1]}: run-1" in out and "0.6000" in out
    for argv, action in ((["rename", "run-1", "new"], "rename runs"), (["delete", "run-1"], "delete runs"),
                         (["runs", "--rebuild"], "rebuild its index")):
        code, _, err = run(capsys, root, *argv)
        assert code == 2 and f"error: the store at {root} is read-only: cannot {action}" in err.splitlines()[-1]
    store = RunStore(root)
    with pytest.raises(RunStoreError, match="read-only: cannot train a run"):
        store.create_run(preset("Paper Table 1"))
    with pytest.raises(RunStoreError, match="read-only: cannot write history.csv"):
        store.append_history(ids[0], 2, {"accuracy": 0.7}, 3.0)
    assert snapshot(root) == before


def test_a_read_only_store_of_an_old_version_is_listed_without_migrating(tmp_path, capsys, make_read_only):
    root = tmp_path / "store"
    shutil.copytree(FIXTURE, root)
    before = snapshot(root)
    make_read_only(root)
    code, out, err = run(capsys, root, "runs")
    assert code == 0 and "read-only: listing only" in one_line(err) and "fixture run" in out
    assert snapshot(root) == before  # no runs.db.v0.bak, no upgrade


# -- 4. a run folder deleted behind the index's back ---------------------------------------------------------------

def test_a_run_whose_folder_is_gone_is_left_out_said_and_removable(tmp_path, capsys):
    root = tmp_path / "store"
    ids = make_store(root)
    shutil.rmtree(root / "runs" / ids[1])
    before = snapshot(root)

    code, out, err = run(capsys, root, "runs")
    notice = one_line(err)
    assert code == 0 and f"whose folder is gone from {root / 'runs'}" in notice and ids[1] in notice
    assert ids[0] in out and ids[2] in out and ids[1] not in out
    code, out, err = run(capsys, root, "show", "run-1")
    assert code == 2 and f"its folder {root / 'runs' / ids[1]} is gone" in err.splitlines()[-1]
    assert snapshot(root) == before

    code, out, err = run(capsys, root, "delete", ids[1])
    assert code == 0 and f"run {ids[1]} (run-1) had no folder left" in out
    store = RunStore(root)
    assert [r.run_id for r in store.list_runs()] == [ids[0], ids[2]] and store.notices == []

    shutil.rmtree(root / "runs" / ids[2])  # and rebuilding drops such a row
    assert "rebuilt from 1 run folder(s)" in store.rebuild()
    with sqlite3.connect(root / "runs.db") as db:
        assert db.execute("SELECT run_id FROM runs").fetchall() == [(ids[0],)]


# -- 5. a process that is gone, also when its pid was reused ------------------------------------------------------

@pytest.fixture
def other_process():
    """A live process of this machine that is not a run's (its pid stands in for a reused one)."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process
    process.kill()
    process.wait()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process start times are read from /proc")
def test_a_run_whose_pid_was_reused_by_another_process_is_interrupted(tmp_path, other_process):
    store = RunStore(tmp_path)
    started = process_start_time(other_process.pid)
    assert abs(started - time.time()) < 60
    alive = store.create_run(preset("Paper Table 1"))
    reused = store.create_run(preset("Paper Table 1"))
    assert store.get(alive.run_id).pid_started == pytest.approx(process_start_time(os.getpid()))
    store.update(alive.run_id, pid=other_process.pid, pid_started=started)
    store.update(reused.run_id, pid=other_process.pid, pid_started=started - 1000)  # its process started earlier

    reopened = RunStore(tmp_path)
    assert reopened.get(alive.run_id).status == "running"
    assert reopened.still_training(reopened.get(alive.run_id)) == f"process {other_process.pid} on this machine"
    assert reopened.get(reused.run_id).status == "interrupted"
    with open(store.run_dir(reused.run_id) / "run.json") as handle:  # run.json carries it, for a rebuild
        assert '"pid_started": ' + repr(started - 1000) in handle.read()

    other_process.kill()  # a zombie (ended, not yet reaped) is gone too
    for _ in range(100):
        if Path(f"/proc/{other_process.pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z":
            break
        time.sleep(0.02)
    assert RunStore(tmp_path).get(alive.run_id).status == "interrupted"


def test_an_index_of_version_1_gains_the_start_time(tmp_path):
    ids = make_store(tmp_path, count=2)
    with sqlite3.connect(tmp_path / "runs.db") as db:
        db.execute("ALTER TABLE runs DROP COLUMN pid_started")
        db.execute("PRAGMA user_version = 1")
    store = RunStore(tmp_path)
    assert store.notices == [f"the run index was upgraded from version 1 to {SCHEMA_VERSION}; the old one is kept "
                             "as runs.db.v1.bak"]
    assert [(r.run_id, r.pid_started) for r in store.list_runs()] == [(ids[0], 0.0), (ids[1], 0.0)]
    assert store.get("run-1").params_total == 1001


# -- 6. delete --force -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["this machine", "another host"])
def test_a_stuck_running_run_is_deleted_only_with_force(tmp_path, capsys, other_process, where):
    root = tmp_path / "store"
    ids = make_store(root, count=2)
    store = RunStore(root)
    values = {"host": "elsewhere.example"} if where == "another host" else {}
    store.update(ids[0], status="running", pid=other_process.pid,
                 pid_started=process_start_time(other_process.pid), **values)
    before = snapshot(root)

    code, _, err = run(capsys, root, "delete", ids[0])
    message = one_line(err)
    assert code == 2 and "is still training" in message and f"`delete --force {ids[0]}`" in message
    assert ("elsewhere.example, which cannot be checked from here" in message) == (where == "another host")
    assert snapshot(root) == before

    code, out, err = run(capsys, root, "delete", "--force", ids[0])
    assert code == 0 and "--force: deleting it and its folder anyway" in out and f"deleted run {ids[0]}" in out
    assert not (root / "runs" / ids[0]).exists()
    assert [r.run_id for r in RunStore(root).list_runs()] == [ids[1]]
    assert {k: v for k, v in snapshot(root).items() if ids[1] in k} == {k: v for k, v in before.items() if ids[1] in k}
