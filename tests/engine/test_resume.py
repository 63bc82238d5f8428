"""Resuming a run (issue 18 item 12): killed or stopped, a run goes on from
its last whole epoch to the run an uninterrupted one would have been; a run
that cannot be resumed is refused in one line and left as it was."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import cli
from engine.errors import RunStoreError
from engine.events import Listener
from engine.runs import RunStore
from engine.training import Trainer
from toydata import toy_config, toy_dataset

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
EPOCHS = 4
STEPS = 10  # 160 training images in batches of 16


def noisy_dataset():
    """The toy quadrants with 40% of the training labels drawn at random:
    the loss stays far above 0 for four epochs, so epoch 4's losses compare."""
    dataset = toy_dataset()
    rng = np.random.default_rng(5)
    noisy = rng.random(len(dataset.y_train)) < 0.4
    dataset.y_train = np.where(noisy, rng.integers(0, 4, len(dataset.y_train)), dataset.y_train)
    return dataset


def noisy_config():
    """Augmented (its random layers must draw the same on resumption) and slow to learn."""
    return toy_config(epochs=EPOCHS, augmentation="flip", learning_rate=1e-3)


class Events(Listener):
    def __init__(self, stop_after_epoch: int = 0):
        self.trainer = None
        self.stop_after_epoch = stop_after_epoch
        self.started = []
        self.epochs = []
        self.logs = []

    def on_run_started(self, event):
        self.started.append(event)

    def on_epoch_ended(self, event):
        self.epochs.append(event.epoch)
        if event.epoch == self.stop_after_epoch:
            self.trainer.request_stop()

    def on_log(self, text):
        self.logs.append(text)


# Trains in its own process and holds still once epoch 3 reports progress
# (epochs 1 and 2 are saved, epoch 3 is not), for the test to kill it there.
KILLED = textwrap.dedent("""
    import sys, time
    sys.path[:0] = [{root!r}, {here!r}]
    from engine.events import Listener
    from engine.runs import RunStore
    from engine.training import Trainer
    from test_resume import noisy_config, noisy_dataset

    class HoldInEpochThree(Listener):
        def on_progress(self, event):
            if event.epoch == 3:
                open({marker!r}, "w").close()
                time.sleep(600)

    Trainer(noisy_config(), HoldInEpochThree(), RunStore({store!r}), dataset=noisy_dataset()).run()
""")


