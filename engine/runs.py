"""The run store: a SQLite index with a row per run, and a folder per run.

Layout under the store's root::

    runs.db                 the index (one row per run)
    runs/<run_id>/
        config.json         the RunConfig
        history.csv         Keras CSVLogger's format, appended after each epoch
        metrics.json        test metrics, per-class precision/recall/F1
        predictions.npz     confusion matrix and per-image top-k predictions
        best.h5             the best model so far (written when it improves)
        model.h5, model.keras   the final model

A run is written as it goes: the row is created with status "running", the
history grows each epoch, the status is written last. A process that dies
mid-run leaves "running" behind with its pid; the next time the store is
opened, such a row whose process is gone is marked "interrupted".
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import sqlite3
import time
import uuid
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from engine.config import RunConfig
from engine.errors import RunStoreError

ENV_HOME = "CIFAR_STUDIO_HOME"

STATUSES = ("running", "finished", "stopped", "failed", "interrupted")


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


class RunStore:
    """Index and folders of every run; safe to use from several threads
    (each call opens its own short-lived SQLite connection)."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root).expanduser() if root else default_root()
        self.runs_dir = self.root / "runs"
        try:
            self.runs_dir.mkdir(parents=True, exist_ok=True)
            with self._connect() as db:
                columns = ", ".join(
                    f"{f.name} {'TEXT PRIMARY KEY' if f.name == 'run_id' else _sql_type(f)}"
                    for f in fields(RunRecord)
                )
                db.execute(f"CREATE TABLE IF NOT EXISTS runs ({columns})")
        except (OSError, sqlite3.Error) as exc:
            raise RunStoreError(f"cannot open the run store at {self.root}: {exc}") from None
        self._mark_interrupted()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.root / "runs.db", timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        return db

    def _mark_interrupted(self) -> None:
        host = socket.gethostname()
        for record in self.list_runs():
            if record.status == "running" and record.host == host and not _pid_alive(record.pid):
                self.update(record.run_id, status="interrupted",
                            reason="the process ended before the run finished")

    # -- writing ---------------------------------------------------------

    def create_run(self, config: RunConfig, **values: Any) -> RunRecord:
        """Make the folder and the row; write config.json."""
        run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
        record = RunRecord(
            run_id=run_id,
            name=config.name or f"{config.model.architecture} {time.strftime('%Y-%m-%d %H:%M')}",
            preset=config.preset,
            model=config.model.architecture,
            dataset=_dataset_label(config),
            created=time.time(),
            epochs=config.training.epochs,
            pid=os.getpid(),
            host=socket.gethostname(),
        )
        for key, value in values.items():
            setattr(record, key, value)
        folder = self.run_dir(run_id)
        try:
            folder.mkdir(parents=True)
            (folder / "config.json").write_text(config.to_json())
            with self._connect() as db:
                placeholders = ", ".join("?" for _ in _COLUMNS)
                db.execute(
                    f"INSERT INTO runs ({', '.join(_COLUMNS)}) VALUES ({placeholders})",
                    [getattr(record, c) for c in _COLUMNS],
                )
        except (OSError, sqlite3.Error) as exc:
            raise RunStoreError(f"cannot write the run store at {self.root}: {exc}") from None
        return record

    def update(self, run_id: str, **values: Any) -> None:
        unknown = set(values) - set(_COLUMNS)
        if unknown:
            raise ValueError(f"unknown run fields: {sorted(unknown)}")
        if not values:
            return
        assignments = ", ".join(f"{key} = ?" for key in values)
        with self._connect() as db:
            cursor = db.execute(f"UPDATE runs SET {assignments} WHERE run_id = ?", [*values.values(), run_id])
        if cursor.rowcount == 0:
            raise RunStoreError(f"no run with id '{run_id}'")

    def write_json(self, run_id: str, name: str, data: Any) -> None:
        path = self.run_dir(run_id) / name
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(path)

    # -- reading ---------------------------------------------------------

    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / run_id

    def list_runs(self) -> list[RunRecord]:
        with self._connect() as db:
            rows = db.execute(f"SELECT {', '.join(_COLUMNS)} FROM runs ORDER BY created").fetchall()
        return [RunRecord(**dict(zip(_COLUMNS, row))) for row in rows]

    def get(self, run_id: str) -> RunRecord:
        """A run by id, or by a unique prefix of its id, or by its name."""
        runs = self.list_runs()
        exact = [r for r in runs if r.run_id == run_id or r.name == run_id]
        matches = exact or [r for r in runs if r.run_id.startswith(run_id)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise RunStoreError(f"no run '{run_id}' in {self.root} (see the 'runs' command)")
        raise RunStoreError(f"'{run_id}' matches {len(matches)} runs; give more of the id")

    def config(self, run_id: str) -> RunConfig:
        path = self.run_dir(self.get(run_id).run_id) / "config.json"
        try:
            return RunConfig.from_json(path.read_text())
        except OSError as exc:
            raise RunStoreError(f"cannot read {path}: {exc.strerror}") from None

    def history(self, run_id: str) -> dict[str, list[float]]:
        """The run's history.csv as a Keras History-style dict of lists."""
        path = self.run_dir(self.get(run_id).run_id) / "history.csv"
        if not path.exists():
            return {}
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        history: dict[str, list[float]] = {}
        for row in rows:
            for key, value in row.items():
                history.setdefault(key, []).append(float(value) if value not in ("", None) else float("nan"))
        return history

    def metrics(self, run_id: str) -> dict[str, Any]:
        path = self.run_dir(self.get(run_id).run_id) / "metrics.json"
        if not path.exists():
            return {}
        return json.loads(path.read_text())

    def predictions(self, run_id: str) -> dict[str, Any]:
        import numpy as np

        path = self.run_dir(self.get(run_id).run_id) / "predictions.npz"
        if not path.exists():
            return {}
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}

    def model_path(self, run_id: str, kind: str = "h5") -> Path:
        """The final model (kind "h5" or "keras"), or the best checkpoint ("best")."""
        folder = self.run_dir(self.get(run_id).run_id)
        name = {"h5": "model.h5", "keras": "model.keras", "best": "best.h5"}[kind]
        return folder / name

    # -- editing ---------------------------------------------------------

    def rename(self, run_id: str, name: str) -> None:
        name = name.strip()
        if not name:
            raise RunStoreError("a run's name cannot be empty")
        self.update(self.get(run_id).run_id, name=name)

    def delete(self, run_id: str) -> None:
        record = self.get(run_id)
        if record.status == "running" and _pid_alive(record.pid):
            raise RunStoreError(f"run '{record.name}' is still training; stop it first")
        shutil.rmtree(self.run_dir(record.run_id), ignore_errors=True)
        with self._connect() as db:
            db.execute("DELETE FROM runs WHERE run_id = ?", (record.run_id,))


def _sql_type(field_) -> str:
    """SQLite type from the field's default (None defaults are metrics: REAL)."""
    return _SQL_TYPES.get(type(field_.default), "REAL")


def _dataset_label(config: RunConfig) -> str:
    d = config.dataset
    if d.path:
        return f"{d.source}:{Path(d.path).name}"
    return d.source
