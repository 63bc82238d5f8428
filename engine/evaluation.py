"""Metrics from a model's predicted probabilities.

Written with numpy on purpose: these are a few lines each, scikit-learn
(1 more dependency of ~40 MB) would only be needed for them, and the tests
check every number against scikit-learn's definitions (zero_division=0).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


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


def evaluate_model(model, x: np.ndarray, y: np.ndarray, class_names: list[str], split: str = "test",
                   batch_size: int = 256) -> Evaluation:
    """Predict the whole split in batches and compute every metric."""
    probs = model.predict(x, batch_size=batch_size, verbose=0)
    return evaluate_probabilities(probs, y, class_names, split=split)
