"""Metrics from a model's predicted probabilities, and evaluating a run.

The metrics are written with numpy on purpose: these are a few lines each,
scikit-learn (1 more dependency of ~40 MB) would only be needed for them,
and the tests check every number against scikit-learn's definitions
(zero_division=0).

Every run that ends is evaluated on the whole test split (the validation
split where there is no test split): the Trainer does it with the model in
memory, finished or stopped; `evaluate_run` does it later from the saved
model (an interrupted run, or one whose evaluation was cancelled).
Evaluation can be cancelled between batches, so closing the window never
waits for it.

What is stored lets the Results view answer its questions without the
model: per image its position in the evaluated split (`indices`), the
predicted class, the top-k and the probability of its true class (so the
most confident mistakes, the highest losses, come first), and a fingerprint
of the evaluated images and labels. Reopening a run loads its dataset again
and shows the pictures only when the fingerprint still matches, so a
dataset that changed or moved never puts wrong pictures beside the
predictions. `load_results` reads all of it back; the helpers below it
(`most_confused`, `normalized_confusion`, `per_class_table`, `select`) are
one call per question the view asks.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from engine.config import RunConfig
from engine.errors import EngineError
from engine.events import StageEvent
from engine.runs import RunRecord
from engine.text import printable

REPORT_INTERVAL = 0.25  # seconds between evaluation progress reports
EVALUATION_BATCH = 256  # at least this many images per predict batch: inference holds no gradients


@dataclass
class Evaluation:
    """Everything the Results view shows about one split."""

    split: str
    loss: float
    accuracy: float
    top5_accuracy: float
    confusion: np.ndarray  # (classes, classes): rows true, columns predicted
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray
    y_true: np.ndarray
    top_k_indices: np.ndarray  # (N, k) best first
    top_k_probs: np.ndarray
    class_names: list[str] = field(default_factory=list)
    y_pred: np.ndarray | None = None  # (N,) the top-1 class
    true_prob: np.ndarray | None = None  # (N,) float32, the probability given to the true class
    indices: np.ndarray | None = None  # (N,) each image's position in the evaluated split
    fingerprint: str = ""  # images_fingerprint of the evaluated images and labels; "" when unknown
    ms_per_image: float | None = None  # predict's wall time per image, in milliseconds; None when not timed
    tta: str = "none"  # "flip": each image's probabilities are the mean of its own and its mirror image's
    without_tta: dict | None = None  # with tta, the loss and accuracy of the images alone (plain Keras' predict)

    @property
    def macro(self) -> dict[str, float]:
        return {
            "precision": float(self.precision.mean()),
            "recall": float(self.recall.mean()),
            "f1": float(self.f1.mean()),
        }

    def summary(self) -> dict:
        """A JSON-ready dict for metrics.json."""
        per_class = [
            {
                "class": name,
                "precision": float(p),
                "recall": float(r),
                "f1": float(f),
                "support": int(s),
            }
            for name, p, r, f, s in zip(self.class_names, self.precision, self.recall, self.f1, self.support)
        ]
        return {
            "split": self.split,
            "images": int(len(self.y_true)),
            "loss": self.loss,
            "accuracy": self.accuracy,
            "top5_accuracy": self.top5_accuracy,
            "macro": self.macro,
            "per_class": per_class,
            "fingerprint": self.fingerprint,
            "ms_per_image": self.ms_per_image,
            "tta": self.tta,
            "without_tta": self.without_tta,
        }

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays for predictions.npz (text as 0-d unicode arrays, so no pickle is needed)."""
        return {
            "confusion": self.confusion,
            "y_true": self.y_true,
            "y_pred": self.y_pred,
            "top_k_indices": self.top_k_indices,
            "top_k_probs": self.top_k_probs,
            "true_prob": self.true_prob,
            "indices": self.indices,
            "class_names": np.array(self.class_names),
            "split": np.array(self.split),
            "fingerprint": np.array(self.fingerprint),
        }


def images_fingerprint(images: np.ndarray, labels: np.ndarray) -> str:
    """"sha256:<hex>" over the images' dtype, shape and bytes, then the labels as int64.

    It tells whether the images a run was evaluated on are still the ones
    its dataset gives: any changed pixel, label, order or size changes it.
    About 0.03 s for CIFAR-10's 10,000 test images.
    """
    images = np.ascontiguousarray(images)
    labels = np.ascontiguousarray(np.asarray(labels).reshape(-1), dtype="<i8")
    digest = hashlib.sha256(f"{images.dtype.str} {tuple(images.shape)}\n".encode())
    digest.update(images.reshape(-1).view(np.uint8))
    digest.update(labels.view(np.uint8))
    return "sha256:" + digest.hexdigest()


