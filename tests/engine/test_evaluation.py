"""The engine's metrics equal scikit-learn's definitions on fixed inputs; what an evaluation stores opens again."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn import metrics as sk

from engine.evaluation import evaluate_model, evaluate_probabilities
from toydata import CLASS_NAMES, toy_config, toy_images


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


# -- what an evaluation stores, and reading it back ---------------------------

def test_each_image_keeps_its_index_prediction_and_true_class_probability(fixed):
    probs, y = fixed
    result = evaluate_probabilities(probs, y, [f"c{i}" for i in range(6)], fingerprint="sha256:x")
    np.testing.assert_array_equal(result.y_pred, probs.argmax(axis=1))
    np.testing.assert_allclose(result.true_prob, probs[np.arange(300), y], rtol=1e-6)
    np.testing.assert_array_equal(result.indices, np.arange(300))
    arrays = result.arrays()
    assert {"indices", "y_pred", "true_prob", "fingerprint", "split"} <= set(arrays)
    assert str(arrays["fingerprint"]) == "sha256:x" and result.summary()["fingerprint"] == "sha256:x"
    # The per-image loss scikit-learn's log_loss averages is -log of the true class's probability.
    assert -np.log(result.true_prob.astype(np.float64)).mean() == pytest.approx(
        sk.log_loss(y, probs, labels=range(6)), rel=1e-5)


def test_the_fingerprint_changes_with_any_pixel_label_or_order():
    from engine.evaluation import images_fingerprint

    images, labels = toy_images(12)
    same = images_fingerprint(images.copy(), labels.copy())
    assert same == images_fingerprint(images, labels) and same.startswith("sha256:")
    pixel = images.copy()
    pixel[3, 5, 7, 1] ^= 1
    label = labels.copy()
    label[0] = (label[0] + 1) % 4
    order = np.arange(12)[::-1]
    others = {images_fingerprint(pixel, labels), images_fingerprint(images, label),
              images_fingerprint(images[order], labels[order]), images_fingerprint(images[:11], labels[:11])}
    assert same not in others and len(others) == 4


@pytest.fixture
def picture_run(tmp_path):
    """A run whose settings name a picture folder (train/ and test/), with a saved, untrained SimCNN and
    no evaluation yet: its results are read from its files as the Results view reads them."""
    from engine.models import build_model
    from engine.runs import RunStore

    folder = tmp_path / "pictures"
    for split, count, seed in (("train", 24, 1), ("test", 20, 2)):
        images, labels = toy_images(count, seed=seed)
        for i, (image, label) in enumerate(zip(images, labels)):
            (folder / split / CLASS_NAMES[label]).mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / split / CLASS_NAMES[label] / f"{i}.png")
    config = toy_config()
    config.dataset.source, config.dataset.path = "folder", str(folder)
    store = RunStore(tmp_path / "store")
    run_id = store.create_run(config).run_id
    # a folder's classes come in its subfolders' order, as training would have saved them
    store.save_model(run_id, build_model(config.model, (32, 32, 3), 4), "final", sorted(CLASS_NAMES))
    return store, run_id, folder


def test_results_open_with_their_images_and_say_when_the_dataset_changed(picture_run):
    from engine.datasets import load_dataset
    from engine.evaluation import evaluate_run, load_results, select
    from engine.inference import load_model_safely

    store, run_id, folder = picture_run
    before = load_results(store, run_id)
    assert before.needs_evaluation and before.metrics == {} and len(before) == 0
    assert before.model_path == store.model_path(run_id)

    evaluate_run(store, run_id)
    results = load_results(store, run_id)
    assert not results.needs_evaluation and results.images_note == ""
    dataset = load_dataset(store.config(run_id).dataset)
    np.testing.assert_array_equal(results.images, dataset.x_test)
    np.testing.assert_array_equal(results.y_true, dataset.y_test)
    assert results.split == "test" and results.class_names == sorted(CLASS_NAMES) and results.confusion.sum() == 20
    assert results.fingerprint == store.metrics(run_id)["fingerprint"] == str(store.predictions(run_id)["fingerprint"])
    probs = load_model_safely(results.model_path).predict(results.images, verbose=0)
    np.testing.assert_allclose(results.true_prob, probs[np.arange(20), results.y_true], atol=1e-5)
    np.testing.assert_array_equal(results.y_pred, probs.argmax(axis=1))
    np.testing.assert_array_equal(results.images[select(results, "misclassified")],
                                  dataset.x_test[probs.argmax(axis=1) != dataset.y_test])

    first = min((folder / "test" / "top_left").iterdir())
    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(first)
    changed = load_results(store, run_id)
    assert changed.images is None and not changed.needs_evaluation and len(changed) == 20
    assert changed.images_note == (f"the dataset at {folder} changed since this run was evaluated "
                                   "(its images no longer match)")

    shutil.rmtree(folder)
    gone = load_results(store, run_id)
    assert gone.images is None and gone.images_note.startswith("the dataset could not be loaded: ")
    assert gone.metrics["images"] == 20  # the predictions still open

    asked = load_results(store, run_id, load_images=False)
    assert asked.images is None and asked.images_note == "the images were not loaded"


def test_loading_the_dataset_can_be_cancelled(picture_run):
    from engine.evaluation import evaluate_run, load_results

    store, run_id, _ = picture_run
    evaluate_run(store, run_id)
    assert load_results(store, run_id, should_stop=lambda: True) is None


def test_a_run_saved_before_fingerprints_opens_without_images(picture_run):
    """Its predictions.npz had only the confusion matrix, y_true and the top-k; metrics.json no fingerprint."""
    import json

    from engine.evaluation import NOTE_OLD_RUN, load_results, select

    store, run_id, _ = picture_run
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(4), size=20)
    y = np.arange(20) % 4
    old = evaluate_probabilities(probs, y, CLASS_NAMES, k=2)
    folder = store.run_dir(run_id)
    np.savez_compressed(folder / "predictions.npz", **{key: old.arrays()[key] for key in (
        "confusion", "y_true", "top_k_indices", "top_k_probs", "class_names")})
    summary = old.summary()
    del summary["fingerprint"]
    (folder / "metrics.json").write_text(json.dumps({**summary, "model_file": "model.h5"}))

    results = load_results(store, run_id)
    assert results.images is None and results.images_note == NOTE_OLD_RUN and not results.needs_evaluation
    np.testing.assert_array_equal(results.y_pred, probs.argmax(axis=1))
    np.testing.assert_array_equal(results.indices, np.arange(20))
    in_top_2 = (old.top_k_indices == y[:, None]).any(axis=1)
    np.testing.assert_allclose(results.true_prob[in_top_2], probs[in_top_2, y[in_top_2]], rtol=1e-6)
    assert np.isnan(results.true_prob[~in_top_2]).all() and (~in_top_2).any()
    mistakes = select(results, "confident_mistakes")
    assert sorted(mistakes) == sorted(np.flatnonzero(probs.argmax(axis=1) != y))


def test_damaged_predictions_ask_for_a_new_evaluation(picture_run):
    from engine.errors import RunStoreError
    from engine.evaluation import evaluate_run, load_results

    store, run_id, _ = picture_run
    evaluate_run(store, run_id)
    (store.run_dir(run_id) / "predictions.npz").write_bytes(b"PK\x03\x04 not a whole zip")
    with pytest.raises(RunStoreError, match="cannot read .*predictions.npz"):
        store.predictions(run_id)
    results = load_results(store, run_id)
    assert results.needs_evaluation and results.images_note.endswith("; evaluate the run again")
    evaluate_run(store, run_id)
    assert not load_results(store, run_id).needs_evaluation


def test_a_run_of_the_first_store_without_predictions_needs_evaluation(tmp_path):
    from engine.evaluation import load_results
    from engine.runs import RunStore

    shutil.copytree(Path(__file__).parents[1] / "data" / "store_v1", tmp_path / "store")
    store = RunStore(tmp_path / "store")
    [record] = store.list_runs()
    results = load_results(store, record.run_id)
    assert results.needs_evaluation and results.metrics == {} and results.model_path is None
    assert results.history["epoch"] == [0.0, 1.0]


# -- the Results view's questions, against scikit-learn -----------------------

@pytest.fixture
def predicted():
    """Six classes, one never predicted (5) and one with no images (4)."""
    rng = np.random.default_rng(11)
    y = rng.choice([0, 1, 2, 3, 5], size=200)
    logits = rng.normal(size=(200, 6))
    logits[np.arange(200), y] += 1.2
    logits[:, 5] -= 10
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return evaluate_probabilities(probs, y, [f"c{i}" for i in range(6)]), probs, y


@pytest.mark.parametrize("mode", ["true", "pred", "all"])
def test_normalized_confusion_is_scikit_learns(predicted, mode):
    from engine.evaluation import normalized_confusion

    result, probs, y = predicted
    expected = sk.confusion_matrix(y, probs.argmax(axis=1), labels=range(6), normalize=mode)
    np.testing.assert_allclose(normalized_confusion(result.confusion, mode), expected)
    np.testing.assert_array_equal(normalized_confusion(result.confusion, "count"), result.confusion)
    with pytest.raises(ValueError, match="unknown normalization"):
        normalized_confusion(result.confusion, "rows")


def test_per_class_table_is_scikit_learns_classification_report(predicted):
    from engine.evaluation import per_class_table

    result, probs, y = predicted
    report = sk.classification_report(y, probs.argmax(axis=1), labels=range(6), target_names=result.class_names,
                                      output_dict=True, zero_division=0)
    rows = per_class_table(result)
    assert [row["class"] for row in rows] == result.class_names + ["macro avg", "weighted avg"]
    assert [row["average"] for row in rows] == [False] * 6 + [True, True]
    for row in rows:
        expected = report[row["class"]]
        for key in ("precision", "recall"):
            assert row[key] == pytest.approx(expected[key])
        assert row["f1"] == pytest.approx(expected["f1-score"]) and row["support"] == expected["support"]
    assert len(per_class_table(result, averages=False)) == 6


def test_most_confused_lists_the_largest_mistakes_first(predicted):
    from engine.evaluation import most_confused

    result, _, _ = predicted
    confusion, names = result.confusion, result.class_names
    pairs = most_confused(confusion, names, top=100)
    expected = sorted(((int(confusion[t, p]), t, p) for t in range(6) for p in range(6)
                       if t != p and confusion[t, p]), key=lambda c: (-c[0], c[1], c[2]))
    assert pairs == [(names[t], names[p], n) for n, t, p in expected]
    assert most_confused(confusion, names, top=3) == pairs[:3]
    assert most_confused(np.diag([3, 4]), ["a", "b"]) == []


def test_gallery_selections(predicted):
    from engine.evaluation import select

    result, probs, y = predicted
    y_pred = probs.argmax(axis=1)
    np.testing.assert_array_equal(select(result, "all"), np.arange(200))
    np.testing.assert_array_equal(select(result, "misclassified"), np.flatnonzero(y_pred != y))
    np.testing.assert_array_equal(select(result, "true", 2), np.flatnonzero(y == 2))
    np.testing.assert_array_equal(select(result, "true", "c2"), np.flatnonzero(y == 2))
    np.testing.assert_array_equal(select(result, "predicted", 1), np.flatnonzero(y_pred == 1))
    np.testing.assert_array_equal(select(result, "cell", (0, 1)), np.flatnonzero((y == 0) & (y_pred == 1)))
    assert len(select(result, "cell", (0, 1))) == result.confusion[0, 1]

    losses = -np.log(probs[np.arange(200), y])  # the per-image terms of scikit-learn's log_loss
    mistakes = select(result, "confident_mistakes")
    assert sorted(mistakes) == list(np.flatnonzero(y_pred != y))
    assert np.all(np.diff(losses[mistakes]) <= 1e-6)  # highest loss first
    unsure = select(result, "unsure_correct")
    assert sorted(unsure) == list(np.flatnonzero(y_pred == y))
    assert np.all(np.diff(probs.max(axis=1)[unsure]) >= -1e-6)  # least confident first
    with pytest.raises(ValueError, match="unknown selection"):
        select(result, "everything")
    with pytest.raises(ValueError, match="no class"):
        select(result, "true", "dog")


def test_a_dataset_with_other_classes_than_the_model_is_refused():
    """Other names in the same number would give numbers that mean nothing; another number, an IndexError."""
    from engine.errors import ModelError
    from engine.evaluation import _check_classes

    _check_classes(["a", "b"], ["a", "b"], "model.h5")
    _check_classes(None, ["a", "b"], "model.h5")  # a model made elsewhere: only its outputs are checked
    for dataset, shown in ((["b", "a"], "2 classes [b, a]"), (["a", "b", "c"], "3 classes [a, b, c]"),
                           ([f"c{i}" for i in range(100)], "100 classes [c0, c1, c2, c3, c4, c5, ... (100 in all)]"),
                           (["a", "\x1b[2J"], "2 classes [a, \\x1b[2J]")):
        with pytest.raises(ModelError) as caught:
            _check_classes(["a", "b"], dataset, "model.h5 of run x")
        message = str(caught.value)
        assert message.startswith("model.h5 of run x was trained on 2 classes [a, b], but the dataset has " + shown)
        assert "\n" not in message and "\x1b" not in message
