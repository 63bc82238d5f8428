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
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from engine.events import StageEvent

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
        }

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays for predictions.npz."""
        return {
            "confusion": self.confusion,
            "y_true": self.y_true,
            "top_k_indices": self.top_k_indices,
            "top_k_probs": self.top_k_probs,
            "class_names": np.array(self.class_names),
        }


def evaluate_probabilities(
    probs: np.ndarray, y_true: np.ndarray, class_names: list[str], split: str = "test", k: int = 5
) -> Evaluation:
    """Compute every metric from softmax outputs (N, classes) and labels (N,)."""
    probs = np.asarray(probs, dtype=np.float64)
    y_true = np.asarray(y_true, dtype=np.int64).reshape(-1)
    n, classes = probs.shape
    if len(y_true) != n:
        raise ValueError(f"{n} predictions for {len(y_true)} labels")
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
    )


def evaluation_split(dataset) -> tuple[str, np.ndarray, np.ndarray]:
    """The split a run is evaluated on: test, or validation where there is no test split."""
    if len(dataset.y_test):
        return "test", dataset.x_test, dataset.y_test
    return "validation", dataset.x_val, dataset.y_val


def evaluate_model(model, x: np.ndarray, y: np.ndarray, class_names: list[str], split: str = "test",
                   batch_size: int = EVALUATION_BATCH, should_stop: Callable[[], bool] | None = None,
                   report: Callable[[StageEvent], None] | None = None) -> Evaluation | None:
    """Predict the whole split in batches and compute every metric.

    `should_stop` is asked after each predict call (Keras' `stop_predicting`
    ends the loop there); None comes back when it cut the split short.
    `report` gets StageEvent("evaluate", ..., fraction) a few times a second.
    """
    import keras

    text = f"Evaluating on the whole {split} split ({len(y)} images)"
    if report is not None:
        report(StageEvent("evaluate", text, 0.0))
    if should_stop is not None and should_stop():
        return None

    class Watch(keras.callbacks.Callback):
        async_safe = True  # reads a flag and a clock

        def __init__(self):
            super().__init__()
            self.last_report = 0.0

        def on_predict_batch_end(self, batch, logs=None):
            if should_stop is not None and should_stop():
                self.model.stop_predicting = True
            now = time.monotonic()
            if report is not None and now - self.last_report >= REPORT_INTERVAL:
                self.last_report = now
                report(StageEvent("evaluate", text, min(1.0, (batch + 1) * batch_size / max(len(y), 1))))

    probs = model.predict(x, batch_size=batch_size, verbose=0, callbacks=[Watch()])
    if len(probs) < len(y):
        return None
    return evaluate_probabilities(probs, y, class_names, split=split)


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
    from engine.inference import load_model_safely

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
    model = load_model_safely(path)
    outputs = model.output_shape[-1]
    if outputs != dataset.num_classes:
        raise ModelError(f"{path.name} of run {record.name} has {outputs} outputs, "
                         f"but the dataset has {dataset.num_classes} classes")
    evaluation = evaluate_model(model, x, y, dataset.class_names, split=split,
                                batch_size=max(config.training.batch_size, EVALUATION_BATCH),
                                should_stop=should_stop, report=report)
    if evaluation is not None and save:
        store.write_evaluation(record.run_id, evaluation, path.name)
    return evaluation