def evaluate_probabilities(
    probs: np.ndarray, y_true: np.ndarray, class_names: list[str], split: str = "test", k: int = 5,
    indices: np.ndarray | None = None, fingerprint: str = "",
) -> Evaluation:
    """Compute every metric from softmax outputs (N, classes) and labels (N,).

    `indices` are the images' positions in the split (default 0..N-1, the
    whole split in order); `fingerprint` is images_fingerprint of them.
    """
    probs = np.asarray(probs, dtype=np.float64)
    y_true = np.asarray(y_true, dtype=np.int64).reshape(-1)
    n, classes = probs.shape
    if len(y_true) != n:
        raise ValueError(f"{n} predictions for {len(y_true)} labels")
    indices = np.arange(n, dtype=np.int64) if indices is None else np.asarray(indices, dtype=np.int64).reshape(-1)
    if len(indices) != n:
        raise ValueError(f"{n} predictions for {len(indices)} image indices")
    eps = 1e-7
    picked = np.clip(probs[np.arange(n), y_true], eps, 1.0) if n else np.array([])
    loss = float(-np.log(picked).mean()) if n else float("nan")
    k = min(k, classes)
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    y_pred = order[:, 0] if n else np.array([], dtype=np.int64)
    accuracy = float((y_pred == y_true).mean()) if n else float("nan")
    top5 = min(5, classes)
    top5_accuracy = float((order[:, :top5] == y_true[:, None]).any(axis=1).mean()) if n else float("nan")

    confusion = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(confusion, (y_true, y_pred), 1)
    true_positive = np.diag(confusion).astype(np.float64)
    predicted = confusion.sum(axis=0).astype(np.float64)
    support = confusion.sum(axis=1)
    precision = np.divide(true_positive, predicted, out=np.zeros(classes), where=predicted > 0)
    recall = np.divide(true_positive, support, out=np.zeros(classes), where=support > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros(classes), where=denominator > 0)

    return Evaluation(
        split=split,
        loss=loss,
        accuracy=accuracy,
        top5_accuracy=top5_accuracy,
        confusion=confusion,
        precision=precision,
        recall=recall,
        f1=f1,
        support=support,
        y_true=y_true,
        top_k_indices=order.astype(np.int16),
        top_k_probs=np.take_along_axis(probs, order, axis=1).astype(np.float32),
        class_names=list(class_names),
        y_pred=y_pred.astype(np.int64),
        true_prob=(probs[np.arange(n), y_true] if n else np.zeros(0)).astype(np.float32),
        indices=indices,
        fingerprint=fingerprint,
    )


def evaluation_split(dataset) -> tuple[str, np.ndarray, np.ndarray]:
    """The split a run is evaluated on: test, or validation where there is no test split."""
    if len(dataset.y_test):
        return "test", dataset.x_test, dataset.y_test
    return "validation", dataset.x_val, dataset.y_val


