"""What the run store writes, read back by plain Keras, h5py and csv; and a
kill while it writes never leaves a broken file."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import h5py
import keras
import numpy as np

from engine.config import preset
from engine.runs import RunStore

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
NAMES = ["a", "b", "c", "d"]


def small_model():
    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Dense(4, activation="softmax")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(np.zeros((6, 8, 8, 3), "uint8"), np.arange(6) % 4, batch_size=2, epochs=1, verbose=0)
    return model


def test_the_history_is_csvloggers_file_plus_elapsed(tmp_path):
    epochs = [{"loss": 1.25, "accuracy": 0.5, "val_loss": 1.5, "val_accuracy": 0.375},
              {"loss": 0.75, "accuracy": 0.625, "val_loss": 1.125, "val_accuracy": 0.5}]
    logger = keras.callbacks.CSVLogger(str(tmp_path / "keras.csv"))
    logger.on_train_begin()
    for epoch, logs in enumerate(epochs):
        logger.on_epoch_end(epoch, logs)
    logger.on_train_end()
    store = RunStore(tmp_path / "store")
    run_id = store.create_run(preset("Paper Table 1")).run_id
    for epoch, logs in enumerate(epochs):
        store.append_history(run_id, epoch, logs, 10.0 * (epoch + 1))

    ours = (store.run_dir(run_id) / "history.csv").read_bytes().splitlines(keepends=True)
    theirs = (tmp_path / "keras.csv").read_bytes().splitlines(keepends=True)
    assert [line.rsplit(b",", 1)[0] + b"\r\n" for line in ours] == theirs
    assert [line.rsplit(b",", 1)[1] for line in ours] == [b"elapsed\r\n", b"10.0\r\n", b"20.0\r\n"]


def test_models_are_saved_with_their_class_names_and_the_last_keeps_its_optimizer(tmp_path):
    store = RunStore(tmp_path)
    run_id = store.create_run(preset("Paper Table 1")).run_id
    model = small_model()
    store.save_model(run_id, model, "best", NAMES)  # an .h5 save first: Keras' writer drops the optimizer's config
    store.save_model(run_id, model, "last", NAMES)
    store.save_model(run_id, model, "final", NAMES)
    folder = store.run_dir(run_id)
    assert sorted(p.name for p in folder.iterdir()) == ["best.h5", "config.json", "last.keras", "model.h5",
                                                        "model.keras", "run.json"]
    for name in ("best.h5", "model.h5"):
        with h5py.File(folder / name, "r") as handle:
            assert json.loads(handle.attrs["class_names"]) == NAMES
    for name in ("last.keras", "model.keras"):
        with zipfile.ZipFile(folder / name) as archive:
            assert json.loads(archive.read("cifar_studio_class_names.json")) == NAMES
    last = keras.models.load_model(folder / "last.keras")
    assert type(last.optimizer).__name__ == "Adam"
    assert int(last.optimizer.iterations.numpy()) == 3
    for ours, theirs in zip(model.optimizer.variables, last.optimizer.variables):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


SAVING = textwrap.dedent("""
    import os, signal, sys
    sys.path[:0] = [{root!r}, {here!r}]
    import h5py
    import numpy as np
    from engine.config import preset
    from engine.evaluation import evaluate_probabilities
    from engine.runs import RunStore
    from test_run_files import NAMES, small_model

    store = RunStore({store!r})
    run_id = store.create_run(preset("Paper Table 1")).run_id
    model = small_model()
    create_dataset = h5py.Group.create_dataset
    round_ = 0

    def create_dataset_or_die(group, name, *args, **kwargs):
        # Keras is writing the second best.h5: its config is written, its weights half.
        if round_ == 1 and group.file.filename.endswith(".best.h5.tmp.h5") and "dense" in group.name:
            print("KILLING", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        return create_dataset(group, name, *args, **kwargs)

    h5py.Group.create_dataset = create_dataset_or_die
    evaluation = evaluate_probabilities(np.full((8, 4), 0.25), np.arange(8) % 4, NAMES)
    while True:
        model.layers[-1].bias.assign(np.full(4, float(round_), "float32"))  # the round, readable from each file
        store.save_model(run_id, model, "last", NAMES)
        store.save_model(run_id, model, "final", NAMES)
        store.append_history(run_id, round_, {{"loss": 1.0 / (round_ + 1), "accuracy": 0.5}}, float(round_))
        store.write_evaluation(run_id, evaluation, "model.h5")
        store.save_model(run_id, model, "best", NAMES)
        round_ += 1
""")


def test_a_kill_while_saving_a_model_leaves_every_earlier_file_whole(tmp_path):
    """The process dies in the middle of writing best.h5 (after the last,
    final model, history and metrics of the same round were replaced)."""
    script = SAVING.format(root=str(ROOT), here=str(HERE), store=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == -signal.SIGKILL and done.stdout.strip() == "KILLING", done.stderr[-3000:]
    [folder] = (tmp_path / "runs").iterdir()
    assert (folder / ".best.h5.tmp.h5").exists()  # killed mid-save: the half-written file is the temporary one

    store = RunStore(tmp_path)
    [record] = store.list_runs()
    assert record.status == "interrupted"
    assert not list(folder.glob(".*")), "the killed process's temporary files are cleaned up"
    rounds = {name: float(keras.models.load_model(folder / name).layers[-1].bias.numpy()[0])
              for name in ("best.h5", "last.keras", "model.keras", "model.h5")}
    assert rounds == {"best.h5": 0.0, "last.keras": 1.0, "model.keras": 1.0, "model.h5": 1.0}
    for name in ("best.h5", "model.h5"):
        with h5py.File(folder / name, "r") as handle:
            assert json.loads(handle.attrs["class_names"]) == NAMES
    assert store.history(record.run_id)["epoch"] == [0.0, 1.0]
    assert store.metrics(record.run_id)["images"] == 8
    assert store.predictions(record.run_id)["confusion"].sum() == 8
    assert store.evaluation_model(record.run_id).name == "model.h5"
