"""The run store: a SQLite index with a row per run, and a folder per run.

Layout under the store's root::

    runs.db                 the index (one row per run), schema version in PRAGMA user_version
    runs/<run_id>/
        config.json         the RunConfig
        run.json            the run's index row, so the index can be rebuilt from the folders
        history.csv         Keras CSVLogger's columns plus `elapsed`, one row per whole epoch
        metrics.json        metrics on the test split (or validation), per-class precision/recall/F1
        predictions.npz     confusion matrix; per image its index in the split, predicted class, top-k
                            and true-class probability; the evaluated images' fingerprint
        best.h5             the best model so far (written when it improves)
        last.keras          the model after the last whole epoch, optimizer state included (resuming)
        model.h5, model.keras   the final model
        tensorboard/        TensorBoard's event files, train/ and validation/, one scalar per metric and epoch

This module is the only writer of a run: the Trainer, its callbacks and the
evaluation hand it what to write. Every file is written to a temporary file
in the same folder and then renamed over the old one, so a kill at any
moment leaves either the previous file or the new one, never half of one.

A run is written as it goes: the row is created with status "running", the
history grows each epoch, the status is written last. A process that dies
mid-run leaves "running" behind with its pid; the next time the store is
opened, such a row whose process is gone is marked "interrupted".

The index is only an index: when runs.db is missing or cannot be read, it
is rebuilt from the folders (with a notice in `RunStore.notices`), and an
older runs.db is migrated to the current schema (a copy of the old one is
kept). A run id is only ever used as a folder name after it has been checked
against the pattern ids are made with, so a tampered index cannot point the
store at files outside its folder.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import re
import shutil
import socket
import sqlite3
import time
import uuid
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Iterator

from engine.config import RunConfig
from engine.errors import EngineError, RunStoreError
from engine.text import printable, valid_text

ENV_HOME = "CIFAR_STUDIO_HOME"

STATUSES = ("running", "finished", "stopped", "failed", "interrupted")

RUN_ID_PATTERN = re.compile(r"[0-9]{8}-[0-9]{6}-[0-9a-f]{6}")  # time.strftime("%Y%m%d-%H%M%S") + 6 hex digits
RUN_ID_FORMAT = "YYYYmmdd-HHMMSS-xxxxxx"

# The schema of runs.db. Version 0 is the unversioned index of the first
# releases; each migration brings the index one version up.
SCHEMA_VERSION = 1

# The files a kind of model is saved as, in this order (.keras first: see _save_keras_model).
MODEL_FILES = {"final": ("model.keras", "model.h5"), "best": ("best.h5",), "last": ("last.keras",)}
_MODEL_PATHS = {"h5": "model.h5", "keras": "model.keras", "best": "best.h5", "last": "last.keras"}
# Where a run's metrics come from: its final model, else (the run ended
# before saving one) its best checkpoint, else its last epoch.
_EVALUATION_ORDER = ("h5", "keras", "best", "last")
# What a resumed run no longer is: its final model and the evaluation of it (reopen_run removes them).
_FINAL_FILES = ("model.h5", "model.keras", "metrics.json", "predictions.npz")
_TEMP_MARK = ".tmp"


@dataclass
class RunRecord:
    """One row of the index."""

    run_id: str
    name: str = ""
    preset: str = ""
    model: str = ""
    dataset: str = ""
    status: str = "running"
    reason: str = ""
    created: float = 0.0
    finished: float = 0.0
    epochs: int = 0
    epochs_done: int = 0
    best_epoch: int = 0
    best_val_accuracy: float | None = None
    final_accuracy: float | None = None
    final_val_accuracy: float | None = None
    test_accuracy: float | None = None
    test_loss: float | None = None
    params_total: int = 0
    params_trainable: int = 0
    params_non_trainable: int = 0
    train_seconds: float = 0.0
    pid: int = 0
    host: str = ""
    evaluated_model: str = ""  # the model file metrics.json was computed with

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


_COLUMNS = [f.name for f in fields(RunRecord)]
_SQL_TYPES = {int: "INTEGER", float: "REAL", str: "TEXT"}


def default_root() -> Path:
    """CIFAR_STUDIO_HOME if set, else the platform's user data folder."""
    env = os.environ.get(ENV_HOME)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("cifar-studio", appauthor=False))


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _DamagedIndex(Exception):
    """runs.db exists but is not a readable index."""


