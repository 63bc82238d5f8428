"""Runs side by side: the runs table, settings diff, curves, and two runs head to head.

Everything the Compare tab, `main.py compare` and the report show comes
from here, so the three cannot disagree. No Qt, and no Keras: it reads the
run store's files (the index, config.json, history.csv, metrics.json,
predictions.npz, and the model files' layer lists through h5py).

Head to head (two runs evaluated on the same images, by the fingerprint
RunResults carries): the difference of their confusion matrices as shares
of each true class, per-class F1 differences with paired bootstrap 95%
intervals (both runs scored on the same resampled images), and the paired
per-image counts with McNemar's exact test.
"""

from __future__ import annotations

import csv
import datetime
import importlib.metadata
import io
import json
import math
import os
import platform
import re
import shutil
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from engine.config import RunConfig
from engine.errors import EngineError
from engine.registry import ARCHITECTURES, SETTINGS
from engine.text import printable, valid_text

OVERFIT_POINTS = 10.0  # train accuracy more than this many points above validation accuracy: overfitting
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
SIGNIFICANCE = 0.05  # McNemar's p below this: the difference is more than chance
BOOTSTRAP_CHUNK = 2_000_000  # resampled images scored at once: bounds the bootstrap's memory (~100 MB)


class ComparisonError(EngineError):
    """Two runs cannot be compared image by image; the message says why."""


# -- the runs table ----------------------------------------------------------

@dataclass
class RunRow:
    """One row of the runs table: the index row plus what metrics.json and the files add.

    Numbers are None where the run has none (not evaluated yet, an old run).
    """

    run_id: str
    name: str
    model: str  # the architecture's label, e.g. "ResNet50"
    architecture: str  # the registry key, e.g. "resnet50"
    preset: str
    dataset: str
    status: str  # finished, stopped, interrupted, failed, running
    reason: str
    epochs_done: int
    epochs: int  # planned
    test_accuracy: float | None
    test_loss: float | None
    macro_f1: float | None
    best_val_accuracy: float | None
    best_epoch: int
    params_total: int
    params_trainable: int
    train_seconds: float
    ms_per_image: float | None  # evaluation's predict time per test image, in milliseconds
    model_size: int | None  # bytes of the evaluated (else final) model file
    created: float  # time.time() when the run started
    batch_size: int
    split: str  # "test", or "validation" where the dataset has no test split


# (field of RunRow, header) in the order the table and the CSV show them.
TABLE_COLUMNS: list[tuple[str, str]] = [
    ("name", "Name"), ("model", "Model"), ("preset", "Preset"), ("dataset", "Dataset"), ("status", "Status"),
    ("epochs_done", "Epochs"), ("test_accuracy", "Test accuracy"), ("test_loss", "Test loss"),
    ("macro_f1", "Macro F1"), ("best_val_accuracy", "Best val. accuracy"), ("best_epoch", "Best epoch"),
    ("params_total", "Parameters"), ("train_seconds", "Training time (s)"), ("ms_per_image", "ms / image"),
    ("model_size", "Model size (bytes)"), ("created", "Date"), ("run_id", "Run id"),
]


def run_rows(store) -> list[RunRow]:
    """Every run of the store as a table row, oldest first. A run whose
    metrics.json cannot be read still gets its row (from the index)."""
    return [_run_row(store, record) for record in store.list_runs()]


def _run_row(store, record) -> RunRow:
    """The index row plus metrics.json's macro F1, split and predict time,
    config.json's batch size and the model file's size; None where a file
    is missing or damaged."""
    try:
        metrics = store.metrics(record.run_id)
    except EngineError:
        metrics = {}
    if not isinstance(metrics, dict):
        metrics = {}
    macro = metrics.get("macro")
    try:
        batch_size = store.config(record.run_id).training.batch_size
    except (EngineError, OSError):
        batch_size = 0
    architecture = ARCHITECTURES.get(record.model)
    return RunRow(
        run_id=record.run_id, name=record.name, model=architecture.label if architecture else record.model,
        architecture=record.model, preset=record.preset, dataset=record.dataset, status=record.status,
        reason=record.reason, epochs_done=int(record.epochs_done), epochs=int(record.epochs),
        test_accuracy=_finite(record.test_accuracy), test_loss=_finite(record.test_loss),
        macro_f1=_finite(macro.get("f1")) if isinstance(macro, dict) else None,
        best_val_accuracy=_finite(record.best_val_accuracy), best_epoch=int(record.best_epoch),
        params_total=int(record.params_total), params_trainable=int(record.params_trainable),
        train_seconds=float(record.train_seconds or 0.0), ms_per_image=_finite(metrics.get("ms_per_image")),
        model_size=_model_size(store, record), created=float(record.created or 0.0), batch_size=int(batch_size),
        split=metrics["split"] if metrics.get("split") in ("test", "validation") else "",
    )