def evaluate_model(model, x: np.ndarray, y: np.ndarray, class_names: list[str], split: str = "test",
                   batch_size: int = EVALUATION_BATCH, should_stop: Callable[[], bool] | None = None,
                   report: Callable[[StageEvent], None] | None = None, tta: str = "none") -> Evaluation | None:
    """Predict the whole split in batches and compute every metric.

    With `tta` "flip" each image's probabilities are the mean of the model's
    for it and for its mirror image (left-right), and the evaluation also
    keeps the accuracy and loss of the images alone (`without_tta`).

    `should_stop` is asked after each predict call (Keras' `stop_predicting`
    ends the loop there); None comes back when it cut the split short.
    `report` gets StageEvent("evaluate", ..., fraction) a few times a second.
    """
    import keras

    passes = 2 if tta == "flip" else 1  # one stage over both passes, so its fraction and ETA cover the whole
    text = f"Evaluating on the whole {split} split ({len(y)} images{', and mirrored' if passes == 2 else ''})"
    if report is not None:
        report(StageEvent("evaluate", text, 0.0))
    if should_stop is not None and should_stop():
        return None

    class Watch(keras.callbacks.Callback):
        async_safe = True  # reads a flag and a clock

        def __init__(self, done_passes: int = 0):
            super().__init__()
            self.last_report = 0.0
            self.done_passes = done_passes

        def on_predict_batch_end(self, batch, logs=None):
            if should_stop is not None and should_stop():
                self.model.stop_predicting = True
            now = time.monotonic()
            if report is not None and now - self.last_report >= REPORT_INTERVAL:
                self.last_report = now
                fraction = min(1.0, (batch + 1) * batch_size / max(len(y), 1))
                report(StageEvent("evaluate", text, (self.done_passes + fraction) / passes))

    began = time.perf_counter()
    probs = model.predict(x, batch_size=batch_size, verbose=0, callbacks=[Watch()])
    if len(probs) < len(y):
        return None
    plain = None
    if tta == "flip":
        mirrored = model.predict(flipped(x), batch_size=batch_size, verbose=0, callbacks=[Watch(done_passes=1)])
        if len(mirrored) < len(y):
            return None
        plain = evaluate_probabilities(probs, y, class_names, split=split)
        probs = (np.asarray(probs, dtype=np.float64) + mirrored) / 2
    seconds = time.perf_counter() - began
    evaluation = evaluate_probabilities(probs, y, class_names, split=split, fingerprint=images_fingerprint(x, y))
    evaluation.ms_per_image = 1000.0 * seconds / len(y) if len(y) else None
    if plain is not None:
        evaluation.tta = tta
        evaluation.without_tta = {"accuracy": plain.accuracy, "loss": plain.loss,
                                  "top5_accuracy": plain.top5_accuracy, "macro_f1": plain.macro["f1"]}
    return evaluation


def flipped(images: np.ndarray) -> np.ndarray:
    """Images (N, H, W, C) mirrored left-right, as test-time flip averaging feeds them."""
    return np.ascontiguousarray(images[:, :, ::-1])


def evaluate_run(store, run_id: str, dataset=None, report: Callable[[StageEvent], None] | None = None,
                 should_stop: Callable[[], bool] | None = None, save: bool = True) -> Evaluation | None:
    """Evaluate a saved run from its model file and have the store record it.

    The model is the one `RunStore.evaluation_model` names (the final model,
    else best.h5, else last.keras), opened through engine.inference's safe
    loader. Without a `dataset` the run's own is loaded from its config.
    With `save` False nothing is written (another dataset than the run's).
    None comes back when `should_stop` cancelled it; nothing is written then.
    """
    from engine.errors import DatasetError, ModelError
    from engine.inference import load_model_safely, read_class_names

    record = store.get(run_id)
    path = store.evaluation_model(record.run_id)
    config = store.config(record.run_id)
    if dataset is None:
        from engine.datasets import load_dataset

        dataset = load_dataset(config.dataset, report=report, should_stop=should_stop)
    split, x, y = evaluation_split(dataset)
    if not len(y):
        raise DatasetError("the dataset has no test or validation images to evaluate on")
    if should_stop is not None and should_stop():
        return None
    if report is not None:
        report(StageEvent("evaluate", f"Opening {path.name} of run {record.name}"))
    _check_classes(read_class_names(path), list(dataset.class_names), f"{path.name} of run {printable(record.name)}")
    model = load_model_safely(path)
    outputs = model.output_shape[-1]
    if outputs != dataset.num_classes:
        raise ModelError(f"{path.name} of run {record.name} has {outputs} outputs, "
                         f"but the dataset has {dataset.num_classes} classes")
    evaluation = evaluate_model(model, x, y, dataset.class_names, split=split,
                                batch_size=max(config.training.batch_size, EVALUATION_BATCH),
                                should_stop=should_stop, report=report, tta=config.training.tta)
    if evaluation is not None and save:
        store.write_evaluation(record.run_id, evaluation, path.name)
    return evaluation


CLASSES_SHOWN = 6  # names of a class list a mismatch message shows


def _check_classes(model_names: list[str] | None, dataset_names: list[str], model_label: str) -> None:
    """Refuse a dataset whose classes are not the model's, in the same order.

    A different count would fail deep in the metrics (an IndexError), and
    the same count under other names would give numbers that look right and
    mean nothing. The names travel inside the model file; a model without
    them (made elsewhere) is only checked for its number of outputs.
    """
    from engine.errors import ModelError

    if model_names is None or list(model_names) == list(dataset_names):
        return
    raise ModelError(f"{model_label} was trained on {_short_list(model_names)}, but the dataset has "
                     f"{_short_list(dataset_names)}; evaluate on a dataset with the same classes in the same order")


