"""Settings: validation messages, presets, JSON round-trip, --set parsing."""

import pytest

from engine.config import PRESETS, RunConfig, preset, validate
from engine.errors import ConfigError


def test_paper_table_1_is_the_seeds_settings():
    t = preset("Paper Table 1").training
    assert (t.batch_size, t.epochs, t.steps_per_epoch, t.validation_steps) == (32, 25, 550, 1)
    assert (t.optimizer, t.learning_rate, t.momentum) == ("sgd", 0.01, 0.0)


def test_resnet50_02_and_seed_2_presets():
    r = preset("ResNet50-02")
    assert r.model.architecture == "resnet50"
    assert (r.training.batch_size, r.training.epochs, r.training.learning_rate, r.training.steps_per_epoch) == (
        64, 30, 0.005, 0)
    a = preset("Seed 2 (Adam)").training
    assert (a.optimizer, a.learning_rate, a.batch_size, a.epochs) == ("adam", 1e-3, 64, 10)


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_is_valid_and_round_trips(name):
    config = preset(name)
    assert config.validate() == {}
    assert RunConfig.from_json(config.to_json()) == config


@pytest.mark.parametrize("key, value, words", [
    ("batch_size", "0", ["training.batch_size", "0", "between 1 and 8192"]),
    ("epochs", "-3", ["training.epochs", "-3"]),
    ("learning_rate", "0", ["training.learning_rate", "above 0"]),
    ("momentum", "1.5", ["training.momentum", "1.5", "between 0 and 0.999"]),
    ("validation_split", "0.9", ["dataset.validation_split", "0.9", "between 0 and 0.5"]),
    ("optimizer", "adagrad", ["training.optimizer", "adagrad", "sgd, adam, adamw, rmsprop"]),
    ("architecture", "alexnet", ["model.architecture", "alexnet", "simcnn"]),
])
def test_invalid_values_name_field_value_and_what_is_allowed(key, value, words):
    config = preset("Paper Table 1")
    config.set(key, value)
    problems = config.validate()
    assert len(problems) == 1
    message = next(iter(problems.values()))
    for word in words:
        assert word in message
    with pytest.raises(ConfigError):
        config.check()


def test_steps_per_epoch_cannot_overrun_the_data():
    config = preset("Paper Table 1")  # 550 steps of 32 = 17,600 images
    problems = validate(config, train_size=10_000, val_size=100)
    assert "training.steps_per_epoch" in problems
    assert "313 steps" in problems["training.steps_per_epoch"]
    assert validate(config, train_size=45_000, val_size=5_000) == {}


def test_set_converts_types_and_auto():
    config = preset("Paper Table 1")
    config.set("steps_per_epoch", "auto")
    config.set("training.learning_rate", "1e-3")
    config.set("train_subset", "500")
    assert config.training.steps_per_epoch == 0
    assert config.training.learning_rate == pytest.approx(1e-3)
    assert config.dataset.train_subset == 500


@pytest.mark.parametrize("key, value, message", [
    ("epochs", "ten", "training.epochs = 'ten' is not a valid int"),
    ("batch_size", "2.5", "not a valid int"),
    ("colour", "red", "unknown setting 'colour'"),
    ("training.nope", "1", "unknown setting 'training.nope'"),
])
def test_set_rejects_nonsense(key, value, message):
    with pytest.raises(ConfigError, match=message):
        preset("Paper Table 1").set(key, value)


def test_from_json_rejects_bad_documents():
    with pytest.raises(ConfigError, match="not valid JSON"):
        RunConfig.from_json("{nope")
    with pytest.raises(ConfigError, match="unknown setting 'training.speed'"):
        RunConfig.from_json('{"training": {"speed": 3}}')
    with pytest.raises(ConfigError, match="unknown preset"):
        preset("Table 2")
