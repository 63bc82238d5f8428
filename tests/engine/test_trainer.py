"""The Trainer end to end: real Keras on a tiny learnable problem."""

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

from engine import callbacks
from engine.evaluation import evaluate_run
from engine.events import Listener
from engine.runs import RunStore
from engine.training import SpeedSettings, Trainer
from toydata import CLASS_NAMES, toy_config, toy_dataset

HERE = Path(__file__).parent
ROOT = HERE.parents[1]


class Recorder(Listener):
    def __init__(self):
        self.events = []

    def on_stage(self, event):
        self.events.append(("stage", event))

    def on_run_started(self, event):
        self.events.append(("started", event))

    def on_progress(self, event):
        self.events.append(("progress", event))

    def on_epoch_ended(self, event):
        self.events.append(("epoch", event))

    def on_run_ended(self, event):
        self.events.append(("ended", event))

    def on_log(self, text):
        self.events.append(("log", text))

    def of(self, kind):
        return [e for k, e in self.events if k == kind]


def test_training_learns_and_saves_everything(tmp_path):
    store = RunStore(tmp_path)

    class LastModelEachEpoch(Recorder):
        saved = []

        def on_epoch_ended(self, event):
            super().on_epoch_ended(event)
            last = store.model_path(self.of("started")[0].run_id, "last")
            self.saved.append(last.stat().st_mtime_ns if last.exists() else None)

    listener = LastModelEachEpoch()
    config = toy_config(epochs=3)
    config.model.architecture = "cnn"  # no batch norm: its moving averages need more steps than a toy gives
    result = Trainer(config, listener, store, dataset=toy_dataset()).run()

    assert result.status == "finished", result.reason
    assert result.test_metrics["accuracy"] > 0.8  # chance is 0.25
    [started] = listener.of("started")
    assert started.params == {"total": 356_036, "trainable": 356_036, "non_trainable": 0}
    assert not started.validation_partial
    epochs = listener.of("epoch")
    assert [e.epoch for e in epochs] == [1, 2, 3]
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"} <= set(epochs[-1].logs)
    assert listener.of("progress") and listener.of("ended")[0].status == "finished"

    record = store.get(result.run_id)
    assert (record.status, record.epochs_done, record.test_accuracy) == ("finished", 3, result.test_metrics["accuracy"])
    history = store.history(result.run_id)
    assert history["val_accuracy"] == pytest.approx([e.logs["val_accuracy"] for e in epochs])
    assert list(history) == ["epoch", "accuracy", "loss", "val_accuracy", "val_loss", "elapsed"]
    assert 0 < history["elapsed"][0] < history["elapsed"][1] < history["elapsed"][2] <= record.train_seconds
    folder = store.run_dir(result.run_id)
    assert sorted(p.name for p in folder.iterdir()) == sorted([
        "config.json", "run.json", "history.csv", "metrics.json", "predictions.npz", "best.h5", "last.keras",
        "model.h5", "model.keras", "tensorboard"])
    assert store.metrics(result.run_id)["split"] == "test"
    assert store.predictions(result.run_id)["confusion"].sum() == 40
    assert None not in listener.saved and len(set(listener.saved)) == 3  # last.keras rewritten after each epoch
    last = keras.models.load_model(folder / "last.keras")
    assert type(last.optimizer).__name__ == "Adam"
    assert int(last.optimizer.iterations.numpy()) == 30  # 3 epochs of 10 steps: the state to resume from
    for ours, theirs in zip(trainer_weights(store, result.run_id), last.get_weights()):
        np.testing.assert_allclose(ours, theirs)


def trainer_weights(store, run_id):
    return keras.models.load_model(store.model_path(run_id)).get_weights()