def _short_list(names: list[str]) -> str:
    shown = ", ".join(printable(name) for name in names[:CLASSES_SHOWN])
    more = f", ... ({len(names)} in all)" if len(names) > CLASSES_SHOWN else ""
    return f"{len(names)} classes [{shown}{more}]"


# -- reading a run's results back -------------------------------------------

_REQUIRED_ARRAYS = ("confusion", "y_true", "top_k_indices", "top_k_probs")  # in every predictions.npz ever written
NOTE_NOT_LOADED = "the images were not loaded"
NOTE_OLD_RUN = ("this run was saved before images were matched to predictions; evaluate it again to see its "
                "images")


@dataclass
class RunResults:
    """A run's saved evaluation, as the Results view shows it.

    The arrays have a row per evaluated image, in the order of `indices`
    (each image's position in the evaluated split); `images[i]` is the
    picture of row i. `images` is None when they cannot be shown, and
    `images_note` says why. `needs_evaluation` is True when the run has no
    predictions yet (interrupted, or its evaluation was cancelled): then the
    metrics are empty and the arrays have no rows; `evaluate_run` fills them.
    """

    record: RunRecord
    config: RunConfig
    metrics: dict
    history: dict[str, list[float]]
    split: str
    class_names: list[str]
    confusion: np.ndarray  # (classes, classes): rows true, columns predicted
    y_true: np.ndarray
    y_pred: np.ndarray
    top_k_indices: np.ndarray  # (N, k) best first
    top_k_probs: np.ndarray
    true_prob: np.ndarray  # (N,) float32; NaN where unknown (runs saved before it was stored)
    indices: np.ndarray
    fingerprint: str
    images: np.ndarray | None
    images_note: str
    needs_evaluation: bool
    model_path: Path | None  # the model file the predictions came from, when it still exists
    files: list[str] | None = None  # each row's image file, where the dataset is made of files (test split)

    def __len__(self) -> int:
        return len(self.y_true)


def load_results(store, run_id: str, dataset=None, load_images: bool = True,
                 report: Callable[[StageEvent], None] | None = None,
                 should_stop: Callable[[], bool] | None = None) -> RunResults | None:
    """Read a run's metrics and predictions, and the images they were made on.

    The images come from `dataset`, else from loading the dataset the run's
    settings name (cached, so fast after the first time); they are used
    only when their fingerprint is the stored one. Runs saved before
    fingerprints were stored open without images; their `true_prob` is
    known only where the true class is in the top-k. None comes back when
    `should_stop` cancelled loading the dataset.
    """
    record = store.get(run_id)
    if report is not None:
        report(StageEvent("results", f"Reading the results of run {record.name}"))
    config = store.config(record.run_id)
    history = store.history(record.run_id)
    missing = "this run has no predictions yet: evaluate it"
    try:
        stored = store.predictions(record.run_id)
    except EngineError as exc:  # a damaged file: evaluating again rewrites it
        stored, missing = {}, f"{exc}; evaluate the run again"
    lacking = [key for key in _REQUIRED_ARRAYS if key not in stored]
    if stored and lacking:
        stored, missing = {}, f"predictions.npz of this run has no {', '.join(lacking)}; evaluate the run again"
    metrics = store.metrics(record.run_id)
    model_path = _evaluated_model(store, record)
    if not stored or not metrics:
        empty = np.zeros(0, dtype=np.int64)
        return RunResults(
            record=record, config=config, metrics={}, history=history, split="", class_names=[],
            confusion=np.zeros((0, 0), dtype=np.int64), y_true=empty, y_pred=empty,
            top_k_indices=np.zeros((0, 1), dtype=np.int64), top_k_probs=np.zeros((0, 1), dtype=np.float32),
            true_prob=np.zeros(0, dtype=np.float32), indices=empty, fingerprint="", images=None,
            images_note=missing, needs_evaluation=True,
            model_path=model_path)

    y_true = stored["y_true"].astype(np.int64)
    top_k_indices = stored["top_k_indices"].astype(np.int64)
    top_k_probs = stored["top_k_probs"].astype(np.float32)
    n = len(y_true)
    y_pred = stored["y_pred"].astype(np.int64) if "y_pred" in stored else top_k_indices[:, 0]
    indices = stored["indices"].astype(np.int64) if "indices" in stored else np.arange(n, dtype=np.int64)
    true_prob = stored["true_prob"].astype(np.float32) if "true_prob" in stored else _true_prob_from_top_k(
        y_true, top_k_indices, top_k_probs)
    fingerprint = str(stored["fingerprint"]) if "fingerprint" in stored else str(metrics.get("fingerprint", ""))
    split = str(stored["split"]) if "split" in stored else str(metrics.get("split", "test"))
    class_names = [str(name) for name in stored["class_names"]] if "class_names" in stored else [
        row["class"] for row in metrics.get("per_class", [])]

    images, note, files = None, NOTE_NOT_LOADED, None
    if load_images and not fingerprint:
        note = NOTE_OLD_RUN
    elif load_images:
        try:
            if dataset is None:
                from engine.datasets import load_dataset

                dataset = load_dataset(config.dataset, report=report, should_stop=should_stop)
            images, note = _matching_images(dataset, config, split, indices, y_true, class_names, fingerprint)
            if images is not None and split == "test" and dataset.test_files is not None:
                files = [dataset.test_files[i] for i in indices]
        except (EngineError, OSError, ValueError) as exc:
            if should_stop is not None and should_stop():
                return None
            images, note = None, f"the dataset could not be loaded: {exc}"
    return RunResults(
        record=record, config=config, metrics=metrics, history=history, split=split, class_names=class_names,
        confusion=stored["confusion"].astype(np.int64), y_true=y_true, y_pred=y_pred,
        top_k_indices=top_k_indices, top_k_probs=top_k_probs, true_prob=true_prob, indices=indices,
        fingerprint=fingerprint, images=images, images_note="" if images is not None else note,
        needs_evaluation=False, model_path=model_path, files=files)


