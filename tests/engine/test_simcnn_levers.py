"""The levers tried on SimCNN: weight averaging (training.ema), test-time flip
averaging (training.tta) and cutout (augmentation flip_crop_erase); real Keras
on the toy images, the saved files read back by plain Keras and h5py."""

import json

import h5py
import keras
import numpy as np

from engine.config import preset, validate
from engine.inference import Classifier, read_tta
from engine.runs import RunStore
from engine.training import Trainer
from toydata import toy_config, toy_dataset


def _train(tmp_path, name, **training):
    store = RunStore(tmp_path / name)
    data = toy_dataset(train=96, val=32, test=32)
    result = Trainer(toy_config(epochs=3, **training), store=store, dataset=data).run()
    assert result.status == "finished", result.reason
    return store, result.run_id, data


def test_weight_averaging_leaves_training_alone_and_validates_and_saves_the_average(tmp_path):
    raw_store, raw_id, _ = _train(tmp_path, "raw")
    ema_store, ema_id, data = _train(tmp_path, "ema", ema=0.9)
    raw, _ = raw_store.read_history(raw_id)
    averaged, _ = ema_store.read_history(ema_id)
    # the raw weights train exactly as without it (the average is swapped in only to validate and save)...
    np.testing.assert_allclose(averaged["loss"], raw["loss"], rtol=1e-5)
    assert not np.allclose(averaged["val_loss"], raw["val_loss"], rtol=1e-4)
    # ...and the model saved is the one validated in the last epoch: the average
    model = keras.saving.load_model(ema_store.model_path(ema_id), compile=False)
    probs = model.predict(data.x_val, verbose=0)
    val_loss = float(-np.log(probs[np.arange(len(data.y_val)), data.y_val]).mean())
    assert abs(val_loss - averaged["val_loss"][-1]) < 1e-4
    optimizer = json.loads(h5py.File(ema_store.model_path(ema_id)).attrs["training_config"])["optimizer_config"]
    assert optimizer["config"]["use_ema"] and optimizer["config"]["ema_momentum"] == 0.9


def test_flip_averaging_reports_both_figures_and_travels_to_classify(tmp_path):
    store, run_id, data = _train(tmp_path, "tta", tta="flip")
    metrics = json.loads((store.run_dir(run_id) / "metrics.json").read_text())
    assert metrics["tta"] == "flip" and set(metrics["without_tta"]) >= {"accuracy", "loss"}

    path = store.model_path(run_id)
    model = keras.saving.load_model(path, compile=False)  # plain Keras
    x, y = data.x_test, data.y_test
    plain = model.predict(x, verbose=0)
    averaged = (plain + model.predict(x[:, :, ::-1], verbose=0)) / 2
    assert metrics["without_tta"]["accuracy"] == float(np.mean(plain.argmax(1) == y))
    assert metrics["accuracy"] == float(np.mean(averaged.argmax(1) == y))
    # the toy classes are quadrants: a mirror image is another class, so the two figures differ here
    assert metrics["accuracy"] != metrics["without_tta"]["accuracy"]

    assert h5py.File(path).attrs["test_time_augmentation"] == "flip"
    assert read_tta(path) == read_tta(store.model_path(run_id, "best")) == "flip"
    classifier = Classifier(path)
    assert classifier.tta == "flip"
    np.testing.assert_allclose(classifier.predict_arrays(x), averaged, atol=1e-5)
    np.testing.assert_allclose(Classifier(path, tta="none").predict_arrays(x), plain, atol=1e-5)


def test_a_model_without_the_mark_is_classified_as_is(tmp_path):
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(2, "softmax")])
    model.save(tmp_path / "plain.h5")
    assert read_tta(tmp_path / "plain.h5") == "none" and read_tta(tmp_path / "missing.keras") == "none"
    assert Classifier(tmp_path / "plain.h5").tta == "none"


def test_the_settings_are_checked_and_the_preset_flips_at_test_time():
    config = preset("SimCNN best")
    assert config.training.ema == 0 and config.training.tta == "flip"
    assert preset("Paper Table 1").training.ema == 0 and preset("Paper Table 1").training.tta == "none"
    config.training.ema = 0.5
    config.training.tta = "rotate"
    problems = validate(config)
    assert "between 0.9 and 0.9999" in problems["training.ema"]
    assert "rotate" in problems["training.tta"]


def test_cutout_erases_patches_while_training_only_and_loads_in_plain_keras(tmp_path):
    from engine.config import ModelConfig
    from engine.models import build_model

    model = build_model(ModelConfig(architecture="simcnn"), (32, 32, 3), 4, augmentation="flip_crop_erase", seed=1)
    erase = model.get_layer("augment_erase")
    images = np.full((64, 32, 32, 3), 128.0, dtype="float32")
    erased = keras.ops.convert_to_numpy(erase(images, training=True))
    changed = (erased != 128.0).any(axis=(1, 2, 3))
    assert 10 < changed.sum() < 54  # about half the images get a patch...
    area = (erased != 128.0).any(axis=3).mean(axis=(1, 2))[changed]
    assert area.max() <= 0.25  # ...of at most a fifth of the image (plus rounding)
    assert (keras.ops.convert_to_numpy(erase(images, training=False)) == 128.0).all()
    model.save(tmp_path / "cutout.h5")
    loaded = keras.saving.load_model(tmp_path / "cutout.h5", compile=False)
    np.testing.assert_allclose(loaded.predict(images[:2], verbose=0), model.predict(images[:2], verbose=0),
                               atol=1e-6)


def test_flip_evaluation_is_one_stage_whose_fraction_covers_both_passes():
    import dataclasses
    import io

    from cli.console import ConsoleListener
    from engine.evaluation import evaluate_model

    data = toy_dataset(train=8, val=8, test=96)
    model = keras.Sequential([keras.Input(data.x_test.shape[1:]), keras.layers.Flatten(),
                              keras.layers.Dense(data.num_classes, activation="softmax")])
    events = []
    evaluate_model(model, data.x_test, data.y_test, data.class_names, batch_size=16, tta="flip",
                   report=events.append)
    assert {event.text for event in events} == {"Evaluating on the whole test split (96 images, and mirrored)"}
    fractions = [event.fraction for event in events]
    assert fractions == sorted(fractions) and fractions[0] == 0.0

    out = io.StringIO()
    console = ConsoleListener(out)
    for event in (events[0], dataclasses.replace(events[0], fraction=1.0)):
        console.on_stage(event)
    first, last = out.getvalue().splitlines()
    assert first == events[0].text and last.startswith(events[0].text + " (done in 0:0")
