"""Runs side by side and head to head, on two tiny runs trained once for the module.

Every number is checked against a count by hand on the stored files
(predictions.npz, history.csv, metrics.json), scikit-learn or scipy, and
the layer table against Keras' own parameter counts.
"""

import csv
import datetime
import json

import h5py
import keras
import numpy as np
import pytest
from scipy.stats import binomtest
from sklearn.metrics import f1_score

from engine import comparison
from engine.comparison import (
    TABLE_COLUMNS, ComparisonError, best_point, comparable, compare_runs, curve, head_to_head, layer_table,
    mcnemar_exact, moved_rows, paired_bootstrap, run_rows, settings_rows, smooth, write_table_csv,
)
from engine.errors import EngineError
from engine.evaluation import evaluate_probabilities, images_fingerprint, load_results
from engine.registry import SETTINGS
from engine.runs import RunStore
from engine.training import Trainer
from toydata import CLASS_NAMES, toy_config, toy_dataset, toy_images


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Run A (batch 16, 1 epoch) and run B (batch 8, 2 epochs), both evaluated on the toy test split."""
    store = RunStore(tmp_path_factory.mktemp("compare-store"))
    ids = []
    for name, batch_size, epochs in (("a16", 16, 1), ("b8", 8, 2)):
        config = toy_config(epochs=epochs, batch_size=batch_size)
        config.name = name
        result = Trainer(config, store=store, dataset=toy_dataset()).run()
        assert result.status == "finished", result.reason
        ids.append(result.run_id)
    return store, ids


def stored(store, run_id):
    with np.load(store.run_dir(run_id) / "predictions.npz") as data:
        return {key: data[key] for key in data.files}


def run_on_other_images(store) -> str:
    """A run evaluated on other test images than the toy split (made without training: its files only)."""
    record = store.create_run(toy_config())
    x, y = toy_images(40, seed=9)
    probs = np.eye(len(CLASS_NAMES))[(y + 1) % len(CLASS_NAMES)] * 0.7 + 0.075
    store.write_evaluation(record.run_id, evaluate_probabilities(
        probs, y, CLASS_NAMES, fingerprint=images_fingerprint(x, y)), "model.h5")
    store.update(record.run_id, status="finished", name="elsewhere")
    return record.run_id


def test_the_table_has_a_row_per_run_with_the_files_numbers(trained):
    store, (a, b) = trained
    rows = run_rows(store)
    assert [row.run_id for row in rows] == [a, b]
    for row, batch_size in zip(rows, (16, 8)):
        metrics = json.loads((store.run_dir(row.run_id) / "metrics.json").read_text())
        record = store.get(row.run_id)
        assert (row.name, row.model, row.architecture, row.batch_size, row.split) == (
            record.name, "SimCNN", "simcnn", batch_size, "test")
        assert row.test_accuracy == record.test_accuracy == metrics["accuracy"]
        assert row.macro_f1 == metrics["macro"]["f1"]
        assert row.ms_per_image == metrics["ms_per_image"] and row.ms_per_image > 0
        assert row.model_size == (store.run_dir(row.run_id) / "model.h5").stat().st_size
        assert row.params_total == record.params_total == 122_820
    assert [row.epochs_done for row in rows] == [1, 2]


def test_a_damaged_or_old_metrics_json_leaves_blank_numbers(tmp_path):
    store = RunStore(tmp_path)
    damaged = run_on_other_images(store)
    (store.run_dir(damaged) / "metrics.json").write_text("{not json")
    old = run_on_other_images(store)
    metrics = json.loads((store.run_dir(old) / "metrics.json").read_text())
    del metrics["ms_per_image"]  # written before the predict time was recorded
    (store.run_dir(old) / "metrics.json").write_text(json.dumps(metrics))
    rows = {row.run_id: row for row in run_rows(store)}
    assert rows[damaged].macro_f1 is None and rows[damaged].ms_per_image is None
    assert rows[damaged].test_accuracy == 0.0  # the index still has it
    assert rows[old].macro_f1 == metrics["macro"]["f1"] and rows[old].ms_per_image is None
    assert load_results(store, old, load_images=False).metrics["accuracy"] == 0.0


def test_the_csv_parses_back_to_the_table(trained, tmp_path):
    store, _ = trained
    rows = run_rows(store)
    rows[0].macro_f1 = None  # a blank cell
    path = tmp_path / "runs.csv"
    write_table_csv(rows, path)
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        assert next(reader) == [header for _, header in TABLE_COLUMNS]
        parsed = list(reader)
    assert len(parsed) == len(rows)
    for row, cells in zip(rows, parsed):
        for (key, _), cell in zip(TABLE_COLUMNS, cells):
            value = getattr(row, key)
            if value is None:
                assert cell == ""
            elif key == "created":
                assert datetime.datetime.fromisoformat(cell).timestamp() == pytest.approx(value, abs=1)
            elif isinstance(value, float):
                assert float(cell) == value
            else:
                assert cell == str(value)


def test_settings_side_by_side_flag_exactly_the_keys_that_differ(trained):
    store, (a, b) = trained
    configs = [store.config(a), store.config(b)]
    rows = settings_rows(configs)
    assert [row.key for row in rows] == list(SETTINGS)
    flat = []
    for config in configs:
        values = config.to_dict()
        flat.append({key: values[key] if "." not in key else values[key.split(".")[0]][key.split(".")[1]]
                     for key in SETTINGS})
    by_hand = {key for key in SETTINGS if flat[0][key] != flat[1][key]}
    assert {row.key for row in rows if row.differs} == by_hand == {"name", "training.batch_size", "training.epochs"}
    shown = {row.key: row for row in rows}
    assert shown["training.batch_size"].values == ["16", "8"]
    assert shown["training.steps_per_epoch"].values == ["auto", "auto"]  # the registry's word for 0
    assert shown["training.optimizer"].values == ["Adam", "Adam"]  # a choice's label
    assert shown["model.architecture"].values == ["SimCNN", "SimCNN"]
    assert shown["training.batch_size"].label == "Batch size"


def test_curves_are_the_history_columns_and_the_best_epoch_is_on_them(trained):
    store, (_, b) = trained
    history = store.history(b)
    x, y = curve(history, "val_accuracy")
    np.testing.assert_array_equal(x, [1, 2])
    np.testing.assert_array_equal(y, history["val_accuracy"])
    x, y = curve(history, "loss", x="time")
    np.testing.assert_array_equal(x, history["elapsed"])
    np.testing.assert_array_equal(y, history["loss"])
    record = store.get(b)
    assert best_point(history, record.best_epoch, "val_accuracy") == (
        record.best_epoch, history["val_accuracy"][record.best_epoch - 1])
    assert curve(history, "val_top5")[0].size == 0 and best_point(history, 0, "loss") is None
    gappy = {"epoch": [0, 1, 2], "loss": [1.0, float("nan"), 0.5], "elapsed": [1.0, 2.0, 3.0]}
    assert [a.tolist() for a in curve(gappy, "loss")] == [[1.0, 3.0], [1.0, 0.5]]


def test_smoothing_is_tensorboards_debiased_moving_average():
    values = np.array([1.0, 0.5, float("nan"), 0.25, 2.0])
    np.testing.assert_array_equal(smooth(values, 0), values)
    weight, last, count, expected = 0.6, 0.0, 0, []
    for value in values:
        if np.isnan(value):
            expected.append(value)
            continue
        last = weight * last + (1 - weight) * value
        count += 1
        expected.append(last / (1 - weight ** count))
    np.testing.assert_allclose(smooth(values, weight), expected)
    assert smooth(values, 0.99)[-1] < 1.0  # nearly flat: 2.0 barely moves it


def test_head_to_head_equals_counts_by_hand_on_the_stored_predictions(trained):
    store, (a, b) = trained
    results_a, results_b = (load_results(store, run, load_images=False) for run in (a, b))
    h = head_to_head(results_a, results_b, resamples=200)
    files_a, files_b = stored(store, a), stored(store, b)
    y, pred_a, pred_b = files_a["y_true"], files_a["y_pred"], files_b["y_pred"]
    np.testing.assert_array_equal(y, files_b["y_true"])

    classes = len(CLASS_NAMES)
    shares = []
    for pred in (pred_a, pred_b):
        counts = np.zeros((classes, classes))
        for true_class, predicted in zip(y, pred):
            counts[true_class, predicted] += 1
        shares.append(counts / counts.sum(axis=1, keepdims=True))
    np.testing.assert_allclose(h.difference, shares[1] - shares[0])
    np.testing.assert_allclose(h.difference.sum(axis=1), 0, atol=1e-12)
    np.testing.assert_array_equal(h.confusion_a, files_a["confusion"])
    np.testing.assert_array_equal(h.confusion_b, files_b["confusion"])

    only_a = [i for i in range(len(y)) if pred_a[i] == y[i] and pred_b[i] != y[i]]
    only_b = [i for i in range(len(y)) if pred_b[i] == y[i] and pred_a[i] != y[i]]
    assert h.only_a.tolist() == only_a and h.only_b.tolist() == only_b
    assert h.both_right + h.both_wrong + len(only_a) + len(only_b) == h.images == len(y)
    if only_a or only_b:
        assert h.mcnemar_p == pytest.approx(binomtest(len(only_b), len(only_a) + len(only_b), 0.5).pvalue,
                                            rel=1e-9)
    assert (h.accuracy_a, h.accuracy_b) == (results_a.metrics["accuracy"], results_b.metrics["accuracy"])
    for f1, pred in ((h.f1_a, pred_a), (h.f1_b, pred_b)):
        np.testing.assert_allclose(f1, f1_score(y, pred, labels=range(classes), average=None, zero_division=0))
    boot = h.bootstrap
    np.testing.assert_allclose(boot["f1_diff"], h.f1_b - h.f1_a)
    assert boot["accuracy_diff"] == pytest.approx(h.accuracy_b - h.accuracy_a)
    assert np.all(boot["f1_low"] <= boot["f1_high"]) and boot["f1_low"].shape == (classes,)
    assert boot["accuracy_low"].ndim == 0 and boot["accuracy_low"] <= boot["accuracy_high"]

    # A cell of the difference matrix moves by the images that came into it minus those that left.
    for true_class in range(classes):
        for predicted in range(classes):
            into, out_of = moved_rows(h, results_a, results_b, true_class, predicted)
            assert len(into) - len(out_of) == h.confusion_b[true_class, predicted] - h.confusion_a[
                true_class, predicted]
            assert set(y[into]) <= {true_class} and set(pred_b[into]) <= {predicted}
            assert set(pred_a[out_of]) <= {predicted} and not set(pred_a[into]) & {predicted}


@pytest.mark.parametrize("only_a, only_b", [(0, 0), (0, 1), (3, 5), (10, 30), (7, 7), (200, 260), (0, 25),
                                            (4800, 5000), (1, 2000)])
def test_mcnemars_exact_test_is_scipys_two_sided_binomial(only_a, only_b):
    expected = binomtest(only_b, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    assert mcnemar_exact(only_a, only_b) == pytest.approx(expected, rel=1e-9, abs=1e-300)
    assert mcnemar_exact(only_b, only_a) == mcnemar_exact(only_a, only_b)


def test_the_bootstrap_scores_both_runs_on_the_same_resampled_images():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, 60)
    pred_a = np.where(rng.random(60) < 0.6, y, rng.integers(0, 3, 60))
    pred_b = np.where(rng.random(60) < 0.8, y, rng.integers(0, 3, 60))
    result = paired_bootstrap(y, pred_a, pred_b, 3, resamples=50, seed=7)

    drawn = np.random.default_rng(7).integers(0, 60, size=(50, 60))  # the same draws, scored one by one
    f1 = [f1_score(y[i], pred_b[i], labels=range(3), average=None, zero_division=0)
          - f1_score(y[i], pred_a[i], labels=range(3), average=None, zero_division=0) for i in drawn]
    accuracy = [(pred_b[i] == y[i]).mean() - (pred_a[i] == y[i]).mean() for i in drawn]
    np.testing.assert_allclose(result["f1_low"], np.percentile(f1, 2.5, axis=0))
    np.testing.assert_allclose(result["f1_high"], np.percentile(f1, 97.5, axis=0))
    np.testing.assert_allclose(result["accuracy_low"], np.percentile(accuracy, 2.5))
    np.testing.assert_allclose(result["macro_f1_high"], np.percentile(np.mean(f1, axis=1), 97.5))

    same = paired_bootstrap(y, pred_a, pred_a, 3, resamples=20)
    assert not np.any(same["f1_low"]) and not np.any(same["f1_high"]) and same["accuracy_diff"] == 0


def test_runs_on_different_test_images_are_refused_with_the_reason(trained):
    store, (a, _) = trained
    other = run_on_other_images(store)
    try:
        first, elsewhere = (load_results(store, run, load_images=False) for run in (a, other))
        reason = comparable(first, elsewhere)
        assert "different test images" in reason and "'a16'" in reason and "'elsewhere'" in reason
        with pytest.raises(ComparisonError, match="different test images"):
            head_to_head(first, elsewhere)
        result = compare_runs(store, [a, other])
        assert result.pairs == [] and result.not_paired == {other: reason}
        assert any(reason in sentence for sentence in result.observations)
    finally:
        store.delete(other)


def test_layer_table_counts_are_keras_counts(trained, tmp_path):
    store, (a, _) = trained
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.RandomFlip("horizontal", seed=1)(inputs)  # a seed generator's state is no weight
    base = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(4, 3), keras.layers.BatchNormalization(),
                             keras.layers.Conv2D(5, 3)], name="base")
    base.trainable = False
    x = keras.layers.Dropout(0.5, seed=2)(keras.layers.Flatten()(base(x)))
    nested = keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(x))
    nested_id = store.create_run(toy_config(), status="finished").run_id
    store.save_model(nested_id, nested, "final", CLASS_NAMES)
    try:
        for run_id in (a, nested_id):
            for kind in ("h5", "keras"):
                path = store.model_path(run_id, kind)
                model = keras.models.load_model(path, compile=False)
                rows = layer_table(path)
                assert [row.name for row in rows] == [layer.name for layer in model.layers]
                assert [row.params for row in rows] == [layer.count_params() for layer in model.layers]
                assert sum(row.params for row in rows) == model.count_params()
                source = nested if run_id == nested_id else model  # Keras loads a frozen nested model as trainable
                assert [row.trainable for row in rows] == [layer.trainable for layer in source.layers]
        rows = layer_table(store.model_path(nested_id, "keras"))
        [row] = [row for row in rows if row.name == "base"]
        assert (row.kind, row.params, row.trainable) == ("Sequential", base.count_params(), False)
        assert sum(row.params for row in layer_table(store.model_path(a))) == 122_820
    finally:
        store.delete(nested_id)


def test_layer_table_opens_no_model_and_refuses_what_it_cannot_read(tmp_path):
    fake = tmp_path / "notes.h5"
    fake.write_text("not a model")
    with pytest.raises(EngineError, match="notes.h5"):
        layer_table(fake)
    with h5py.File(tmp_path / "weights.h5", "w") as handle:
        handle["dense/kernel"] = np.zeros((2, 2))
    with pytest.raises(EngineError, match="model_config"):
        layer_table(tmp_path / "weights.h5")
    with pytest.raises(EngineError, match="no such file"):
        layer_table(tmp_path / "missing.keras")


def test_compare_runs_gathers_the_report_and_its_sentences_come_from_the_numbers(trained):
    store, (a, b) = trained
    said = []
    result = compare_runs(store, ["a16", b, a], report=said.append)  # by name and by id; a run named twice once
    assert [row.run_id for row in result.rows] == [a, b] and len(said) == 3
    assert [one.record.run_id for one in result.results] == [a, b] and all(one.images is None for one in
                                                                            result.results)
    [pair] = result.pairs
    assert (pair.a_id, pair.b_id, pair.images) == (a, b, 40) and result.not_paired == {}
    assert pair.bootstrap["f1_low"].shape == (4,)
    assert [len(result.layers[run]) for run in (a, b)] == [13, 13]
    assert [c["batch_size"] for c in result.conclusion] == [16, 8]
    assert [c["epochs"] for c in result.conclusion] == [1, 2]
    assert [c["test_accuracy"] for c in result.conclusion] == [row.test_accuracy for row in result.rows]
    env = result.environment
    assert env["Keras"] == keras.__version__ and env["NumPy"] == np.__version__ and env["h5py"] == h5py.__version__
    assert env["Seeds of run 'a16'"] == "training 42, dataset 0"

    rows = sorted(result.rows, key=lambda row: -row.test_accuracy)
    best, runner = rows
    text = " ".join(result.observations)
    if best.test_accuracy != runner.test_accuracy:
        points = 100 * (best.test_accuracy - runner.test_accuracy)
        assert (f"SimCNN (run '{best.name}') is the most accurate: {100 * best.test_accuracy:.1f}% test accuracy, "
                f"{points:.1f} points above SimCNN (run '{runner.name}')") in text
    only = len(pair.only_a) + len(pair.only_b)
    assert f"McNemar's exact test on the {only} images only one of them gets right" in text
    assert "10-point threshold" in text
    fastest = min(result.rows, key=lambda row: row.train_seconds)
    assert f"SimCNN (run '{fastest.name}') was the fastest to train" in text
    assert "The models are the same size: 122,820 parameters" in text
    for row in result.rows:
        history = store.history(row.run_id)
        gap = 100 * (history["accuracy"][-1] - history["val_accuracy"][-1])
        overfits = f"SimCNN (run '{row.name}') overfits" in text
        assert overfits == (round(gap, 1) > comparison.OVERFIT_POINTS)


def test_compare_runs_needs_a_known_run(trained):
    store, _ = trained
    with pytest.raises(EngineError, match="name at least one run"):
        compare_runs(store, [])
    with pytest.raises(EngineError, match="no run 'nonesuch'"):
        compare_runs(store, ["nonesuch"])