def _finite(value) -> float | None:
    """A number as float, None for None, NaN, infinity or anything not a number."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _model_size(store, record) -> int | None:
    """Bytes of the model file the metrics came from, else of the final model; None without either."""
    try:
        folder = store.run_dir(record.run_id)
    except EngineError:
        return None
    names = [Path(record.evaluated_model).name] if record.evaluated_model else []
    for name in names + ["model.h5", "model.keras"]:
        path = folder / name
        if path.is_file():
            return path.stat().st_size
    return None


def write_table_csv(rows: list[RunRow], path: str | Path) -> None:
    """The table as CSV (TABLE_COLUMNS' headers; dates as ISO 8601; blank where None), written atomically."""
    from engine.runs import _write_atomically

    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([header for _, header in TABLE_COLUMNS])
    for row in rows:
        writer.writerow([_csv_cell(key, getattr(row, key)) for key, _ in TABLE_COLUMNS])
    data = out.getvalue().encode("utf-8")
    _write_atomically(Path(path).expanduser(), lambda tmp: tmp.write_bytes(data))


def _csv_cell(key: str, value) -> str:
    if value is None:
        return ""
    if key == "created":
        return iso_date(value) if value else ""
    if isinstance(value, float):
        return repr(value)
    return valid_text(str(value))


def iso_date(timestamp: float) -> str:
    """A time.time() value as local ISO 8601 with its UTC offset, to the second."""
    return datetime.datetime.fromtimestamp(timestamp).astimezone().isoformat(timespec="seconds")


# -- settings side by side ---------------------------------------------------

@dataclass
class SettingRow:
    key: str  # "training.batch_size"
    label: str  # the registry's label, "Batch size"
    values: list[str]  # one per run, as the window shows them (registry words: "auto", "all", "frozen")
    differs: bool


def settings_rows(configs: list[RunConfig]) -> list[SettingRow]:
    """Every setting of the runs' configs, one row each in the registry's
    order, with `differs` True where not all runs have the same value."""
    flat = [_flat_settings(config) for config in configs]
    keys = list(SETTINGS) + [key for key in (flat[0] if flat else {}) if key not in SETTINGS]
    rows = []
    for key in keys:
        raw = [values.get(key) for values in flat]
        found = SETTINGS.get(key)
        rows.append(SettingRow(key=key, label=found.label if found else key,
                               values=[setting_text(key, value) for value in raw],
                               differs=len({json.dumps(value, sort_keys=True) for value in raw}) > 1))
    return rows


# Settings only a pretrained base has: for a model trained from scratch they are kept in its
# config but change nothing, so they are shown as not applying (and never count as a difference).
PRETRAINED_ONLY = ("model.weights", "model.weights_file", "model.trainable_layers", "model.input_size",
                   "model.head")
NOT_APPLICABLE = "–"


def _flat_settings(config: RunConfig) -> dict[str, Any]:
    """{"training.batch_size": 32, "name": ..., ...} from the config's dict; None where a setting does not apply."""
    flat: dict[str, Any] = {}
    for key, value in config.to_dict().items():
        if key == "version":
            continue
        if isinstance(value, dict):
            flat.update((f"{key}.{name}", item) for name, item in value.items())
        else:
            flat[key] = value
    architecture = ARCHITECTURES.get(config.model.architecture)
    if architecture is not None and not architecture.pretrained:
        flat.update((key, None) for key in PRETRAINED_ONLY if key in flat)
    return flat


def setting_text(key: str, value) -> str:
    """A setting's value as the window shows it: a choice's label, a special number's word, else the value
    ("–" where the setting does not apply to the run's model or its config predates it)."""
    if value is None:
        return NOT_APPLICABLE
    found = SETTINGS.get(key)
    if found is not None and found.choices and value in found.choices:
        return found.choices[value]
    if found is not None and found.words and isinstance(value, int) and value in found.words:
        return found.words[value]
    return valid_text(str(value))


# -- curves -------------------------------------------------------------------

CURVE_AXES = ("epoch", "time")


def curve(history: dict[str, list[float]], metric: str, x: str = "epoch") -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of one history column ("loss", "val_accuracy", ...): x is the
    epoch (1-based) or the wall time in seconds (history's `elapsed`).
    Empty arrays when the history has no such column; NaN rows dropped."""
    xs, ys = _curve_columns(history, metric, x)
    keep = np.isfinite(xs) & np.isfinite(ys)
    return xs[keep], ys[keep]


def _curve_columns(history: dict[str, list[float]], metric: str, x: str) -> tuple[np.ndarray, np.ndarray]:
    """The x and y columns of every history row, NaN rows kept."""
    if x not in CURVE_AXES:
        raise ValueError(f"unknown curve axis {x!r}; use one of {', '.join(CURVE_AXES)}")
    empty = np.zeros(0, dtype=np.float64)
    ys = np.asarray(history.get(metric, []), dtype=np.float64)
    if x == "time":
        xs = np.asarray(history.get("elapsed", []), dtype=np.float64)
    elif "epoch" in history:
        xs = np.asarray(history["epoch"], dtype=np.float64) + 1  # CSVLogger counts epochs from 0
    else:
        xs = np.arange(1, len(ys) + 1, dtype=np.float64)
    if not len(ys) or len(xs) != len(ys):
        return empty, empty
    return xs, ys


def smooth(values: np.ndarray, weight: float) -> np.ndarray:
    """TensorBoard's smoothing: a debiased exponential moving average;
    weight 0 returns the values unchanged, 0.99 nearly flat.

    As in TensorBoard, NaN and infinite points stay as they are and do not
    enter the average; a weight outside 0..0.999 is clipped into it."""
    values = np.asarray(values, dtype=np.float64)
    weight = min(max(float(weight), 0.0), 0.999)
    if weight == 0.0:
        return values.copy()
    smoothed = values.copy()
    last, count = 0.0, 0
    for i in np.flatnonzero(np.isfinite(values)):
        last = last * weight + (1.0 - weight) * values[i]
        count += 1
        smoothed[i] = last / (1.0 - weight ** count)
    return smoothed


def best_point(history: dict[str, list[float]], best_epoch: int, metric: str,
               x: str = "epoch") -> tuple[float, float] | None:
    """(x, y) of the run's best epoch on `metric`'s curve; None if unknown."""
    if best_epoch < 1:
        return None
    xs, ys = _curve_columns(history, metric, x)
    epochs, _ = _curve_columns(history, metric, "epoch")
    rows = np.flatnonzero(epochs == best_epoch)
    if not len(rows):
        return None
    row = rows[-1]
    if not (np.isfinite(xs[row]) and np.isfinite(ys[row])):
        return None
    return float(xs[row]), float(ys[row])


# -- two runs head to head -----------------------------------------------------

def comparable(a, b) -> str:
    """"" when RunResults a and b were evaluated on the same images (same
    fingerprint, same class names, same number of images), else a sentence
    saying why they cannot be compared image by image."""
    for results in (a, b):
        if results.needs_evaluation:
            return f"{_run_label(results)} has no predictions yet: evaluate it first"
        if not results.fingerprint:
            return (f"{_run_label(results)} was evaluated before the images were fingerprinted; evaluate it again "
                    "to compare it image by image")
    if len(a) != len(b):
        return (f"{_run_label(a)} was evaluated on {len(a):,} images and {_run_label(b)} on {len(b):,}: "
                "not the same test images")
    if list(a.class_names) != list(b.class_names):
        return f"{_run_label(a)} and {_run_label(b)} do not have the same classes in the same order"
    if a.fingerprint != b.fingerprint or not np.array_equal(a.y_true, b.y_true):
        return (f"{_run_label(a)} and {_run_label(b)} were evaluated on different test images (their "
                "fingerprints differ): compare runs evaluated on the same dataset and split")
    return ""


def _run_label(results) -> str:
    return f"run '{printable(results.record.name)}'"


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """McNemar's exact test: the two-sided binomial p-value of `only_b`
    successes in `only_a + only_b` trials at p=0.5 (1.0 when both are 0).
    Computed here (log-space binomial sums) because scipy is not a runtime
    dependency; the tests check it against scipy.stats.binomtest."""
    only_a, only_b = int(only_a), int(only_b)
    if only_a < 0 or only_b < 0:
        raise ValueError("McNemar's counts cannot be negative")
    n, k = only_a + only_b, min(only_a, only_b)
    if 2 * k == n:
        return 1.0
    # log C(n, i) for i = 0..k from C(n, i+1) = C(n, i) (n - i) / (i + 1); the tail is the sum of those
    # terms over 2^n, doubled (the binomial at p=0.5 is symmetric), summed as a log-sum-exp.
    i = np.arange(k, dtype=np.float64)
    log_terms = np.concatenate([[0.0], np.cumsum(np.log(n - i) - np.log(i + 1))]) - n * math.log(2.0)
    top = log_terms.max()
    return min(1.0, 2.0 * math.exp(top) * float(np.exp(log_terms - top).sum()))


def paired_bootstrap(y_true: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, num_classes: int,
                     resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> dict[str, np.ndarray]:
    """Per-class F1 of B minus A, and accuracy and macro F1 of B minus A,
    with 95% percentile intervals from resampling the same images for both
    runs. Keys: f1_diff, f1_low, f1_high (per class), accuracy_diff,
    accuracy_low, accuracy_high, macro_f1_diff, macro_f1_low, macro_f1_high (0-d).

    Each resample is a row of image indices drawn with replacement, the
    same row for both runs; per resample, bincount counts each class's true
    images, and each run's predictions and hits of it, so the cost grows
    with resamples times images, not with the number of classes."""
    y_true = np.asarray(y_true, dtype=np.int64).reshape(-1)
    pred_a = np.asarray(pred_a, dtype=np.int64).reshape(-1)
    pred_b = np.asarray(pred_b, dtype=np.int64).reshape(-1)
    n, classes = len(y_true), int(num_classes)
    if not (len(pred_a) == len(pred_b) == n):
        raise ValueError(f"{n} labels for {len(pred_a)} and {len(pred_b)} predictions")
    # Per image: its true class; per run, predicted class * 2 + 1 when right (a hit is a prediction of the true class).
    codes_a, codes_b = 2 * pred_a + (pred_a == y_true), 2 * pred_b + (pred_b == y_true)

    def scores(drawn: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-class F1, accuracy and macro F1 differences (B - A) for each row of image indices."""
        rows = len(drawn)

        def count(codes: np.ndarray, width: int) -> np.ndarray:
            keys = codes[drawn] + (np.arange(rows) * width)[:, None]
            return np.bincount(keys.reshape(-1), minlength=rows * width).reshape(rows, width)

        support = count(y_true, classes)
        run_a = count(codes_a, 2 * classes).reshape(rows, classes, 2)
        run_b = count(codes_b, 2 * classes).reshape(rows, classes, 2)
        f1_a = _f1(run_a[..., 1], run_a.sum(axis=-1), support)
        f1_b = _f1(run_b[..., 1], run_b.sum(axis=-1), support)
        accuracy = (run_b[..., 1].sum(axis=-1) - run_a[..., 1].sum(axis=-1)) / max(n, 1)
        return f1_b - f1_a, accuracy, f1_b.mean(axis=-1) - f1_a.mean(axis=-1)

    f1_diff, accuracy_diff, macro_diff = (value[0] for value in scores(np.arange(n)[None, :]))
    rng = np.random.default_rng(seed)
    samples: list[tuple[np.ndarray, ...]] = []
    per_chunk = max(1, BOOTSTRAP_CHUNK // max(n, 1))
    done = 0
    while n and done < resamples:
        rows = min(per_chunk, resamples - done)
        samples.append(scores(rng.integers(0, n, size=(rows, n))))
        done += rows
    result = {"f1_diff": f1_diff, "accuracy_diff": np.asarray(accuracy_diff),
              "macro_f1_diff": np.asarray(macro_diff)}
    for name, index in (("f1", 0), ("accuracy", 1), ("macro_f1", 2)):
        if samples:
            low, high = np.percentile(np.concatenate([s[index] for s in samples]), [2.5, 97.5], axis=0)
        else:
            low = high = np.full(np.shape(result[f"{name}_diff"]), np.nan)
        result[f"{name}_low"], result[f"{name}_high"] = np.asarray(low), np.asarray(high)
    return result


def _f1(hits: np.ndarray, predicted: np.ndarray, support: np.ndarray) -> np.ndarray:
    """Per-class F1 from counts: 2 TP / (predicted + true), 0 where a class has neither (zero_division=0)."""
    denominator = np.asarray(predicted + support, dtype=np.float64)
    return np.divide(2.0 * hits, denominator, out=np.zeros_like(denominator), where=denominator > 0)


@dataclass
class HeadToHead:
    """Run B against run A on the same test images. Rows index both runs'
    RunResults arrays alike (same fingerprint means same images, same order)."""

    a_id: str
    b_id: str
    a_name: str
    b_name: str
    class_names: list[str]
    images: int
    confusion_a: np.ndarray  # counts
    confusion_b: np.ndarray
    difference: np.ndarray  # B's share of each true class minus A's (rows sum to 0)
    only_a: np.ndarray  # rows A gets right and B wrong
    only_b: np.ndarray  # rows B gets right and A wrong
    both_right: int
    both_wrong: int
    mcnemar_p: float
    accuracy_a: float
    accuracy_b: float
    f1_a: np.ndarray
    f1_b: np.ndarray
    bootstrap: dict[str, np.ndarray] = field(default_factory=dict)  # paired_bootstrap's result

    @property
    def significant(self) -> bool:
        return self.mcnemar_p < SIGNIFICANCE


def head_to_head(a, b, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> HeadToHead:
    """Compare RunResults b against a; ComparisonError (comparable's reason) when they cannot be."""
    from engine.evaluation import normalized_confusion

    reason = comparable(a, b)
    if reason:
        raise ComparisonError(reason)
    classes = len(a.class_names)
    y_true = np.asarray(a.y_true, dtype=np.int64)
    pred_a, pred_b = np.asarray(a.y_pred, dtype=np.int64), np.asarray(b.y_pred, dtype=np.int64)
    confusion_a, confusion_b = _confusion(y_true, pred_a, classes), _confusion(y_true, pred_b, classes)
    right_a, right_b = pred_a == y_true, pred_b == y_true
    only_a, only_b = np.flatnonzero(right_a & ~right_b), np.flatnonzero(right_b & ~right_a)
    support = confusion_a.sum(axis=1).astype(np.float64)
    f1_a = _f1(np.diag(confusion_a).astype(np.float64), confusion_a.sum(axis=0).astype(np.float64), support)
    f1_b = _f1(np.diag(confusion_b).astype(np.float64), confusion_b.sum(axis=0).astype(np.float64), support)
    n = len(y_true)
    return HeadToHead(
        a_id=a.record.run_id, b_id=b.record.run_id, a_name=a.record.name, b_name=b.record.name,
        class_names=list(a.class_names), images=n, confusion_a=confusion_a, confusion_b=confusion_b,
        difference=normalized_confusion(confusion_b, "true") - normalized_confusion(confusion_a, "true"),
        only_a=only_a, only_b=only_b, both_right=int((right_a & right_b).sum()),
        both_wrong=int((~right_a & ~right_b).sum()), mcnemar_p=mcnemar_exact(len(only_a), len(only_b)),
        accuracy_a=float(right_a.mean()) if n else float("nan"),
        accuracy_b=float(right_b.mean()) if n else float("nan"), f1_a=f1_a, f1_b=f1_b,
        bootstrap=paired_bootstrap(y_true, pred_a, pred_b, classes, resamples=resamples, seed=seed),
    )


def _confusion(y_true: np.ndarray, y_pred: np.ndarray, classes: int) -> np.ndarray:
    confusion = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(confusion, (y_true, y_pred), 1)
    return confusion


def moved_rows(h: HeadToHead, a, b, true_class: int, predicted: int) -> tuple[np.ndarray, np.ndarray]:
    """The images behind one cell of the difference matrix: (into, out_of),
    rows of true class `true_class` that B puts in column `predicted` and A
    does not, and rows A put there and B does not."""
    classes = len(h.class_names)
    if not (0 <= true_class < classes and 0 <= predicted < classes):
        raise ValueError(f"the cell ({true_class}, {predicted}) is outside the {classes}x{classes} matrix")
    y_true, pred_a, pred_b = np.asarray(a.y_true), np.asarray(a.y_pred), np.asarray(b.y_pred)
    of_class = y_true == true_class
    into = np.flatnonzero(of_class & (pred_b == predicted) & (pred_a != predicted))
    out_of = np.flatnonzero(of_class & (pred_a == predicted) & (pred_b != predicted))
    return into, out_of


# -- the report's content -------------------------------------------------------

@dataclass
class LayerRow:
    name: str
    kind: str  # the layer's class name, e.g. "Conv2D", "Functional" for a nested base
    params: int
    trainable: bool


def layer_table(model_path: str | Path) -> list[LayerRow]:
    """The top-level layers of a saved .h5 or .keras model and their
    parameter counts, read with h5py and json only (no Keras, so nothing in
    the file runs); a nested model (a pretrained base) is one row with its
    total. EngineError with a clear message when the file cannot be read."""
    import h5py

    path = Path(model_path)
    if not path.is_file():
        raise EngineError(f"cannot read the layers of {printable(path)}: there is no such file")
    try:
        if path.suffix.lower() == ".keras" or zipfile.is_zipfile(path):
            return _keras_layers(path)
        with h5py.File(path, "r") as handle:
            config = _json_text(handle.attrs.get("model_config"), "its model_config attribute")
            weights = handle.get("model_weights", handle)
            return [LayerRow(name=name, kind=kind, params=_count(weights.get(name)), trainable=trainable)
                    for name, kind, trainable in _top_layers(config)]
    except EngineError as exc:
        raise EngineError(f"cannot read the layers of {printable(path)}: {exc}") from None
    except (OSError, KeyError, ValueError, TypeError, zipfile.BadZipFile) as exc:
        raise EngineError(f"cannot read the layers of {printable(path)}: it is not a readable Keras model "
                          f"file ({printable(exc)})") from None


def _keras_layers(path: Path) -> list[LayerRow]:
    """A .keras zip: config.json names the layers; model.weights.h5 keeps each
    layer's variables under layers/<class name in snake case>[_<n>] in the
    order of the layers (Keras' saving_lib), which is how rows find them."""
    import h5py

    with zipfile.ZipFile(path) as archive:
        config = _json_text(archive.read("config.json"), "config.json")
        layers = _top_layers(config)
        if "model.weights.h5" not in archive.namelist():
            raise EngineError("it has no model.weights.h5")
        with archive.open("model.weights.h5") as member, \
                tempfile.SpooledTemporaryFile(max_size=64 * 2**20) as copy:
            shutil.copyfileobj(member, copy)  # h5py seeks back and forth: a seekable copy, in memory if small
            copy.seek(0)
            with h5py.File(copy, "r") as handle:
                group = handle.get("layers")
                used: dict[str, int] = {}
                rows = []
                for name, kind, trainable in layers:
                    key = _snake_case(kind)
                    used[key] = used.get(key, -1) + 1
                    key = f"{key}_{used[key]}" if used[key] else key
                    rows.append(LayerRow(name=name, kind=kind, params=_count(group.get(key) if group else None),
                                         trainable=trainable))
                return rows


def _json_text(value, what: str) -> dict:
    if value is None:
        raise EngineError(f"it has no {what} (not a whole model saved by Keras)")
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    config = json.loads(value)
    if not isinstance(config, dict):
        raise EngineError(f"its {what} is not a model's configuration")
    return config


def _top_layers(config: dict) -> list[tuple[str, str, bool]]:
    """(name, class name, trainable) of each top-level layer of a Functional or Sequential config."""
    layers = (config.get("config") or {}).get("layers")
    if not isinstance(layers, list):
        raise EngineError(f"its configuration ({printable(config.get('class_name', '?'))}) lists no layers")
    rows = []
    for layer in layers:
        settings = layer.get("config") or {}
        rows.append((str(settings.get("name", layer.get("name", ""))), str(layer.get("class_name", "")),
                     bool(settings.get("trainable", True))))
    return rows


def _snake_case(name: str) -> str:
    """keras.src.utils.naming.to_snake_case, which names the groups of a .keras weights file."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _count(group) -> int:
    """Values in every dataset under an h5py group; a random layer's seed state is not a weight."""
    import h5py

    if group is None:
        return 0
    if isinstance(group, h5py.Dataset):
        return int(group.size)
    total = 0

    def add(name: str, item) -> None:
        nonlocal total
        if isinstance(item, h5py.Dataset) and not any(part.startswith("seed_generator") for part in name.split("/")):
            total += int(item.size)

    group.visititems(add)
    return total


@dataclass
class Comparison:
    """Everything a report of the selected runs shows, in the order selected.

    `pairs` compares every other run against the first (the baseline);
    `not_paired` says, per run that could not be paired, why not.
    """

    results: list[Any]  # RunResults, images not loaded
    rows: list[RunRow]
    settings: list[SettingRow]
    layers: dict[str, list[LayerRow]]  # run_id -> the model's layers ([] when unreadable)
    pairs: list[HeadToHead]
    not_paired: dict[str, str]
    observations: list[str]
    conclusion: list[dict[str, Any]]  # model, name, batch size, epochs, test accuracy, test loss
    environment: dict[str, str]  # library versions, backend, device, seeds


def compare_runs(store, runs: list[str], report: Callable[[str], None] | None = None) -> Comparison:
    """Gather a Comparison of the named runs (ids, names or prefixes as the
    store resolves them). EngineError for an unknown run or fewer than one run."""
    from engine.evaluation import load_results

    if not runs:
        raise EngineError("no runs to compare: name at least one run (see the 'runs' command)")
    records = []
    for run in runs:
        record = store.get(run)
        if record.run_id not in {r.run_id for r in records}:  # a run named twice is compared once
            records.append(record)
    results = []
    for record in records:
        if report is not None:
            report(f"Reading the results of run {printable(record.name)}")
        results.append(load_results(store, record.run_id, load_images=False))
    rows = [_run_row(store, record) for record in records]
    layers: dict[str, list[LayerRow]] = {}
    for one in results:
        try:
            layers[one.record.run_id] = layer_table(one.model_path) if one.model_path is not None else []
        except EngineError:
            layers[one.record.run_id] = []
    pairs, not_paired = [], {}
    baseline = results[0]
    for other in results[1:]:
        reason = comparable(baseline, other)
        if reason:
            not_paired[other.record.run_id] = reason
            continue
        if report is not None:
            report(f"Comparing run {printable(other.record.name)} with run {printable(baseline.record.name)}")
        pairs.append(head_to_head(baseline, other))
    return Comparison(
        results=results, rows=rows, settings=settings_rows([one.config for one in results]), layers=layers,
        pairs=pairs, not_paired=not_paired, observations=observations(rows, results, pairs),
        conclusion=[{"run_id": row.run_id, "model": row.model, "name": row.name, "batch_size": row.batch_size,
                     "epochs": row.epochs_done, "test_accuracy": row.test_accuracy, "test_loss": row.test_loss}
                    for row in rows],
        environment=environment(results),
    )


def environment(results: list[Any] = ()) -> dict[str, str]:
    """Library versions, the Keras backend, the device and each run's seeds,
    without importing Keras when it is not loaded yet (the CLI answers fast):
    versions from the installed packages, the backend from KERAS_BACKEND or
    keras.json, the device "CPU" unless Keras is loaded and sees a GPU."""
    if "keras" in sys.modules:
        from engine.system import backend_info

        info = backend_info()
        backend, device = info["backend"], info["device"]
    else:
        backend, device = _configured_backend(), "not asked (Keras was not loaded)"
    library = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}.get(backend, backend)
    found = {"Keras": _version("keras"), "Backend": f"{backend} {_version(library)}".strip(), "Device": device,
             "NumPy": _version("numpy"), "h5py": _version("h5py"), "Python": platform.python_version(),
             "Platform": platform.platform(terse=True)}
    for one in results:
        t, d = one.config.training, one.config.dataset
        found[f"Seeds of run '{valid_text(one.record.name)}'"] = f"training {t.seed}, dataset {d.seed}"
    return found


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return "not installed"


def _configured_backend() -> str:
    """The backend Keras would start with: KERAS_BACKEND, else keras.json's, else "tensorflow"."""
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        saved = json.loads(Path(home, "keras.json").read_text())
        return str(saved.get("backend") or "tensorflow")
    except (OSError, ValueError, AttributeError):
        return "tensorflow"


def observations(rows: list[RunRow], results: list[Any], pairs: list[HeadToHead]) -> list[str]:
    """Sentences computed from the numbers: the most accurate run and by how
    many points over the next, and whether McNemar's test says it is
    significant; which runs overfit (train accuracy more than OVERFIT_POINTS
    above validation accuracy, the threshold stated); the fastest to train;
    the smallest model."""
    by_id = {one.record.run_id: one for one in results}
    sentences = [_most_accurate(rows, by_id, pairs)]
    sentences += _overfitting(rows, by_id)
    sentences += [s for s in (_fastest(rows), _fastest_predictions(rows), _smallest(rows)) if s]
    return [s for s in sentences if s]


def _who(row: RunRow) -> str:
    return f"{row.model} (run '{printable(row.name)}')"


def _percent(value: float) -> str:
    return f"{100 * value:.1f}%"


def _most_accurate(rows: list[RunRow], by_id: dict, pairs: list[HeadToHead]) -> str:
    scored = sorted((row for row in rows if row.test_accuracy is not None),
                    key=lambda row: -row.test_accuracy)
    if not scored:
        return "No run has test metrics yet: evaluate the runs to compare their accuracy."
    best = scored[0]
    split = f"{best.split or 'test'} accuracy"
    if len(scored) == 1:
        return f"{_who(best)} reaches {_percent(best.test_accuracy)} {split}."
    runner = scored[1]
    points = 100 * (best.test_accuracy - runner.test_accuracy)
    if round(points, 1) == 0:
        head = (f"{_who(best)} and {_who(runner)} are the most accurate, equally: "
                f"{_percent(best.test_accuracy)} {split}")
    else:
        head = (f"{_who(best)} is the most accurate: {_percent(best.test_accuracy)} {split}, "
                f"{points:.1f} points above {_who(runner)}")
    first, second = sorted((best, runner), key=rows.index)  # in the order selected, as the pairs are
    a, b = by_id.get(first.run_id), by_id.get(second.run_id)
    reason = comparable(a, b) if a is not None and b is not None else "they have no stored predictions"
    if reason:
        return f"{head}; McNemar's test cannot compare them image by image: {reason}."
    pair = next((p for p in pairs if {p.a_id, p.b_id} == {a.record.run_id, b.record.run_id}), None)
    if pair is not None:
        only, p = len(pair.only_a) + len(pair.only_b), pair.mcnemar_p
    else:
        right_a, right_b = a.y_pred == a.y_true, b.y_pred == b.y_true
        only_a, only_b = int((right_a & ~right_b).sum()), int((right_b & ~right_a).sum())
        only, p = only_a + only_b, mcnemar_exact(only_a, only_b)
    verdict = (f"so the difference is more than chance (p < {SIGNIFICANCE:g})" if p < SIGNIFICANCE
               else f"so the difference may be chance (p >= {SIGNIFICANCE:g})")
    return (f"{head}; McNemar's exact test on the {only:,} images only one of them gets right gives "
            f"p = {_p_text(p)}, {verdict}.")


def _p_text(p: float) -> str:
    return f"{p:.4f}" if p >= 0.0001 else f"{p:.1e}"


def _overfitting(rows: list[RunRow], by_id: dict) -> list[str]:
    """One sentence per run that overfits, or one saying none does; runs with no validation are named."""
    gaps, unjudged = [], []
    for row in rows:
        one = by_id.get(row.run_id)
        train, val = (_last_finite(one.history, key) if one is not None else None
                      for key in ("accuracy", "val_accuracy"))
        if train is None or val is None:
            unjudged.append(row)
        else:
            gaps.append((row, train, val, 100 * (train - val)))
    threshold = f"more than the {OVERFIT_POINTS:g}-point threshold"
    sentences = [f"{_who(row)} overfits: in its last epoch its training accuracy ({_percent(train)}) is "
                 f"{gap:.1f} points above its validation accuracy ({_percent(val)}), {threshold}."
                 for row, train, val, gap in gaps if round(gap, 1) > OVERFIT_POINTS]  # as shown
    within = [(row, gap) for row, _, _, gap in gaps if round(gap, 1) <= OVERFIT_POINTS]
    if within and not sentences:
        row, gap = max(within, key=lambda item: item[1])
        runs = "No run overfits" if len(within) > 1 else f"{_who(row)} does not overfit"
        sentences.append(f"{runs}: in the last epoch, training accuracy is within the {OVERFIT_POINTS:g}-point "
                         f"threshold of validation accuracy (the largest gap is {gap:.1f} points, {_who(row)}).")
    elif within:
        gaps_text = "; ".join(f"{_who(row)}, {gap:.1f} points" for row, gap in within)
        sentences.append(f"Within the {OVERFIT_POINTS:g}-point threshold (training minus validation accuracy in "
                         f"the last epoch): {gaps_text}.")
    if unjudged:
        names = ", ".join(_who(row) for row in unjudged)
        sentences.append(f"Overfitting cannot be judged for {names}: no training and validation accuracy "
                         "in the history.")
    return sentences


def _last_finite(history: dict[str, list[float]], key: str) -> float | None:
    values = [v for v in history.get(key, []) if isinstance(v, float) and math.isfinite(v)]
    return values[-1] if values else None


def _duration(seconds: float) -> str:
    from engine.text import format_seconds

    return f"{seconds:.1f} s" if seconds < 60 else format_seconds(seconds)


def _fastest(rows: list[RunRow]) -> str:
    timed = sorted((row for row in rows if row.train_seconds > 0 and row.epochs_done > 0),
                   key=lambda row: row.train_seconds)
    if not timed:
        return ""

    def spent(row: RunRow) -> str:
        return (f"{_duration(row.train_seconds)} for {row.epochs_done} epoch{'s' * (row.epochs_done != 1)} "
                f"({_duration(row.train_seconds / row.epochs_done)} per epoch)")

    fastest = timed[0]
    if len(timed) == 1:
        return f"{_who(fastest)} trained in {spent(fastest)}."
    slowest = timed[-1]
    return (f"{_who(fastest)} was the fastest to train: {spent(fastest)}; the slowest, {_who(slowest)}, "
            f"took {spent(slowest)}.")


def _fastest_predictions(rows: list[RunRow]) -> str:
    timed = sorted((row for row in rows if row.ms_per_image is not None), key=lambda row: row.ms_per_image)
    if len(timed) < 2:
        return ""
    fastest, slowest = timed[0], timed[-1]
    return (f"{_who(fastest)} predicts fastest: {fastest.ms_per_image:.3g} ms per {fastest.split or 'test'} "
            f"image, against {slowest.ms_per_image:.3g} ms for {_who(slowest)} (the evaluation's predict "
            "time over the whole split, start-up included).")


def _smallest(rows: list[RunRow]) -> str:
    counted = sorted((row for row in rows if row.params_total > 0), key=lambda row: row.params_total)
    if not counted:
        return ""
    smallest, largest = counted[0], counted[-1]
    size = f"{smallest.params_total:,} parameters ({smallest.params_trainable:,} trainable)"
    if len(counted) == 1:
        return f"{_who(smallest)} has {size}."
    if smallest.params_total == largest.params_total:
        return f"The models are the same size: {size} each."
    return (f"{_who(smallest)} is the smallest model: {size}, against {largest.params_total:,} for "
            f"{_who(largest)} ({largest.params_total / smallest.params_total:.1f} times as many).")
