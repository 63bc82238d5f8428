"""A frozen base's output computed once: the head trains on cached features (engine/features.py)."""

import os

import keras
import numpy as np
import pytest

from engine import features as features_module
from engine import models
from engine.config import ModelConfig
from engine.events import Listener
from engine.runs import RunStore
from engine.training import SpeedSettings, Trainer
from toydata import toy_config, toy_dataset


class Events(Listener):
    def __init__(self, stop_on_features=None):
        self.logs, self.stages, self.epochs = [], [], []
        self.stop_on_features = stop_on_features

    def on_log(self, text):
        self.logs.append(text)

    def on_stage(self, event):
        self.stages.append(event)
        if event.stage == "features" and self.stop_on_features is not None:
            self.stop_on_features.request_stop()

    def on_epoch_ended(self, event):
        self.epochs.append(event)


def frozen_config(epochs=2, **model):
    config = toy_config(epochs=epochs)
    config.model = ModelConfig(**{"architecture": "vgg16", "weights": "none", "input_size": 32, "head": "linear",
                                  **model})
    return config


def data():
    return toy_dataset(train=64, val=16, test=16)


def train(store, config, speed=None, listener=None):
    events = listener or Events()
    trainer = Trainer(config, events, store, dataset=data(), speed=speed)
    return trainer, trainer.run(), events


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Frozen VGG16 runs sharing one data cache: the first computes the
    features, the second reuses them, one at another input size, and the
    same run with the cache turned off."""
    patch = pytest.MonkeyPatch()
    patch.setenv("CIFAR_STUDIO_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    try:
        store = RunStore(tmp_path_factory.mktemp("store"))
        first = train(store, frozen_config())
        again = train(store, frozen_config())
        resized = train(store, frozen_config(epochs=1, input_size=48))
        whole = train(store, frozen_config(), speed=SpeedSettings(frozen_features=False))
        feature_dir = features_module.feature_dir()
        yield {"store": store, "first": first, "again": again, "resized": resized, "whole": whole,
               "files": sorted(os.listdir(feature_dir))}
    finally:
        patch.undo()


def test_the_head_trains_on_features_computed_once_and_the_whole_model_is_saved(runs):
    store = runs["store"]
    trainer, result, events = runs["first"]
    assert result.status == "finished", result.reason
    assert trainer.features.computed == {"train": 64, "val": 16, "test": 16} and not trainer.features.reused
    assert any("computed once for 96 images" in line and "'predictions'" in line for line in events.logs)
    stage = [e for e in events.stages if e.stage == "features"]
    assert stage[0].text == "Computing the frozen base's features once: 96 images"
    assert stage[0].fraction == 0.0 and stage[-1].fraction == 1.0
    assert [e.epoch for e in events.epochs] == [1, 2] and store.history(result.run_id)["epoch"] == [0, 1]

    split = features_module.split_model(trainer.model)
    cached = np.load(trainer.features.files["train"], mmap_mode="r")
    assert cached.dtype == np.float32 and cached.shape == (64, 512)
    np.testing.assert_allclose(cached, split.frozen.predict(data().x_train, verbose=0), rtol=1e-5, atol=1e-6)

    test = data()
    for kind in ("h5", "keras", "best", "last"):
        saved = keras.models.load_model(store.model_path(result.run_id, kind))
        assert saved.input_shape == (None, 32, 32, 3) and saved.count_params() == trainer.model.count_params()
    plain = keras.models.load_model(store.model_path(result.run_id)).evaluate(test.x_test, test.y_test, verbose=0,
                                                                              return_dict=True)
    assert plain["accuracy"] == result.test_metrics["accuracy"] == store.get(result.run_id).test_accuracy
    assert plain["loss"] == pytest.approx(result.test_metrics["loss"], rel=1e-4)
    last = keras.models.load_model(store.model_path(result.run_id, "last"))
    assert int(last.optimizer.iterations.numpy()) == 2 * 4  # the head's optimizer state travels with the whole model


def test_the_run_is_the_same_as_training_the_whole_model(runs):
    (_, cached, cached_events), (trainer, whole, whole_events) = runs["first"], runs["whole"]
    assert trainer.features is None
    assert any("through it in every epoch: the Trainer's SpeedSettings turn it off" in line
               for line in whole_events.logs)
    for ours, theirs in zip(cached_events.epochs, whole_events.epochs):
        for name in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert ours.logs[name] == pytest.approx(theirs.logs[name], rel=1e-4, abs=1e-6)
    assert cached.test_metrics["accuracy"] == whole.test_metrics["accuracy"]
    assert cached.test_metrics["loss"] == pytest.approx(whole.test_metrics["loss"], rel=1e-4)


def test_a_second_run_reuses_the_cache_and_another_input_size_does_not(runs):
    first, (trainer, again, events) = runs["first"][1], runs["again"]
    assert trainer.features.computed == {} and trainer.features.reused == {"train": 64, "val": 16, "test": 16}
    assert not any(e.stage == "features" for e in events.stages)
    assert any("cached features" in line for line in events.logs)
    assert again.test_metrics["accuracy"] == first.test_metrics["accuracy"]
    resized, result, _ = runs["resized"]
    assert result.status == "finished" and resized.features.computed == {"train": 64, "val": 16, "test": 16}
    assert len([name for name in runs["files"] if name.endswith(".npy")]) == 6  # 3 splits at 32, 3 at 48


def test_other_weights_give_another_key_and_the_same_weights_the_same():
    def split(seed, architecture="vgg16"):
        keras.utils.set_random_seed(seed)
        return features_module.split_model(models.build_model(
            ModelConfig(architecture=architecture, weights="none", input_size=32, head="dense256"), (32, 32, 3), 4))

    def key(seed):
        return features_module.frozen_key(split(seed).frozen, "float32")

    assert key(1) == key(1) != key(2)
    pooled = split(1, "mobilenetv2")  # after global average pooling: 1,280 floats an image, not 1x1x1,280
    assert pooled.feature_shape == (1280,) and pooled.cut == "the input of 'dense_256'"


def test_augmentation_computes_the_base_every_epoch_and_says_why(tmp_path):
    class CancelOnceDecided(Events):
        def on_log(self, text):
            super().on_log(text)
            trainer.cancel()  # what is decided is all this test needs: no need to train

    config = frozen_config(epochs=1)
    config.training.augmentation = "flip"
    trainer = Trainer(config, events := CancelOnceDecided(), RunStore(tmp_path), dataset=data())
    result = trainer.run()
    assert result.status == "stopped" and trainer.features is None
    assert any("through it in every epoch: augmentation 'flip' changes the images every epoch" in line
               for line in events.logs)
    assert not os.path.exists(features_module.feature_dir())


def test_a_fine_tuned_vgg16_is_cut_inside_its_base_before_its_first_trainable_layer():
    model = models.build_model(ModelConfig(architecture="vgg16", weights="none", input_size=32, head="dense256",
                                           trainable_layers=10), (32, 32, 3), 4)
    split = features_module.split_model(model, "float16")
    assert split.inside_base and split.cut == "the input of 'block3_conv3' inside vgg16"
    assert split.feature_shape == (8, 8, 256) and split.head.inputs[0].dtype == "float16"
    assert [w.path for w in split.head.trainable_weights] == [w.path for w in model.trainable_weights]
    images = data().x_test[:4]
    np.testing.assert_allclose(split.head.predict(split.frozen.predict(images, verbose=0), verbose=0),
                               model.predict(images, verbose=0), atol=1e-3)


def test_stop_during_the_feature_pass_stops_the_run_cleanly(tmp_path):
    store = RunStore(tmp_path)
    events = Events()
    trainer = Trainer(frozen_config(), events, store, dataset=data())
    events.stop_on_features = trainer
    result = trainer.run()
    assert result.status == "stopped" and "computing the frozen base's features" in result.reason
    assert store.list_runs() == [] and not events.epochs
    assert [name for name in os.listdir(features_module.feature_dir())] == []  # no half-written file is left