def last_iterations(store, run_id, kind="last"):
    return int(keras.models.load_model(store.model_path(run_id, kind)).optimizer.iterations.numpy())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A run killed with SIGKILL in epoch 3 of 4 and resumed, and the same
    run uninterrupted (trained here while the other process starts)."""
    folder = tmp_path_factory.mktemp("resume")
    marker = folder / "in-epoch-3"
    script = KILLED.format(root=str(ROOT), here=str(HERE), marker=str(marker), store=str(folder))
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    try:
        store = RunStore(folder)
        reference = Trainer(noisy_config(), store=store, dataset=noisy_dataset()).run()
        deadline = time.monotonic() + 180
        while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), process.stderr.read()[-3000:] if process.poll() is not None else "timed out"
        [killed_id] = [r.run_id for r in store.list_runs() if r.run_id != reference.run_id]
        rows_at_kill = len(store.history(killed_id)["epoch"])
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    status_after_kill = RunStore(folder).get(killed_id).status  # a store opened now sees the process gone
    events = Events()
    resumed = Trainer.resume(killed_id, events, store, dataset=noisy_dataset()).run()
    return {"store": store, "reference": reference, "resumed": resumed, "killed_id": killed_id,
            "rows_at_kill": rows_at_kill, "status_after_kill": status_after_kill, "events": events}


def test_a_run_killed_in_epoch_3_resumes_to_the_uninterrupted_run(runs):
    store, reference, resumed = runs["store"], runs["reference"], runs["resumed"]
    assert reference.status == "finished", reference.reason
    assert runs["rows_at_kill"] == 2 and runs["status_after_kill"] == "interrupted"

    assert resumed.status == "finished", resumed.reason
    assert resumed.run_id == runs["killed_id"] and resumed.epochs_done == EPOCHS
    record = store.get(resumed.run_id)
    assert (record.status, record.epochs_done, record.pid) == ("finished", EPOCHS, os.getpid())
    assert record.test_accuracy == resumed.test_metrics["accuracy"] and store.metrics(resumed.run_id)
    [started] = runs["events"].started
    assert started.run_id == resumed.run_id and runs["events"].epochs == [3, 4]
    assert any("after epoch 2 of 4 (optimizer step 20)" in line for line in runs["events"].logs)

    history = store.history(resumed.run_id)
    assert history["epoch"] == [0, 1, 2, 3]  # one history: the two rows it had, then the two new ones
    assert all(a < b for a, b in zip(history["elapsed"], history["elapsed"][1:]))
    ours, theirs = history["loss"][-1], store.history(reference.run_id)["loss"][-1]
    assert ours > 0.5 and ours == pytest.approx(theirs, rel=0.02)
    for kind in ("last", "keras"):
        assert last_iterations(store, resumed.run_id, kind) == last_iterations(store, reference.run_id, kind) \
            == EPOCHS * STEPS


def test_the_resumed_run_has_one_tensorboard_scalar_per_epoch(runs):
    """The killed process's event files keep epochs 1 and 2; the resumed
    one adds 3 and 4 beside them."""
    folder = runs["store"].tensorboard_dir(runs["resumed"].run_id) / "train"
    assert len(list(folder.glob("events.out.tfevents.*"))) == 2
    steps = [event.step for path in sorted(folder.glob("events.out.tfevents.*"))
             for event in tf.compat.v1.train.summary_iterator(str(path))
             for value in event.summary.value if value.tag == "epoch_loss"]
    assert sorted(steps) == [0, 1, 2, 3]


def test_a_stopped_run_resumes_in_process_to_its_planned_epochs(runs, tmp_path):
    store = RunStore(tmp_path)
    events = Events(stop_after_epoch=1)
    events.trainer = Trainer(noisy_config(), events, store, dataset=noisy_dataset())
    stopped = events.trainer.run()
    assert (stopped.status, stopped.epochs_done) == ("stopped", 1)
    assert store.model_path(stopped.run_id).exists() and store.metrics(stopped.run_id)
    # As if it had then been killed between writing epoch 2's history row and its last.keras:
    store.append_history(stopped.run_id, 1, {"loss": 9.0, "accuracy": 0.0}, 99.0)

    events = Events()
    resumed = Trainer.resume(stopped.run_id[:12], events, store, dataset=noisy_dataset()).run()
    assert resumed.status == "finished" and resumed.run_id == stopped.run_id, resumed.reason
    assert any("epoch 2 is in history.csv but not in last.keras" in line for line in events.logs)
    assert events.epochs == [2, 3, 4]
    history = store.history(resumed.run_id)
    assert history["epoch"] == [0, 1, 2, 3] and 9.0 not in history["loss"]
    assert history["elapsed"][0] < history["elapsed"][1] < 99.0  # going on from epoch 1's, not the dropped row's
    assert history["loss"][-1] == pytest.approx(runs["store"].history(runs["reference"].run_id)["loss"][-1],
                                                rel=0.02)
    assert last_iterations(store, resumed.run_id) == EPOCHS * STEPS
    record = store.get(resumed.run_id)
    assert (record.status, record.epochs_done, record.evaluated_model) == ("finished", EPOCHS, "model.h5")
    assert record.reason == "completed (resumed after epoch 1)"


def made_run(store, status, epochs_done=0, last=b""):
    """A run of the store as a stopped or interrupted one leaves it, without training."""
    run_id = store.create_run(toy_config(epochs=EPOCHS)).run_id
    for epoch in range(epochs_done):
        store.append_history(run_id, epoch, {"loss": 1.0, "accuracy": 0.5}, 1.0 + epoch)
    if last:
        store.model_path(run_id, "last").write_bytes(last)
    store.update(run_id, status=status, epochs_done=epochs_done)
    return run_id


def test_runs_that_cannot_be_resumed_are_refused_in_one_line(runs, tmp_path):
    finished = runs["reference"].run_id
    with pytest.raises(RunStoreError, match=rf"run 'toy' \({finished}\) is finished; there is nothing to resume"):
        Trainer.resume(finished, store=runs["store"])
    store = RunStore(tmp_path)
    running = store.create_run(toy_config()).run_id  # "running", with this live process's pid
    with pytest.raises(RunStoreError, match=rf"\({running}\) is still training \(process {os.getpid()}\)"):
        Trainer.resume(running, store=store)
    never_saved = made_run(store, "interrupted")
    with pytest.raises(RunStoreError, match="has no last.keras: it ended before its first whole epoch; train it"):
        Trainer.resume(never_saved, store=store)
    unreadable = made_run(store, "stopped", 1, last=b"PK")
    (store.run_dir(unreadable) / "config.json").write_text("{not json")
    with pytest.raises(RunStoreError, match=rf"\({unreadable}\) cannot be resumed: its config.json cannot be read"):
        Trainer.resume(unreadable, store=store)
    complete = made_run(store, "stopped", EPOCHS, last=b"PK")
    with pytest.raises(RunStoreError, match=f"has trained all its {EPOCHS} epochs; there is nothing to resume"):
        Trainer.resume(complete, store=store)


def test_a_last_keras_that_cannot_be_opened_fails_the_resumption_not_the_run(tmp_path):
    store = RunStore(tmp_path)
    run_id = made_run(store, "stopped", 1, last=b"not a zip archive")
    result = Trainer.resume(run_id, store=store, dataset=noisy_dataset()).run()
    assert result.status == "failed" and result.run_id == ""
    assert result.reason == (f"run 'toy' ({run_id}) cannot be resumed: last.keras is not a Keras model file "
                             "(not a .keras zip archive)")
    record = store.get(run_id)
    assert (record.status, record.epochs_done) == ("stopped", 1)
    assert store.model_path(run_id, "last").read_bytes() == b"not a zip archive"


def test_main_py_resume_refuses_a_finished_run_with_exit_status_2(capsys):
    store = RunStore()
    run_id = made_run(store, "finished", EPOCHS)
    assert cli.main(["resume", run_id]) == 2
    err = capsys.readouterr().err
    assert err == f"error: run 'toy' ({run_id}) is finished; there is nothing to resume (train a new run to " \
                  "train longer)\n"
    assert store.get(run_id).status == "finished"
