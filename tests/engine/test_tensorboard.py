"""TensorBoard logs per run (issue 17 item 9): Keras' own writer, one scalar
per epoch, in the run's folder, without costing Keras its async dispatch."""

import keras
import pytest
import tensorflow as tf

from engine.callbacks import ProgressCallback, TensorBoardLogs
from engine.runs import RunStore
from engine.training import Trainer
from toydata import toy_config, toy_dataset


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    store = RunStore(tmp_path_factory.mktemp("store"))
    result = Trainer(toy_config(epochs=2), store=store, dataset=toy_dataset(train=64, val=32, test=32)).run()
    assert result.status == "finished", result.reason
    return store, result.run_id


def scalars(folder, tag):
    """{step: value} of `tag` in every event file of `folder`, read with TensorFlow alone."""
    found = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.tag == tag:
                    assert value.metadata.plugin_data.plugin_name == "scalars"
                    assert event.step not in found
                    found[event.step] = float(tf.make_ndarray(value.tensor))
    return found


def test_each_run_writes_one_scalar_per_epoch_for_train_and_validation(run):
    store, run_id = run
    folder = store.tensorboard_dir(run_id)
    assert folder == store.run_dir(run_id) / "tensorboard"
    history = store.history(run_id)
    for split, key in (("train", "loss"), ("validation", "val_loss")):
        assert list((folder / split).glob("events.out.tfevents.*")), split
        logged = scalars(folder / split, "epoch_loss")
        assert sorted(logged) == [0, 1]
        assert [logged[0], logged[1]] == pytest.approx(history[key], rel=1e-6)
    assert sorted(scalars(folder / "validation", "epoch_accuracy")) == [0, 1]
    assert sorted(scalars(folder / "train", "epoch_learning_rate")) == [0, 1]


def test_the_writer_keeps_keras_async_dispatch_which_keras_own_turns_off(tmp_path, monkeypatch):
    """Keras dispatches batch hooks asynchronously on the backends it deems
    thread-safe (JAX, PyTorch; not TensorFlow): pretend this one is."""
    monkeypatch.setattr(keras.src.backend, "IS_THREAD_SAFE", True)
    progress = ProgressCallback(trainer=None, steps=1, epochs=1, batch_size=1, started=0.0)
    ours = keras.callbacks.CallbackList([progress, TensorBoardLogs(tmp_path, progress)])
    theirs = keras.callbacks.CallbackList([progress, keras.callbacks.TensorBoard(
        str(tmp_path), update_freq="epoch", write_graph=False, profile_batch=0, histogram_freq=0)])
    assert ours._async_train and not theirs._async_train


def test_the_store_lists_rebuilds_and_deletes_a_run_with_its_logs(run, tmp_path):
    store, run_id = run
    assert store.tensorboard_dir(run_id).is_dir()
    for suffix in ("", "-wal", "-shm"):
        (store.root / f"runs.db{suffix}").unlink(missing_ok=True)
    rebuilt = RunStore(store.root)
    assert "rebuilt from 1 run folder(s)" in " ".join(rebuilt.notices)
    [record] = rebuilt.list_runs()
    assert (record.run_id, record.status, record.epochs_done) == (run_id, "finished", 2)
    rebuilt.delete(run_id)
    assert not store.run_dir(run_id).exists() and rebuilt.list_runs() == []