def _evaluated_model(store, record) -> Path | None:
    """The file the metrics were computed with, else the one an evaluation would use; None if neither exists."""
    if record.evaluated_model:
        path = store.run_dir(record.run_id) / Path(record.evaluated_model).name
        if path.exists():
            return path
    try:
        return store.evaluation_model(record.run_id)
    except EngineError:
        return None


def _true_prob_from_top_k(y_true, top_k_indices, top_k_probs) -> np.ndarray:
    """The true class's probability where it is in the top-k; NaN (unknown, below the k-th) elsewhere."""
    hit = top_k_indices == y_true[:, None]
    found = hit.any(axis=1)
    true_prob = np.full(len(y_true), np.nan, dtype=np.float32)
    true_prob[found] = top_k_probs[found, hit[found].argmax(axis=1)]
    return true_prob


def _matching_images(dataset, config, split, indices, y_true, class_names, fingerprint):
    """(images, "") when the dataset still holds the evaluated images, else (None, why not)."""
    x, y = (dataset.x_test, dataset.y_test) if split == "test" else (dataset.x_val, dataset.y_val)
    where = config.dataset.path or config.dataset.source
    changed = f"the dataset at {where} changed since this run was evaluated (its images no longer match)"
    if list(dataset.class_names) != list(class_names):
        return None, changed
    if len(indices) and (indices.min() < 0 or indices.max() >= len(y)):
        return None, changed
    images, labels = x[indices], np.asarray(y)[indices]
    if not np.array_equal(labels, y_true) or images_fingerprint(images, labels) != fingerprint:
        return None, changed
    return images, ""


# -- the questions the Results view asks, one call each ----------------------

NORMALIZE_MODES = ("count", "true", "pred", "all")
SELECTIONS = ("all", "misclassified", "true", "predicted", "cell", "confident_mistakes", "unsure_correct")


def most_confused(confusion: np.ndarray, class_names: list[str], top: int = 10,
                  min_count: int = 1) -> list[tuple[str, str, int]]:
    """The off-diagonal cells with the most images, as (true name, predicted name, count), most first
    (ties in the matrix's row-major order), as fastai's Interpretation.most_confused."""
    confusion = np.asarray(confusion)
    off = confusion.astype(np.int64).copy()
    np.fill_diagonal(off, 0)
    flat = off.reshape(-1)
    order = np.argsort(-flat, kind="stable")
    pairs = []
    for position in order[:max(int(top), 0)]:
        count = int(flat[position])
        if count < max(min_count, 1):
            break
        true_index, predicted_index = divmod(int(position), off.shape[1])
        pairs.append((class_names[true_index], class_names[predicted_index], count))
    return pairs


