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
mid-run leaves "running" behind with its pid and the time that process
started; the next time the store is opened, such a row whose process is gone
is marked "interrupted" (a live process with that pid but another start time
got the pid after it: the run's process is gone too).

The index is only an index: when runs.db is missing or cannot be read (a bad
header, a damaged page or row found when it is opened or read), it is set
aside and rebuilt from the folders (with a notice in `RunStore.notices`), an
older runs.db is migrated to the current schema (a copy of the old one is
kept), and a row whose folder is gone is left out with a notice. A store
that cannot be written (a read-only folder) is listed from its index and
folders without writing anything; whatever would write says so. A damaged
history.csv or metrics.json gives what can still be read, with a notice
naming the file. A run id is only ever used as a folder name after it has been checked
against the pattern ids are made with, so a tampered index cannot point the
store at files outside its folder.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import math
import os
import re
import shutil
import socket
import sqlite3
import sys
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
SCHEMA_VERSION = 2

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
    pid_started: float = 0.0  # when the process `pid` started (seconds since the epoch; 0: not known)

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


# Seconds two readings of one process's start time may differ by: Linux computes it from the boot
# time, which the kernel reports in whole seconds and may adjust by one.
_START_TOLERANCE = 1.5


def process_start_time(pid: int) -> float:
    """When process `pid` started, in seconds since the epoch; 0.0 where it
    cannot be told. With the pid it names one process: a pid is reused by
    another process once its own has ended."""
    if sys.platform.startswith("linux"):
        fields_ = _proc_stat_fields(pid)
        try:
            return _boot_time() + int(fields_[19]) / os.sysconf("SC_CLK_TCK")  # field 22: start, in clock ticks
        except (IndexError, ValueError, OSError):
            return 0.0
    try:
        import psutil
    except ImportError:
        return 0.0
    try:
        return float(psutil.Process(pid).create_time())
    except Exception:  # psutil's NoSuchProcess, AccessDenied, ...: not known
        return 0.0


def _proc_stat_fields(pid: int) -> list[str]:
    """/proc/<pid>/stat from its third field (the state) on; the name before it may hold spaces."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return []


def _boot_time() -> float:
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except (OSError, ValueError):
        pass
    raise OSError("no boot time in /proc/stat")


def _pid_alive(pid: int, started: float = 0.0) -> bool:
    """Whether process `pid` runs, and is the one that started at `started`
    (when that is known: a live pid that started at another time is a later
    process that got the same pid). A zombie (ended, not yet reaped) is gone."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if sys.platform.startswith("linux") and _proc_stat_fields(pid)[:1] == ["Z"]:
        return False
    if started:
        now = process_start_time(pid)
        if now and abs(now - started) > _START_TOLERANCE:
            return False
    return True


class _DamagedIndex(Exception):
    """runs.db exists but is not a readable index."""


# SQLite's names for a file that is not, or no longer, a whole database.
_DAMAGE_ERRORS = ("SQLITE_CORRUPT", "SQLITE_NOTADB", "SQLITE_TOOBIG")


def _is_damage(exc: BaseException) -> bool:
    return isinstance(exc, _DamagedIndex) or (
        isinstance(exc, sqlite3.DatabaseError)
        and (getattr(exc, "sqlite_errorname", "") in _DAMAGE_ERRORS or "malformed" in str(exc)))


class RunStore:
    """Index and folders of every run; safe to use from several threads
    (each call opens its own short-lived SQLite connection).

    `notices` collects what the store did on its own that the user should
    hear of (an index rebuilt or upgraded, rows it ignores, a damaged file,
    a store it can only read); the CLI and the window show them.
    `read_only` is True for a store whose folder cannot be written: it is
    listed and shown, and every write raises RunStoreError saying so.
    """

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root).expanduser() if root else default_root()
        self.runs_dir = self.root / "runs"
        self.index_path = self.root / "runs.db"
        self.notices: list[str] = []
        self.read_only = False
        self._memory: list[RunRecord] | None = None  # the rows of a read-only store, read once when it opens
        self._reported_foreign = False
        self._reported_gone: set[str] = set()
        try:
            if self.root.is_dir() and not self._writable():
                self._open_read_only()
            else:
                self.runs_dir.mkdir(parents=True, exist_ok=True)
                self._open_index()
        except (OSError, sqlite3.Error) as exc:
            raise RunStoreError(f"cannot open the run store at {self.root}: {exc}") from None
        self._mark_interrupted()

    def _writable(self) -> bool:
        paths = [self.root] + [p for p in (self.runs_dir, self.index_path) if p.exists()]
        return all(os.access(p, os.W_OK) for p in paths)

    def _notice(self, text: str) -> None:
        if text and text not in self.notices:
            self.notices.append(text)

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
            if not created:
                self._read_rows()  # damage inside a row passes SQLite's quick_check
        except _DamagedIndex as exc:
            self._recover(exc)
            return
        if created and self._run_folders():
            why = "runs.db was missing" if not had_index else "runs.db held no index"
            self.notices.append(self._rebuild(why))

    def _recover(self, exc: BaseException) -> None:
        """A damaged runs.db: kept aside, and the index made anew from the run folders."""
        kept = self._set_aside_damaged_index()
        self._prepare_index()
        self.notices.append(self._rebuild(f"runs.db could not be read ({exc}); it was kept as {kept.name}"))

    def _open_read_only(self) -> None:
        """The rows of a store this process cannot write, in memory: the
        index's where it can be read (at any schema version), else each
        folder's run.json; nothing is migrated, rebuilt or marked on disk."""
        self.read_only = True
        self.notices.append(f"the store at {self.root} is read-only: listing only (make the folder writable "
                            "to train, rename or delete runs)")
        known: dict[str, RunRecord] = {}
        if self.index_path.exists():
            try:
                with self._read_only_connection() as db:
                    version = db.execute("PRAGMA user_version").fetchone()[0]
                    if version > SCHEMA_VERSION:
                        raise RunStoreError(
                            f"{self.index_path} was made by a newer CIFAR Studio (index version {version}); "
                            "update CIFAR Studio to open this store")
                    known = {r.run_id: r for r in self._rows_of(db)}
            except (sqlite3.Error, _DamagedIndex) as exc:
                self.notices.append(f"runs.db could not be read ({exc}); the runs are listed from their folders")
        records, _ = self._records_from_folders(known)
        folders = {r.run_id for r in records}
        self._memory = records + [r for r in known.values() if r.run_id not in folders]  # gone: list_runs says so
        self._memory.sort(key=lambda r: r.created)

    @contextlib.contextmanager
    def _read_only_connection(self) -> Iterator[sqlite3.Connection]:
        """runs.db opened for reading only. Immutable: SQLite then needs no
        -shm file, which it could not create in a folder it cannot write."""
        uri = self.index_path.resolve().as_uri() + "?mode=ro&immutable=1"
        db = sqlite3.connect(uri, uri=True, isolation_level=None)
        try:
            yield db
        finally:
            db.close()

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
                db.text_factory = bytes  # a damaged page can make quick_check's own message undecodable
                check = db.execute("PRAGMA quick_check").fetchone()[0]
                check = check.decode("utf-8", "replace") if isinstance(check, bytes) else str(check)
                db.text_factory = str
                if check != "ok":
                    raise _DamagedIndex(check)
                if version < SCHEMA_VERSION:
                    self._migrate(db, version)
                missing = set(_COLUMNS) - _table_columns(db)
                if missing:
                    raise _DamagedIndex(f"its table has no column {', '.join(sorted(missing))}")
                return False
        except sqlite3.DatabaseError as exc:
            if _is_damage(exc):
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
        self.require_writable("rebuild its index")
        try:
            text = self._rebuild()
        except (OSError, sqlite3.Error) as exc:
            raise RunStoreError(f"cannot rebuild the run index at {self.root}: {exc}") from None
        self.notices.append(text)
        self._reported_gone.clear()
        self._mark_interrupted()
        return text

    def _rebuild(self, why: str = "") -> str:
        try:
            known = {r.run_id: r for r in self._read_rows() if RUN_ID_PATTERN.fullmatch(str(r.run_id))}
        except (sqlite3.Error, TypeError, _DamagedIndex):  # a table of another shape, or damaged: made anew below
            known = {}
        records, skipped = self._records_from_folders(known)
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

    def _records_from_folders(self, known: dict[str, RunRecord]) -> tuple[list[RunRecord], list[str]]:
        """A row per run folder (the index's own where it has one) and the folders that are not runs."""
        records, skipped = [], []
        if not self.runs_dir.is_dir():
            return records, skipped
        for folder in self._run_folders():
            record = None
            if RUN_ID_PATTERN.fullmatch(folder.name) and not folder.is_symlink():
                record = known.get(folder.name) or _record_from_folder(folder)
            if record is None:
                skipped.append(folder.name)
            else:
                records.append(record)
        return records, skipped

    def _mark_interrupted(self) -> None:
        """Rows left "running" by a process of this host that is gone become
        "interrupted" (in a read-only store, only as listed)."""
        host = socket.gethostname()
        for record in self.list_runs():
            if record.status == "running" and record.host == host and not _pid_alive(record.pid, record.pid_started):
                if self.read_only:
                    record.status, record.reason = "interrupted", "the process ended before the run finished"
                    continue
                self.update(record.run_id, status="interrupted",
                            reason="the process ended before the run finished")
                self._remove_leftovers(record.run_id)

    def _remove_leftovers(self, run_id: str) -> None:
        """Temporary files a killed process was writing (it can no longer finish them)."""
        for path in self.run_dir(run_id).glob(f".*{_TEMP_MARK}*"):
            path.unlink(missing_ok=True)

    def _read_rows(self) -> list[RunRecord]:
        """Every row, oldest first; _DamagedIndex for one that cannot be a
        row this store wrote (undecodable text, a number where text belongs)."""
        if self._memory is not None:
            return list(self._memory)
        try:
            with self._connection() as db:
                return self._rows_of(db)
        except sqlite3.DatabaseError as exc:
            if _is_damage(exc):
                raise _DamagedIndex(str(exc)) from None
            raise

    @staticmethod
    def _rows_of(db: sqlite3.Connection) -> list[RunRecord]:
        columns = [c for c in _COLUMNS if c in _table_columns(db)]  # an older schema, read without migrating
        db.text_factory = bytes
        rows = db.execute(f"SELECT {', '.join(columns)} FROM runs ORDER BY created").fetchall()
        return [_record_from_row(dict(zip(columns, row))) for row in rows]

    def _write_index(self, action: Callable[[sqlite3.Connection], None]) -> None:
        """`action` on the index; where the index turns out damaged, it is
        rebuilt from the folders (with a notice) and `action` done again."""
        for attempt in (1, 2):
            try:
                with self._connection() as db:
                    action(db)
                return
            except sqlite3.DatabaseError as exc:
                if attempt == 2 or not _is_damage(exc):
                    raise
                self._recover(exc)

    def require_writable(self, action: str) -> None:
        if self.read_only:
            raise RunStoreError(f"the store at {self.root} is read-only: cannot {action} (make the folder "
                                "writable, or use a store in another folder)")

    def _write_error(self, exc: BaseException) -> RunStoreError:
        """The one-line error for a write the store could not make; a store
        that turned out read-only (a read-only file system, an index SQLite
        may not write) says so."""
        if (getattr(exc, "sqlite_errorname", "").startswith("SQLITE_READONLY")
                or getattr(exc, "errno", None) in (errno.EACCES, errno.EPERM, errno.EROFS)):
            return RunStoreError(f"the store at {self.root} is read-only: {exc} (make the folder writable, "
                                 "or use a store in another folder)")
        return RunStoreError(f"cannot write the run store at {self.root}: {exc}")

    # -- writing ---------------------------------------------------------

    def create_run(self, config: RunConfig, **values: Any) -> RunRecord:
        """Make the folder and the row; write config.json and run.json."""
        self.require_writable("train a run")
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
            pid_started=_own_start_time(),
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
            placeholders = ", ".join("?" for _ in _COLUMNS)
            # OR REPLACE: a rebuild of a damaged index (_write_index) may already have made a row of the folder;
            # the id itself is unique, as its folder was made anew above.
            self._write_index(lambda db: db.execute(
                f"INSERT OR REPLACE INTO runs ({', '.join(_COLUMNS)}) VALUES ({placeholders})",
                [getattr(record, c) for c in _COLUMNS]))
            self.write_json(run_id, "run.json", record.as_dict())
        except (OSError, sqlite3.Error) as exc:
            raise self._write_error(exc) from None
        return record

    def update(self, run_id: str, **values: Any) -> None:
        """Set fields of a run's row (and its run.json)."""
        unknown = set(values) - set(_COLUMNS)
        if unknown:
            raise ValueError(f"unknown run fields: {sorted(unknown)}")
        if not values:
            return
        self.require_writable("change runs")
        folder = self.run_dir(run_id)
        assignments = ", ".join(f"{key} = ?" for key in values)
        rows: list[tuple] = []

        def change(db: sqlite3.Connection) -> None:
            db.execute(f"UPDATE runs SET {assignments} WHERE run_id = ?", [*values.values(), run_id])
            db.text_factory = bytes
            rows[:] = db.execute(f"SELECT {', '.join(_COLUMNS)} FROM runs WHERE run_id = ?", (run_id,)).fetchall()

        try:
            self._write_index(change)
            if not rows:
                raise RunStoreError(f"no run with id '{run_id}'")
            record = _record_from_row(dict(zip(_COLUMNS, rows[0])))
            if folder.is_dir():
                self.write_json(run_id, "run.json", record.as_dict())
        except _DamagedIndex as exc:
            raise RunStoreError(f"cannot read back run {run_id} from {self.index_path}: {exc}") from None
        except (OSError, sqlite3.Error) as exc:
            raise self._write_error(exc) from None

    def write_json(self, run_id: str, name: str, data: Any) -> None:
        """A JSON file (metrics.json, run.json) in the run's folder, atomically."""
        if not re.fullmatch(r"[A-Za-z0-9_-]+\.json", name):
            raise ValueError(f"{name!r} is not a plain .json file name")
        self.require_writable(f"write {name}")
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
        self.require_writable("write history.csv")
        old = self._whole_history(path, "the epoch's row is not added")
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
        self.require_writable("write history.csv")
        lines = self._whole_history(path, "it is not shortened").splitlines(keepends=True)
        text = "".join(lines[:1 + epochs])
        _write_atomically(path, lambda tmp: tmp.write_bytes(text.encode()))

    @staticmethod
    def _whole_history(path: Path, refusal: str) -> str:
        """history.csv's text before a write ("" when there is none); a
        damaged one is refused rather than written over."""
        history, problem = _read_history(path)
        if problem:
            raise RunStoreError(f"{problem}; {refusal}")
        return path.read_bytes().decode() if path.exists() else ""

    def reopen_run(self, run_id: str) -> RunRecord:
        """A stopped or interrupted run trains again (resuming): "running"
        with this process's pid. Its final model and that model's
        evaluation are removed: they describe the run as it stood when it
        stopped, not the run it goes on to be (best.h5 and last.keras stay,
        so it can still be evaluated if it stops again)."""
        record = self.get(run_id)
        self.require_writable("resume a run")
        training = record.pid != os.getpid() and self.still_training(record)
        if training:
            raise RunStoreError(f"run '{printable(record.name)}' ({record.run_id}) is still training "
                                f"({training}); stop it first")
        folder = self.run_dir(record.run_id)
        _, problem = _read_history(folder / "history.csv")
        if problem:
            raise RunStoreError(f"run '{printable(record.name)}' ({record.run_id}) cannot be resumed: {problem}")
        for name in _FINAL_FILES:
            (folder / name).unlink(missing_ok=True)
        self.update(record.run_id, status="running", reason="", finished=0.0, pid=os.getpid(),
                    host=socket.gethostname(), pid_started=_own_start_time(), test_accuracy=None,
                    test_loss=None, evaluated_model="")
        return self.get(record.run_id)

    def save_model(self, run_id: str, model, kind: str, class_names) -> list[Path]:
        """Save `model` as the run's final model ("final": model.keras and
        model.h5), its best checkpoint ("best": best.h5) or its last epoch
        ("last": last.keras, with the optimizer state), class names inside."""
        from engine.inference import write_class_names

        self.require_writable("save a model")
        folder = self.run_dir(run_id)
        try:  # the run's test-time augmentation travels in the file, for Classify
            tta = self.config(run_id).training.tta
        except EngineError:
            tta = "none"
        saved = []
        for name in MODEL_FILES[kind]:
            target = folder / name

            def write(tmp: Path) -> None:
                _save_keras_model(model, tmp)
                write_class_names(tmp, class_names, tta=tta)

            _write_atomically(target, write)
            saved.append(target)
        return saved

    def write_evaluation(self, run_id: str, evaluation, model_file: str) -> None:
        """predictions.npz, then metrics.json, then the index's test figures:
        a run with metrics.json has its predictions too. `model_file` names
        the file the model was evaluated from."""
        import numpy as np

        self.require_writable("save an evaluation")
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
        never makes (a tampered index) and rows whose folder is gone are
        left out, with a notice; a damaged index is set aside and rebuilt
        from the folders (with a notice) and read again."""
        try:
            try:
                rows = self._read_rows()
            except (_DamagedIndex, sqlite3.DatabaseError) as exc:
                if not _is_damage(exc) or self.read_only:
                    raise
                self._recover(exc)
                rows = self._read_rows()
        except (sqlite3.Error, _DamagedIndex, OSError) as exc:
            raise RunStoreError(f"cannot read the run index {self.index_path}: {exc}") from None
        records = [r for r in rows if isinstance(r.run_id, str) and RUN_ID_PATTERN.fullmatch(r.run_id)]
        if len(records) < len(rows) and not self._reported_foreign:
            self._reported_foreign = True
            foreign = [r.run_id for r in rows if r not in records]
            self.notices.append(
                f"runs.db lists {len(foreign)} run(s) with an id this store never makes (such as "
                f"{str(foreign[0])[:40]!r}); they are ignored, and rebuilding the index removes them")
        gone = [r for r in records if not (self.runs_dir / r.run_id).is_dir()]
        new = [r for r in gone if r.run_id not in self._reported_gone]
        if new:
            self._reported_gone.update(r.run_id for r in new)
            named = ", ".join(f"'{printable(r.name)[:40]}' ({r.run_id})" for r in new[:3])
            self.notices.append(
                f"runs.db lists {len(new)} run(s) whose folder is gone from {self.runs_dir} ({named}"
                f"{', ...' if len(new) > 3 else ''}); they are left out, and rebuilding the index removes them")
        return [r for r in records if r not in gone]

    def get(self, run: str, include_gone: bool = False) -> RunRecord:
        """A run by its id, else by its name, else by a unique prefix of its
        id. A full id always wins over a name; a blank argument matches
        nothing. A run whose folder is gone is an error saying so, unless
        `include_gone` (deleting it removes its row)."""
        key = valid_text(run).strip() if isinstance(run, str) else ""  # a name typed as it was stored
        if not key:
            raise RunStoreError("no run given: name a run by its id or name (see the 'runs' command)")
        runs = self.list_runs()
        found = _find(key, runs)
        if found is not None:
            return found
        gone = _find(key, [r for r in self._read_rows() if r.run_id in self._reported_gone])
        if gone is not None and include_gone:
            return gone
        if gone is not None:
            raise RunStoreError(f"run '{printable(gone.name)}' ({gone.run_id}) is in the index, but its folder "
                                f"{self.runs_dir / gone.run_id} is gone; deleting it or rebuilding the index "
                                "removes it from the index")
        raise RunStoreError(f"no run '{printable(key)}' in {self.root} (see the 'runs' command)")

    def still_training(self, record: RunRecord) -> str:
        """Why a run marked "running" may really still be training, as a few
        words ("process 123 on this machine"); "" when it is not: its
        process is gone, or is another one that got the same pid. A run
        running on another host cannot be checked from here, so counts as
        training."""
        if record.status != "running":
            return ""
        if record.host != socket.gethostname():
            return f"process {record.pid} on host {printable(record.host)}, which cannot be checked from here"
        if _pid_alive(record.pid, record.pid_started):
            return f"process {record.pid} on this machine"
        return ""

    def config(self, run_id: str) -> RunConfig:
        path = self.run_dir(self.get(run_id).run_id) / "config.json"
        try:
            return RunConfig.from_json(path.read_text())
        except OSError as exc:
            raise RunStoreError(f"cannot read {path}: {exc.strerror}") from None

    def history(self, run_id: str) -> dict[str, list[float]]:
        """The run's history.csv as a Keras History-style dict of lists
        ("NA" and empty cells as NaN): of a damaged file, the rows that can
        be read, with a notice naming it (`read_history` says which)."""
        history, problem = self.read_history(run_id)
        self._notice(problem)
        return history

    def read_history(self, run_id: str) -> tuple[dict[str, list[float]], str]:
        """The readable rows of history.csv, and "" or one line saying how
        the file is damaged (a row cut short or of other cells, a cell that
        is not a number, bytes that are not UTF-8)."""
        return _read_history(self.run_dir(self.get(run_id).run_id) / "history.csv")

    def metrics(self, run_id: str) -> dict[str, Any]:
        """metrics.json ({} when there is none, or it is damaged: then with
        a notice naming it; `read_metrics` says which)."""
        metrics, problem = self.read_metrics(run_id)
        self._notice(problem)
        return metrics

    def read_metrics(self, run_id: str) -> tuple[dict[str, Any], str]:
        """metrics.json, and "" or one line saying it is damaged (then the
        dict is empty): evaluating the run again rewrites it."""
        path = self.run_dir(self.get(run_id).run_id) / "metrics.json"
        if not path.exists():
            return {}, ""
        fix = "evaluating the run again rewrites it"
        try:
            data = json.loads(path.read_bytes())
        except OSError as exc:
            return {}, f"{path} cannot be read ({exc.strerror or exc}); {fix}"
        except (ValueError, RecursionError) as exc:  # not JSON, not UTF-8, or nested too deeply
            return {}, f"{path} is damaged (not JSON: {printable(str(exc))[:120]}); {fix}"
        if not isinstance(data, dict):
            return {}, f"{path} is damaged (it holds a {type(data).__name__}, not the metrics); {fix}"
        return data, ""

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
        record = self.get(run_id)
        self.require_writable("rename runs")
        self.update(record.run_id, name=name)

    def delete(self, run_id: str, force: bool = False) -> str:
        """Remove a run's folder, then its row; what was done, in a line.

        A run that may still be training (`still_training`) is refused
        unless `force` (a hung process, or one on a host that is gone). A
        row whose folder is already gone is removed from the index."""
        record = self.get(run_id, include_gone=True)
        self.require_writable("delete runs")
        folder = self.run_dir(record.run_id)
        label = f"run {record.run_id} ({printable(record.name)})"
        training = self.still_training(record)
        if training and not force:
            raise RunStoreError(f"{label} is still training ({training}); stop it first")
        done = f"deleted {label}"
        if not folder.exists():
            done = f"{label} had no folder left ({folder}); removed it from the index"
        shutil.rmtree(folder, ignore_errors=True)
        if folder.exists():
            raise RunStoreError(f"could not delete all of {folder}; the run is kept in the index")
        try:
            self._write_index(lambda db: db.execute("DELETE FROM runs WHERE run_id = ?", (record.run_id,)))
        except sqlite3.Error as exc:
            raise self._write_error(exc) from None
        self._reported_gone.discard(record.run_id)
        return done


def _find(key: str, runs: list[RunRecord]) -> RunRecord | None:
    """The run `key` names among `runs` (see RunStore.get); None for none."""
    for matches, many in (
        ([r for r in runs if r.run_id == key], ""),
        ([r for r in runs if (r.name or "").strip() == key], "names {n} runs; give the id instead"),
        ([r for r in runs if r.run_id.startswith(key)], "matches {n} runs; give more of the id"),
    ):
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise RunStoreError(f"'{printable(key)}' {many.format(n=len(matches))}")
    return None


def _own_start_time() -> float:
    return process_start_time(os.getpid())


def _table_columns(db: sqlite3.Connection) -> set[str]:
    return {row[1] for row in db.execute("PRAGMA table_info(runs)")}


def _record_from_row(row: dict[str, Any]) -> RunRecord:
    """A RunRecord from an index row read with text as bytes; _DamagedIndex
    for a value no row this store wrote can hold (SQLite's quick_check reads
    the pages, not the values in them). Columns an older schema lacks keep
    their defaults."""
    values = {}
    for field_ in fields(RunRecord):
        if field_.name not in row:
            continue
        value = row[field_.name]
        default = "" if field_.name == "run_id" else field_.default  # the one field without a default
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                raise _DamagedIndex(f"the {field_.name} of a run is not UTF-8 text") from None
        if value is None and default is not None and field_.name != "run_id":
            value = default
        kind = type(default)
        if default is None or kind is float:
            fits = value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))
        elif kind is int:
            fits = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
            value = int(value) if fits else value
        else:
            fits = isinstance(value, str)
        if not fits:
            raise _DamagedIndex(f"the {field_.name} of a run is {type(value).__name__}, not {kind.__name__}")
        values[field_.name] = value
    return RunRecord(**values)


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


def _add_pid_started(db: sqlite3.Connection) -> None:
    """1 -> 2: when a run's process started, to tell it from a later process with the same pid
    (rows from before are checked by pid alone)."""
    db.execute("ALTER TABLE runs ADD COLUMN pid_started REAL DEFAULT 0")


_MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {0: _add_evaluated_model, 1: _add_pid_started}


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


def _read_history(path: Path) -> tuple[dict[str, list[float]], str]:
    """history.csv's readable rows as a dict of lists, and "" or a line
    saying how the file is damaged. A row is readable when it has the
    header's cells and a number for its epoch; "NA", empty cells and
    CSVLogger's quoted lists are NaN, any other cell that is not a number
    is NaN too, and said."""
    if not path.exists():
        return {}, ""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return {}, f"{path} cannot be read ({exc.strerror or exc})"
    problems = []
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        text = data.decode("utf-8", "replace")
        problems.append(f"byte {exc.start} is not UTF-8")
    lines = text.splitlines()
    header = _csv_cells(lines[0]) if lines else None
    if not header or header[0] != "epoch" or len(set(header)) < len(header):
        return {}, f"{path} is damaged (its first line is not the header of a history); the file is left as it is"
    history: dict[str, list[float]] = {key: [] for key in header}
    for number, line in enumerate(lines[1:], start=2):
        cells = _csv_cells(line)
        if cells is None or len(cells) != len(header):
            count = "cannot be read" if cells is None else f"has {len(cells)} of {len(header)} cells"
            problems.append(f"line {number} {count}")
            continue
        values = [_number(cell) for cell in cells]
        for key, cell, value in zip(header, cells, values):
            if value is None:
                problems.append(f"line {number}: {printable(key)} is {printable(cell)[:20]!r}, not a number")
        if values[0] is None or not math.isfinite(values[0]):
            continue
        for key, value in zip(header, values):
            history[key].append(float("nan") if value is None else value)
    if not problems:
        return history, ""
    more = f"; {len(problems) - 1} more problem(s)" if len(problems) > 1 else ""
    epochs = len(history["epoch"])
    return history, (f"{path} is damaged ({problems[0]}{more}): shown as far as it can be read "
                     f"({epochs} epoch{'' if epochs == 1 else 's'}); the file is left as it is")


def _csv_cells(line: str) -> list[str] | None:
    """One line of a CSV file as its cells; None where the csv module refuses it (a NUL byte, ...)."""
    try:
        return next(csv.reader([line]), [])
    except csv.Error:
        return None


def _number(value: str) -> float | None:
    """A history cell as a number: NaN for "NA", an empty cell or a list; None for anything else."""
    if value in ("", "NA") or value.lstrip('"').startswith("["):  # CSVLogger writes a list as "[...]"
        return float("nan")
    try:
        return float(value)
    except ValueError:
        return None


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
    history, _ = _read_history(folder / "history.csv")
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
