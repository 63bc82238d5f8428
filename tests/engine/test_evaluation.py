"""The engine's metrics equal scikit-learn's definitions on fixed inputs."""

import numpy as np
import pytest
from sklearn import metrics as sk

from engine.evaluation import evaluate_model, evaluate_probabilities


@pytest.fixture
def fixed():
    rng = np.random.default_rng(7)
    logits = rng.normal(size=(300, 6))
    logits[np.arange(300), np.arange(300) % 6] += 1.0  # better than chance, not perfect
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = np.arange(300) % 6
    y[::17] = 5  # unbalanced support
    return probs, y


def test_metrics_equal_scikit_learn(fixed):
    probs, y = fixed
    names = [f"c{i}" for i in range(6)]
    result = evaluate_probabilities(probs, y, names)
    y_pred = probs.argmax(axis=1)
    assert result.accuracy == pytest.approx(sk.accuracy_score(y, y_pred))
    assert result.loss == pytest.approx(sk.log_loss(y, probs, labels=range(6)), rel=1e-6)
    assert result.top5_accuracy == pytest.approx(sk.top_k_accuracy_score(y, probs, k=5, labels=range(6)))
    np.testing.assert_array_equal(result.confusion, sk.confusion_matrix(y, y_pred, labels=range(6)))
    p, r, f, s = sk.precision_recall_fscore_support(y, y_pred, labels=range(6), zero_division=0)
    np.testing.assert_allclose(result.precision, p)
    np.testing.assert_allclose(result.recall, r)
    np.testing.assert_allclose(result.f1, f)
    np.testing.assert_array_equal(result.support, s)
    macro = sk.precision_recall_fscore_support(y, y_pred, average="macro", zero_division=0)
    assert result.macro["precision"] == pytest.approx(macro[0])
    assert result.macro["recall"] == pytest.approx(macro[1])
    assert result.macro["f1"] == pytest.approx(macro[2])


def test_a_class_never_predicted_has_zero_precision_like_scikit_learn():
    probs = np.array([[0.9, 0.1, 0.0], [0.8, 0.2, 0.0], [0.1, 0.9, 0.0], [0.6, 0.3, 0.1]])
    y = np.array([0, 1, 1, 2])
    result = evaluate_probabilities(probs, y, ["a", "b", "c"])
    p, r, f, _ = sk.precision_recall_fscore_support(y, probs.argmax(1), labels=range(3), zero_division=0)
    np.testing.assert_allclose(result.precision, p)
    np.testing.assert_allclose(result.f1, f)
    assert result.precision[2] == 0.0


def test_top_k_predictions_are_sorted_and_summary_is_json_ready(fixed):
    import json

    probs, y = fixed
    result = evaluate_probabilities(probs, y, [f"c{i}" for i in range(6)])
    assert result.top_k_indices.shape == (300, 5)
    assert np.all(np.diff(result.top_k_probs, axis=1) <= 0)
    np.testing.assert_array_equal(result.top_k_indices[:, 0], probs.argmax(axis=1))
    summary = json.loads(json.dumps(result.summary()))
    assert summary["images"] == 300 and len(summary["per_class"]) == 6


def test_an_evaluation_can_be_cancelled_between_batches():
    import keras

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(inputs))
    x, y = np.random.default_rng(0).normal(size=(64, 4)).astype("float32"), np.arange(64) % 3
    asked = []

    def stop_after_three_batches():
        asked.append(1)
        return len(asked) > 3

    assert evaluate_model(model, x, y, ["a", "b", "c"], batch_size=8, should_stop=stop_after_three_batches) is None
    assert len(asked) == 4  # once before predicting, then after each batch until it said stop
    reports = []
    whole = evaluate_model(model, x, y, ["a", "b", "c"], batch_size=8, should_stop=lambda: False,
                           report=reports.append)
    assert len(whole.y_true) == 64 and reports[0].stage == "evaluate" and reports[0].fraction == 0.0