def normalized_confusion(confusion: np.ndarray, mode: str = "count") -> np.ndarray:
    """The matrix as float64: counts ("count"), shares of each true class (rows sum to 1: "true", the
    recall view), of each predicted class (columns sum to 1: "pred", the precision view) or of all
    images ("all"), as scikit-learn's confusion_matrix(normalize=...). A row or column with no
    images gives 0s, not NaN."""
    if mode not in NORMALIZE_MODES:
        raise ValueError(f"unknown normalization {mode!r}; use one of {', '.join(NORMALIZE_MODES)}")
    counts = np.asarray(confusion, dtype=np.float64)
    if mode == "count":
        return counts.copy()
    if mode == "true":
        totals = counts.sum(axis=1, keepdims=True)
    elif mode == "pred":
        totals = counts.sum(axis=0, keepdims=True)
    else:
        totals = np.full((1, 1), counts.sum())
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


def per_class_table(results, averages: bool = True) -> list[dict]:
    """Rows of {"class", "precision", "recall", "f1", "support", "average"} computed from the confusion
    matrix, one per class, then (with `averages`) "macro avg" and "weighted avg" as scikit-learn's
    classification_report gives them (zero_division=0); "average" is True on those two rows so a
    sorted table can keep them last."""
    confusion = np.asarray(results.confusion, dtype=np.float64)
    classes = len(confusion)
    true_positive = np.diag(confusion)
    predicted = confusion.sum(axis=0)
    support = confusion.sum(axis=1)
    precision = np.divide(true_positive, predicted, out=np.zeros(classes), where=predicted > 0)
    recall = np.divide(true_positive, support, out=np.zeros(classes), where=support > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros(classes), where=denominator > 0)
    rows = [{"class": str(name), "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s),
             "average": False}
            for name, p, r, f, s in zip(results.class_names, precision, recall, f1, support)]
    if averages and classes:
        total = support.sum()
        weights = support / total if total else np.zeros(classes)
        for name, w in (("macro avg", np.full(classes, 1.0 / classes)), ("weighted avg", weights)):
            rows.append({"class": name, "precision": float(w @ precision), "recall": float(w @ recall),
                         "f1": float(w @ f1), "support": int(total), "average": True})
    return rows


def select(results, kind: str, cls=None) -> np.ndarray:
    """Row positions of the images a gallery filter shows (int64, into the results' arrays).

    kind: "all"; "misclassified"; "true" / "predicted" (cls: a class index
    or name); "cell" (cls: (true, predicted)); "confident_mistakes"
    (misclassified, lowest probability of the true class first: the highest
    losses); "unsure_correct" (right answers, lowest top-1 probability
    first). Rows keep the split's order except in the last two.
    """
    y_true, y_pred = np.asarray(results.y_true), np.asarray(results.y_pred)
    names = list(results.class_names)

    def index(value) -> int:
        if isinstance(value, str):
            if value not in names:
                raise ValueError(f"no class {value!r}; the classes are {', '.join(names)}")
            return names.index(value)
        value = int(value)
        if not 0 <= value < len(names):
            raise ValueError(f"class index {value} is out of range 0..{len(names) - 1}")
        return value

    if kind == "all":
        return np.arange(len(y_true), dtype=np.int64)
    if kind == "misclassified":
        return np.flatnonzero(y_true != y_pred)
    if kind == "true":
        return np.flatnonzero(y_true == index(cls))
    if kind == "predicted":
        return np.flatnonzero(y_pred == index(cls))
    if kind == "cell":
        if cls is None or len(cls) != 2:
            raise ValueError("a cell is chosen by (true class, predicted class)")
        return np.flatnonzero((y_true == index(cls[0])) & (y_pred == index(cls[1])))
    if kind == "confident_mistakes":
        rows = np.flatnonzero(y_true != y_pred)
        true_prob = np.asarray(results.true_prob, dtype=np.float64)[rows]
        # Unknown (NaN: an old run, the true class below the top-k): its probability is under the k-th's.
        bound = np.asarray(results.top_k_probs, dtype=np.float64)[rows, -1] if len(rows) else true_prob
        return rows[np.argsort(np.where(np.isnan(true_prob), bound, true_prob), kind="stable")]
    if kind == "unsure_correct":
        rows = np.flatnonzero(y_true == y_pred)
        return rows[np.argsort(np.asarray(results.top_k_probs)[rows, 0], kind="stable")]
    raise ValueError(f"unknown selection {kind!r}; use one of {', '.join(SELECTIONS)}")