class RunStore:
    """Index and folders of every run; safe to use from several threads
    (each call opens its own short-lived SQLite connection).

    `notices` collects what the store did on its own that the user should
    hear of (an index rebuilt or upgraded, rows it ignores); the CLI and the
    window show them.
    """

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root).expanduser() if root else default_root()
        self.runs_dir = self.root / "runs"
        self.index_path = self.root / "runs.db"
        self.notices: list[str] = []
        self._reported_foreign = False
        try:
            self.runs_dir.mkdir(parents=True, exist_ok=True)
            self._open_index()
        except (OSError, sqlite3.Error) as exc:
            raise RunStoreError(f"cannot open the run store at {self.root}: {exc}") from None
        self._mark_interrupted()

    # -- the index ---------------------------------------------------------

    @contextlib.contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """A connection in autocommit mode (transactions are explicit), closed after use."""
        db = sqlite3.connect(self.index_path, timeout=30, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            yield db
        finally:
            db.close()

    def _open_index(self) -> None:
        had_index = self.index_path.exists()
        try:
            created = self._prepare_index()
        except _DamagedIndex as exc:
            kept = self._set_aside_damaged_index()
            self._prepare_index()
            self.notices.append(self._rebuild(f"runs.db could not be read ({exc}); it was kept as {kept.name}"))
            return
        if created and self._run_folders():
            why = "runs.db was missing" if not had_index else "runs.db held no index"
            self.notices.append(self._rebuild(why))

    def _prepare_index(self) -> bool:
        """Create, check or migrate the index; True when the table had to be created."""
        try:
            with self._connection() as db:
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise RunStoreError(
                        f"{self.index_path} was made by a newer CIFAR Studio (index version {version}; this "
                        f"one reads up to version {SCHEMA_VERSION}); update CIFAR Studio to open this store")
                has_table = db.execute(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'runs'").fetchone()[0]
                if not has_table:
                    db.execute("BEGIN IMMEDIATE")
                    _create_table(db)
                    db.execute("COMMIT")
                    return True
                check = db.execute("PRAGMA quick_check").fetchone()[0]
                if check != "ok":
                    raise _DamagedIndex(check)
                if version < SCHEMA_VERSION:
                    self._migrate(db, version)
                missing = set(_COLUMNS) - {row[1] for row in db.execute("PRAGMA table_info(runs)")}
                if missing:
                    raise _DamagedIndex(f"its table has no column {', '.join(sorted(missing))}")
                return False
        except sqlite3.DatabaseError as exc:
            if getattr(exc, "sqlite_errorname", "") in ("SQLITE_CORRUPT", "SQLITE_NOTADB"):
                raise _DamagedIndex(str(exc)) from None
            raise

    def _migrate(self, db: sqlite3.Connection, version: int) -> None:
        backup = self.root / f"runs.db.v{version}.bak"
        with contextlib.closing(sqlite3.connect(backup)) as copy:
            db.backup(copy)
        db.execute("BEGIN IMMEDIATE")
        try:
            current = db.execute("PRAGMA user_version").fetchone()[0]  # another process may have migrated it
            while current < SCHEMA_VERSION:
                _MIGRATIONS[current](db)
                current += 1
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self.notices.append(f"the run index was upgraded from version {version} to {SCHEMA_VERSION}; "
                            f"the old one is kept as {backup.name}")

    def _set_aside_damaged_index(self) -> Path:
        """Move a damaged runs.db (and its WAL files) out of the way, keeping it."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        kept = self.root / f"runs.db.damaged-{stamp}"
        count = 1
        while kept.exists():
            count += 1
            kept = self.root / f"runs.db.damaged-{stamp}-{count}"
        for suffix in ("", "-wal", "-shm"):
            path = self.root / f"runs.db{suffix}"
            if path.exists():
                os.replace(path, kept.with_name(kept.name + suffix))
        return kept

    def _run_folders(self) -> list[Path]:
        return sorted(p for p in self.runs_dir.iterdir() if p.is_dir() and not p.name.startswith("."))

    def rebuild(self) -> str:
        """Re-create the index from the run folders and say what was done.

        A run the index already lists keeps its row; a folder it does not
        list gets a row from its files; a row whose folder is gone, or whose
        id this store never makes, is dropped. The text is also added to
        `notices`.
        """
        try:
            text = self._rebuild()
        except (OSError, sqlite3.Error) as exc:
            raise RunStoreError(f"cannot rebuild the run index at {self.root}: {exc}") from None
        self.notices.append(text)
        self._mark_interrupted()
        return text

    def _rebuild(self, why: str = "") -> str:
        try:
            known = {r.run_id: r for r in self._read_rows() if RUN_ID_PATTERN.fullmatch(str(r.run_id))}
        except (sqlite3.Error, TypeError):  # a table of another shape: made anew below
            known = {}
        records, skipped = [], []
        for folder in self._run_folders():
            record = None
            if RUN_ID_PATTERN.fullmatch(folder.name) and not folder.is_symlink():
                record = known.get(folder.name) or _record_from_folder(folder)
            if record is None:
                skipped.append(folder.name)
            else:
                records.append(record)
        with self._connection() as db:
            db.execute("BEGIN IMMEDIATE")
            db.execute("DROP TABLE IF EXISTS runs")
            _create_table(db)
            placeholders = ", ".join("?" for _ in _COLUMNS)
            db.executemany(f"INSERT INTO runs ({', '.join(_COLUMNS)}) VALUES ({placeholders})",
                           [[getattr(r, c) for c in _COLUMNS] for r in records])
            db.execute("COMMIT")
        text = f"the run index was rebuilt from {len(records)} run folder(s) in {self.runs_dir}"
        if why:
            text = f"{why}; {text}"
        if skipped:
            text += f"; left out {len(skipped)} folder(s) that are not readable runs: {', '.join(skipped[:5])}"
        return text

    def _mark_interrupted(self) -> None:
        host = socket.gethostname()
        for record in self.list_runs():
            if record.status == "running" and record.host == host and not _pid_alive(record.pid):
                self.update(record.run_id, status="interrupted",
                            reason="the process ended before the run finished")
                self._remove_leftovers(record.run_id)

    def _remove_leftovers(self, run_id: str) -> None:
        """Temporary files a killed process was writing (it can no longer finish them)."""
        for path in self.run_dir(run_id).glob(f".*{_TEMP_MARK}*"):
            path.unlink(missing_ok=True)

    def _read_rows(self) -> list[RunRecord]:
        with self._connection() as db:
            rows = db.execute(f"SELECT {', '.join(_COLUMNS)} FROM runs ORDER BY created").fetchall()
        return [RunRecord(**dict(zip(_COLUMNS, row))) for row in rows]

    # -- writing ---------------------------------------------------------

    def create_run(self, config: RunConfig, **values: Any) -> RunRecord:
        """Make the folder and the row; write config.json and run.json."""
        run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
        record = RunRecord(
            run_id=run_id,
            name=valid_text(config.name) or f"{config.model.architecture} {time.strftime('%Y-%m-%d %H:%M')}",
            preset=config.preset,
            model=config.model.architecture,
            dataset=valid_text(_dataset_label(config)),  # SQLite refuses a non-UTF-8 name's lone surrogates
            created=time.time(),
            epochs=config.training.epochs,
            pid=os.getpid(),
            host=socket.gethostname(),
        )
        unknown = set(values) - set(_COLUMNS)
        if unknown:
            raise ValueError(f"unknown run fields: {sorted(unknown)}")
        for key, value in values.items():
            setattr(record, key, value)
        folder = self.run_dir(run_id)
        try:
            folder.mkdir(parents=True)
            _write_atomically(folder / "config.json", lambda tmp: tmp.write_text(config.to_json()))
            with self._connection() as db:
                placeholders = ", ".join("?" for _ in _COLUMNS)
                db.execute(
                    f"INSERT INTO runs ({', '.join(_COLUMNS)}) VALUES ({placeholders})",
                    [getattr(record, c) for c in _COLUMNS],
                )
            self.write_json(run_id, "run.json", record.as_dict())
        except (OSError, sqlite3.Error) as exc:
            raise RunStoreError(f"cannot write the run store at {self.root}: {exc}") from None
        return record

    def update(self, run_id: str, **values: Any) -> None:
        """Set fields of a run's row (and its run.json)."""
        unknown = set(values) - set(_COLUMNS)
        if unknown:
            raise ValueError(f"unknown run fields: {sorted(unknown)}")
        if not values:
            return
        folder = self.run_dir(run_id)
        assignments = ", ".join(f"{key} = ?" for key in values)
        try:
            with self._connection() as db:
                cursor = db.execute(f"UPDATE runs SET {assignments} WHERE run_id = ?", [*values.values(), run_id])
                row = db.execute(f"SELECT {', '.join(_COLUMNS)} FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if cursor.rowcount == 0 or row is None:
                raise RunStoreError(f"no run with id '{run_id}'")
            if folder.is_dir():
                self.write_json(run_id, "run.json", dict(zip(_COLUMNS, row)))
        except (OSError, sqlite3.Error) as exc:
            raise RunStoreError(f"cannot write the run store at {self.root}: {exc}") from None

    def write_json(self, run_id: str, name: str, data: Any) -> None:
        """A JSON file (metrics.json, run.json) in the run's folder, atomically."""
        if not re.fullmatch(r"[A-Za-z0-9_-]+\.json", name):
            raise ValueError(f"{name!r} is not a plain .json file name")
        text = json.dumps(data, indent=2)
        _write_atomically(self.run_dir(run_id) / name, lambda tmp: tmp.write_text(text))

    def append_history(self, run_id: str, epoch: int, logs: dict[str, Any], elapsed: float) -> None:
        """Add one whole epoch to history.csv (epoch 0-based, `elapsed` the
        seconds since training started).

        The columns are Keras CSVLogger's: `epoch`, then the first epoch's
        metric names sorted (with `val_` twins when it had none, as
        CSVLogger adds them), "NA" where an epoch lacks one; then
        `elapsed`. The file is rewritten whole each time (a few hundred
        rows at most), so it is always complete.
        """
        path = self.run_dir(run_id) / "history.csv"
        old = path.read_bytes().decode() if path.exists() else ""
        header = next(csv.reader(io.StringIO(old)), None) if old else None
        if not header:
            keys = sorted(logs)
            if keys and not any(k.startswith("val_") for k in keys):
                keys += [f"val_{k}" for k in keys]
            header, old = ["epoch", *keys, "elapsed"], ""
        row = {"epoch": epoch, "elapsed": float(elapsed)}
        row.update((key, _csv_value(logs.get(key, "NA"))) for key in header if key not in row)
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=header, dialect=csv.excel, extrasaction="ignore")
        if not old:
            writer.writeheader()
        writer.writerow(row)
        text = old + out.getvalue()
        _write_atomically(path, lambda tmp: tmp.write_bytes(text.encode()))

    def truncate_history(self, run_id: str, epochs: int) -> None:
        """Keep only the first `epochs` rows of history.csv (resuming a run
        killed after it wrote an epoch's row but before its last.keras)."""
        path = self.run_dir(run_id) / "history.csv"
        lines = path.read_bytes().decode().splitlines(keepends=True)
        text = "".join(lines[:1 + epochs])
        _write_atomically(path, lambda tmp: tmp.write_bytes(text.encode()))

    def reopen_run(self, run_id: str) -> RunRecord:
        """A stopped or interrupted run trains again (resuming): "running"
        with this process's pid. Its final model and that model's
        evaluation are removed: they describe the run as it stood when it
        stopped, not the run it goes on to be (best.h5 and last.keras stay,
        so it can still be evaluated if it stops again)."""
        record = self.get(run_id)
        if record.status == "running" and record.pid != os.getpid() and _pid_alive(record.pid):
            raise RunStoreError(f"run '{printable(record.name)}' ({record.run_id}) is still training "
                                f"(process {record.pid}); stop it first")
        folder = self.run_dir(record.run_id)
        for name in _FINAL_FILES:
            (folder / name).unlink(missing_ok=True)
        self.update(record.run_id, status="running", reason="", finished=0.0, pid=os.getpid(),
                    host=socket.gethostname(), test_accuracy=None, test_loss=None, evaluated_model="")
        return self.get(record.run_id)

    def save_model(self, run_id: str, model, kind: str, class_names) -> list[Path]:
        """Save `model` as the run's final model ("final": model.keras and
        model.h5), its best checkpoint ("best": best.h5) or its last epoch
        ("last": last.keras, with the optimizer state), class names inside."""
        from engine.inference import write_class_names

        folder = self.run_dir(run_id)
        saved = []
        for name in MODEL_FILES[kind]:
            target = folder / name

            def write(tmp: Path) -> None:
                _save_keras_model(model, tmp)
                write_class_names(tmp, class_names)

            _write_atomically(target, write)
            saved.append(target)
        return saved

    def write_evaluation(self, run_id: str, evaluation, model_file: str) -> None:
        """predictions.npz, then metrics.json, then the index's test figures:
        a run with metrics.json has its predictions too. `model_file` names
        the file the model was evaluated from."""
        import numpy as np

        folder = self.run_dir(run_id)
        arrays = evaluation.arrays()
        _write_atomically(folder / "predictions.npz", lambda tmp: np.savez_compressed(tmp, **arrays))
        self.write_json(run_id, "metrics.json", {**evaluation.summary(), "model_file": model_file})
        self.update(run_id, test_accuracy=evaluation.accuracy, test_loss=evaluation.loss,
                    evaluated_model=model_file)

    # -- reading ---------------------------------------------------------

    def run_dir(self, run_id: str) -> Path:
        """The folder of a run, refused unless `run_id` has the form ids are
        made with and the folder lies inside this store."""
        if not isinstance(run_id, str) or not RUN_ID_PATTERN.fullmatch(run_id):
            raise RunStoreError(f"{run_id!r} is not a run id of this store (they look like {RUN_ID_FORMAT}); "
                                "refusing to touch files for it")
        folder = self.runs_dir / run_id
        if folder.is_symlink() or folder.resolve().parent != self.runs_dir.resolve():
            raise RunStoreError(f"the folder of run {run_id} is not inside {self.runs_dir}; refusing to touch it")
        return folder

    def tensorboard_dir(self, run_id: str) -> Path:
        """Where a run's TensorBoard logs go (`tensorboard --logdir` this
        folder, or the store's runs/ folder to see every run)."""
        return self.run_dir(run_id) / "tensorboard"

    def list_runs(self) -> list[RunRecord]:
        """Every run of the index, oldest first. Rows whose id this store
        never makes (a tampered index) are left out, with a notice."""
        try:
            rows = self._read_rows()
        except sqlite3.Error as exc:
            raise RunStoreError(f"cannot read the run index {self.index_path}: {exc}") from None
        records = [r for r in rows if isinstance(r.run_id, str) and RUN_ID_PATTERN.fullmatch(r.run_id)]
        if len(records) < len(rows) and not self._reported_foreign:
            self._reported_foreign = True
            foreign = [r.run_id for r in rows if r not in records]
            self.notices.append(
                f"runs.db lists {len(foreign)} run(s) with an id this store never makes (such as "
                f"{str(foreign[0])[:40]!r}); they are ignored, and rebuilding the index removes them")
        return records

    def get(self, run: str) -> RunRecord:
        """A run by its id, else by its name, else by a unique prefix of its
        id. A full id always wins over a name; a blank argument matches nothing."""
        key = valid_text(run).strip() if isinstance(run, str) else ""  # a name typed as it was stored
        if not key:
            raise RunStoreError("no run given: name a run by its id or name (see the 'runs' command)")
        runs = self.list_runs()
        for matches, many in (
            ([r for r in runs if r.run_id == key], ""),
            ([r for r in runs if (r.name or "").strip() == key], "names {n} runs; give the id instead"),
            ([r for r in runs if r.run_id.startswith(key)], "matches {n} runs; give more of the id"),
        ):
            if len(matches) == 1:
                return matches[0]
            if matches:
                raise RunStoreError(f"'{printable(key)}' {many.format(n=len(matches))}")
        raise RunStoreError(f"no run '{printable(key)}' in {self.root} (see the 'runs' command)")

    def config(self, run_id: str) -> RunConfig:
        path = self.run_dir(self.get(run_id).run_id) / "config.json"
        try:
            return RunConfig.from_json(path.read_text())
        except OSError as exc:
            raise RunStoreError(f"cannot read {path}: {exc.strerror}") from None

    def history(self, run_id: str) -> dict[str, list[float]]:
        """The run's history.csv as a Keras History-style dict of lists
        ("NA" and empty cells as NaN)."""
        return _read_history(self.run_dir(self.get(run_id).run_id) / "history.csv")

    def metrics(self, run_id: str) -> dict[str, Any]:
        path = self.run_dir(self.get(run_id).run_id) / "metrics.json"
        if not path.exists():
            return {}
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise RunStoreError(f"cannot read {path}: {exc}") from None

    def predictions(self, run_id: str) -> dict[str, Any]:
        import numpy as np

        path = self.run_dir(self.get(run_id).run_id) / "predictions.npz"
        if not path.exists():
            return {}
        try:
            with np.load(path, allow_pickle=False) as data:
                return {key: data[key] for key in data.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise RunStoreError(f"cannot read {path}: {exc}") from None

    def model_path(self, run_id: str, kind: str = "h5") -> Path:
        """The final model (kind "h5" or "keras"), the best checkpoint
        ("best") or the model after the last whole epoch ("last")."""
        return self.run_dir(self.get(run_id).run_id) / _MODEL_PATHS[kind]

    def evaluation_model(self, run_id: str) -> Path:
        """The model file a run is evaluated from: its final model, or where
        the run ended before saving one (interrupted), its best checkpoint,
        else its last epoch."""
        record = self.get(run_id)
        for kind in _EVALUATION_ORDER:
            path = self.model_path(record.run_id, kind)
            if path.exists():
                return path
        raise RunStoreError(f"run '{record.name}' ({record.run_id}) has no saved model to evaluate: "
                            "it ended before its first whole epoch")

    # -- editing ---------------------------------------------------------

    def rename(self, run_id: str, name: str) -> None:
        name = valid_text(name).strip()
        if not name:
            raise RunStoreError("a run's name cannot be empty")
        self.update(self.get(run_id).run_id, name=name)

    def delete(self, run_id: str) -> None:
        record = self.get(run_id)
        folder = self.run_dir(record.run_id)
        if record.status == "running" and _pid_alive(record.pid):
            raise RunStoreError(f"run '{record.name}' is still training; stop it first")
        shutil.rmtree(folder, ignore_errors=True)
        if folder.exists():
            raise RunStoreError(f"could not delete all of {folder}; the run is kept in the index")
        with self._connection() as db:
            db.execute("DELETE FROM runs WHERE run_id = ?", (record.run_id,))


def _create_table(db: sqlite3.Connection) -> None:
    """The index's table at the current schema version."""
    columns = ", ".join(f"{f.name} {'TEXT PRIMARY KEY' if f.name == 'run_id' else _sql_type(f)}"
                        for f in fields(RunRecord))
    db.execute(f"CREATE TABLE IF NOT EXISTS runs ({columns})")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _add_evaluated_model(db: sqlite3.Connection) -> None:
    """0 -> 1: which model file the metrics came from (until now always the final model)."""
    db.execute("ALTER TABLE runs ADD COLUMN evaluated_model TEXT DEFAULT ''")
    db.execute("UPDATE runs SET evaluated_model = 'model.h5' WHERE test_accuracy IS NOT NULL")


_MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {0: _add_evaluated_model}


def _write_atomically(target: Path, write: Callable[[Path], None]) -> None:
    """`write` a temporary file next to `target` (same suffix, so Keras and
    numpy keep the name), flush it to disk, then rename it over `target`."""
    tmp = target.with_name(f".{target.name}{_TEMP_MARK}{target.suffix}")
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise RunStoreError(f"cannot write {target}: {exc.strerror or exc}") from None
        raise


def _save_keras_model(model, path: Path) -> None:
    """model.save, leaving the model as it was.

    Keras' .h5 writer pops the optimizer out of the model's compile config
    (keras#23475), so every .keras saved after it would lose the optimizer
    and its state; the entry is put back.
    """
    compile_config = getattr(getattr(model, "_compile_config", None), "config", None)
    optimizer = compile_config.get("optimizer") if isinstance(compile_config, dict) else None
    try:
        model.save(path)
    finally:
        if optimizer is not None:
            compile_config.setdefault("optimizer", optimizer)


def _csv_value(value: Any) -> Any:
    """A cell as CSVLogger writes it."""
    if isinstance(value, str):
        return value
    if hasattr(value, "__len__") and getattr(value, "ndim", 1) != 0:
        return f'"[{", ".join(map(str, value))}]"'
    return float(value)


def _read_history(path: Path) -> dict[str, list[float]]:
    if not path.exists():
        return {}
    try:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, csv.Error) as exc:
        raise RunStoreError(f"cannot read {path}: {exc}") from None
    history: dict[str, list[float]] = {}
    for row in rows:
        for key, value in row.items():
            history.setdefault(key, []).append(_number(value))
    return history


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _record_from_folder(folder: Path) -> RunRecord | None:
    """A run's row from its files: run.json where the run has one, else
    what config.json, history.csv, metrics.json and the model files say."""
    try:
        saved = json.loads((folder / "run.json").read_text())
        values = {f.name: _typed(f, saved[f.name]) for f in fields(RunRecord)
                  if f.name in saved and f.name != "run_id"}
        return RunRecord(run_id=folder.name, **values)
    except (OSError, ValueError, TypeError, AttributeError):
        pass
    try:
        config = RunConfig.from_json((folder / "config.json").read_text())
    except (OSError, ValueError, TypeError, KeyError, AttributeError, EngineError):
        return None
    created = time.mktime(time.strptime(folder.name[:15], "%Y%m%d-%H%M%S"))
    record = RunRecord(
        run_id=folder.name,
        name=(valid_text(config.name)
              or f"{config.model.architecture} {time.strftime('%Y-%m-%d %H:%M', time.localtime(created))}"),
        preset=config.preset, model=config.model.architecture, dataset=_dataset_label(config),
        created=created, epochs=config.training.epochs, reason="rebuilt from the run's folder",
    )
    try:
        history = _read_history(folder / "history.csv")
    except RunStoreError:
        history = {}
    record.epochs_done = len(history.get("epoch", []))
    validated = any(math.isfinite(v) for v in history.get("val_accuracy", []))
    monitored = history.get("val_accuracy" if validated else "accuracy", [])
    finite = [(v, i) for i, v in enumerate(monitored) if math.isfinite(v)]
    if finite:
        best, index = max(finite, key=lambda pair: (pair[0], -pair[1]))
        record.best_epoch = index + 1
        record.best_val_accuracy = best if validated else None
    record.final_accuracy = _finite((history.get("accuracy") or [None])[-1])
    record.final_val_accuracy = _finite((history.get("val_accuracy") or [None])[-1])
    record.train_seconds = _finite((history.get("elapsed") or [None])[-1]) or 0.0
    try:
        metrics = json.loads((folder / "metrics.json").read_text())
        record.test_accuracy, record.test_loss = float(metrics["accuracy"]), float(metrics["loss"])
        record.evaluated_model = str(metrics.get("model_file", "model.h5"))
    except (OSError, ValueError, TypeError, KeyError):
        pass
    final = folder / "model.h5"
    if final.exists():
        complete = record.epochs_done >= record.epochs or config.training.early_stopping
        record.status = "finished" if complete else "stopped"
        record.finished = final.stat().st_mtime
    else:
        record.status = "interrupted"
        record.reason = "rebuilt from the run's folder; the run never saved its final model"
    return record


def _typed(field_, value: Any) -> Any:
    """A value from run.json as the field's type (metrics may be None)."""
    kind = type(field_.default)
    if field_.default is None:
        return None if value is None else float(value)
    if kind is str:
        if not isinstance(value, str):
            raise TypeError(f"{field_.name} is not text")
        return value
    return kind(value)


def _sql_type(field_) -> str:
    """SQLite type from the field's default (None defaults are metrics: REAL)."""
    return _SQL_TYPES.get(type(field_.default), "REAL")


def _dataset_label(config: RunConfig) -> str:
    d = config.dataset
    if d.path:
        return f"{d.source}:{Path(d.path).name}"
    return d.source