def test_saved_h5_opens_in_plain_keras_and_h5py_and_predicts_the_same(tmp_path):
    store = RunStore(tmp_path)
    data = toy_dataset()
    trainer = Trainer(toy_config(epochs=1), store=store, dataset=data)
    result = trainer.run()
    path = store.model_path(result.run_id)
    with h5py.File(path, "r") as handle:
        assert "model_config" in handle.attrs
        assert handle.attrs["class_names"] == '["top_left", "top_right", "bottom_left", "bottom_right"]'
    for file in (path, store.model_path(result.run_id, "keras")):
        plain = keras.models.load_model(file)
        np.testing.assert_allclose(plain.predict(data.x_test, verbose=0), trainer.model.predict(data.x_test, verbose=0),
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("steps_per_execution, jit_compile", [
    (1, "auto"), (10, "auto"),
    pytest.param(10, True, marks=pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="XLA: TensorFlow")),
])
def test_stop_takes_effect_within_one_batch_and_saves_the_run_as_stopped(tmp_path, monkeypatch, steps_per_execution,
                                                                         jit_compile):
    """With 10 steps per graph call too (and under XLA, as on a GPU): the
    steps after the stop do nothing. The epoch cut short is not recorded;
    the stopped run is evaluated with its weights as they stood."""
    monkeypatch.setattr(callbacks, "PROGRESS_INTERVAL", 0.0)  # progress after every call: a stop early in epoch 2
    store = RunStore(tmp_path)

    class StopEarlyInTheSecondEpoch(Recorder):
        requested_at = None

        def on_progress(self, event):
            super().on_progress(event)
            if self.requested_at is None and event.epoch == 2:
                self.requested_at = int(trainer.model.optimizer.iterations.numpy())
                trainer.request_stop()

    listener = StopEarlyInTheSecondEpoch()
    trainer = Trainer(toy_config(epochs=5, batch_size=4, steps_per_execution=steps_per_execution), listener, store,
                      dataset=toy_dataset(train=400), speed=SpeedSettings(jit_compile=jit_compile))
    result = trainer.run()

    assert result.status == "stopped"
    trained = int(trainer.model.optimizer.iterations.numpy())
    assert trained <= listener.requested_at + 1  # the batch in flight is the last one
    assert 100 < trained < 200  # one epoch is 100 batches: stopped early in the second
    record = store.get(result.run_id)
    assert record.status == "stopped" and record.epochs_done == 1 == result.epochs_done
    assert [e.epoch for e in listener.of("epoch")] == [1]
    assert store.history(result.run_id)["epoch"] == [0.0]
    assert "epoch 2 was cut short by Stop" in " ".join(listener.of("log"))
    assert record.test_accuracy == result.test_metrics["accuracy"] and record.evaluated_model == "model.h5"
    assert store.metrics(result.run_id)["images"] == 40
    np.testing.assert_allclose(keras.models.load_model(store.model_path(result.run_id)).predict(
        toy_dataset().x_test, verbose=0), trainer.model.predict(toy_dataset().x_test, verbose=0), atol=1e-6)


def test_killed_process_leaves_history_and_interrupted_status(tmp_path):
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path[:0] = [{str(ROOT)!r}, {str(HERE)!r}]
        from engine.events import Listener
        from engine.runs import RunStore
        from engine.training import SpeedSettings, Trainer
        from toydata import toy_config, toy_dataset

        class KillAfterTwoEpochs(Listener):
            def on_epoch_ended(self, event):
                if event.epoch == 2:
                    os.kill(os.getpid(), signal.SIGKILL)

        Trainer(toy_config(epochs=10), KillAfterTwoEpochs(), RunStore({str(tmp_path)!r}),
                dataset=toy_dataset()).run()
    """)
    process = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert process.returncode == -signal.SIGKILL, process.stderr[-2000:]

    store = RunStore(tmp_path)
    [record] = store.list_runs()
    assert record.status == "interrupted"
    assert record.epochs_done == 2
    assert store.history(record.run_id)["epoch"] == [0.0, 1.0]
    assert store.model_path(record.run_id, "last").exists()
    assert store.metrics(record.run_id) == {}

    evaluation = evaluate_run(store, record.run_id, dataset=toy_dataset())  # opened in Results, or `evaluate RUN`
    record = store.get(record.run_id)
    assert (record.status, record.evaluated_model, record.test_accuracy) == ("interrupted", "best.h5",
                                                                             evaluation.accuracy)
    assert store.metrics(record.run_id)["model_file"] == "best.h5"
    assert store.predictions(record.run_id)["confusion"].sum() == 40


def test_bad_settings_fail_with_the_reason_and_no_run(tmp_path):
    store = RunStore(tmp_path)
    config = toy_config(epochs=3)
    config.training.steps_per_epoch = 500  # the toy data gives 10 steps of 16
    listener = Recorder()
    result = Trainer(config, listener, store, dataset=toy_dataset()).run()
    assert result.status == "failed"
    assert "steps_per_epoch) = 500 is more than the data gives" in result.reason
    assert listener.of("ended")[0].reason == result.reason
    assert store.list_runs() == []


def test_validation_steps_is_reported_as_a_partial_estimate(tmp_path):
    listener = Recorder()
    config = toy_config(epochs=1, validation_steps=1, steps_per_epoch=5)
    result = Trainer(config, listener, RunStore(tmp_path), dataset=toy_dataset()).run()
    assert result.status == "finished"
    assert listener.of("started")[0].validation_partial
    assert listener.of("started")[0].steps_per_epoch == 5
    # One batch of 16 validated (not a whole multi-step call's worth), the
    # same sample every epoch: the logged figure is the model's on it.
    trainer = Trainer(toy_config(epochs=2, validation_steps=1, steps_per_epoch=10), listener, RunStore(tmp_path),
                      dataset=toy_dataset())
    assert trainer.run().status == "finished"
    x, y = trainer._validation_data(keras)
    assert len(y) == 16
    expected = trainer.model.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    assert listener.of("epoch")[-1].logs["val_loss"] == pytest.approx(expected["loss"], rel=1e-5)


@pytest.mark.parametrize("schedule, optimizer", [("cosine", "adamw"), ("step", "sgd"), ("constant", "rmsprop")])
def test_schedules_and_optimizers_run(tmp_path, schedule, optimizer):
    config = toy_config(epochs=2, schedule=schedule, optimizer=optimizer,
                          warmup_epochs=1 if schedule == "cosine" else 0,
                          step_every=1, momentum=0.9 if optimizer == "sgd" else 0.0, weight_decay=1e-4,
                          label_smoothing=0.1 if schedule == "cosine" else 0.0, augmentation="flip_crop",
                          early_stopping=1)
    listener = Recorder()
    result = Trainer(config, listener, RunStore(tmp_path), dataset=toy_dataset()).run()
    assert result.status == "finished", result.reason
    rates = [e.logs["learning_rate"] for e in listener.of("epoch")]
    if schedule == "step":
        assert rates[1] == pytest.approx(rates[0] * 0.1)
    if schedule == "cosine":
        assert rates[0] != rates[1]


def test_stop_while_the_data_is_loading_is_a_stop_not_a_failure(tmp_path):
    folder = picture_folder(tmp_path / "pictures", toy_dataset(train=40))
    config = toy_config(epochs=1)
    config.dataset.source, config.dataset.path = "folder", str(folder)
    trainer = Trainer(config, store=RunStore(tmp_path / "store"))
    trainer.request_stop()
    result = trainer.run()
    assert result.status == "stopped" and result.reason == "stopped before training started"
    assert RunStore(tmp_path / "store").list_runs() == []


def picture_folder(folder, data):
    from PIL import Image

    for i, (image, label) in enumerate(zip(data.x_train, data.y_train)):
        (folder / CLASS_NAMES[label]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / CLASS_NAMES[label] / f"{i}.png")
    return folder


@pytest.mark.parametrize("how, status", [("Stop, then Stop again", "stopped"), ("cancel", "finished")])
def test_the_evaluation_after_training_can_be_cancelled_and_run_later(tmp_path, how, status):
    """Stop pressed again, or the window closed, while a run is evaluated:
    the evaluation ends, the run keeps its model and status, and is
    evaluated on demand later (here from its config: a picture folder)."""
    store = RunStore(tmp_path / "store")
    config = toy_config(epochs=2)
    config.dataset.source, config.dataset.path = "folder", str(picture_folder(tmp_path / "pictures", toy_dataset(40)))

    class CancelTheEvaluation(Recorder):
        def on_epoch_ended(self, event):
            super().on_epoch_ended(event)
            if how.startswith("Stop"):
                trainer.request_stop()  # after epoch 1: a stop in the validation that follows it

        def on_stage(self, event):
            super().on_stage(event)
            if event.stage == "evaluate":
                trainer.request_stop() if how.startswith("Stop") else trainer.cancel()

    listener = CancelTheEvaluation()
    trainer = Trainer(config, listener, store)  # trained on the folder, so evaluated later on the same classes
    result = trainer.run()

    assert result.status == status and "evaluation was cancelled" in result.reason
    assert result.test_metrics == {}
    record = store.get(result.run_id)
    assert (record.status, record.test_accuracy) == (status, None)
    assert record.epochs_done == (1 if how.startswith("Stop") else 2)
    assert store.metrics(result.run_id) == {} and store.model_path(result.run_id).exists()

    evaluation = evaluate_run(store, result.run_id)
    assert evaluation.split == "validation" and len(evaluation.y_true) == 4  # the folder has no test split
    assert store.get(result.run_id).test_accuracy == evaluation.accuracy
    assert store.metrics(result.run_id)["model_file"] == "model.h5"


def test_a_loss_that_becomes_nan_fails_the_run_and_keeps_the_good_epochs(tmp_path):
    """SGD with momentum 0.9 warming up to 1.0 trains the toy CNN for one
    epoch and blows up in the second: the run fails with why and where, and
    keeps epoch 1's history, best.h5 and last.keras (not the NaN model)."""
    store = RunStore(tmp_path)
    listener = Recorder()
    config = toy_config(epochs=4, optimizer="sgd", learning_rate=1.0, momentum=0.9, schedule="cosine",
                        warmup_epochs=2)
    config.model.architecture = "cnn"
    result = Trainer(config, listener, store, dataset=toy_dataset()).run()

    assert result.status == "failed" and result.epochs_done == 1
    assert "the loss became NaN in epoch 2 (by batch" in result.reason and "lower the learning rate" in result.reason
    assert "models saved up to epoch 1 are kept (best: epoch 1)" in result.reason
    assert [e.epoch for e in listener.of("epoch")] == [1]
    assert any("epoch 2 is not recorded" in text for text in listener.of("log"))
    record = store.get(result.run_id)
    assert (record.status, record.epochs_done, record.test_accuracy) == ("failed", 1, None)
    assert record.reason == result.reason
    history = store.history(result.run_id)
    assert history["epoch"] == [0] and np.isfinite(history["loss"]).all()  # CSVLogger counts from 0
    folder = store.run_dir(result.run_id)
    assert not (folder / "model.h5").exists() and not (folder / "metrics.json").exists()
    assert store.evaluation_model(result.run_id) == folder / "best.h5"
    images = toy_dataset().x_test[:8]
    for name in ("best.h5", "last.keras"):
        assert np.isfinite(keras.models.load_model(folder / name).predict(images, verbose=0)).all(), name


def test_a_validation_loss_that_becomes_nan_in_the_first_epoch_keeps_no_model(tmp_path):
    store = RunStore(tmp_path)
    config = toy_config(epochs=3, optimizer="sgd", learning_rate=10.0)
    result = Trainer(config, Recorder(), store, dataset=toy_dataset()).run()

    assert result.status == "failed" and result.epochs_done == 0
    assert "became NaN in epoch 1" in result.reason and "no epoch finished before" in result.reason
    folder = store.run_dir(result.run_id)
    assert not any((folder / name).exists() for name in ("model.h5", "best.h5", "last.keras"))
    assert store.get(result.run_id).status == "failed"
