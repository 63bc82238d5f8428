"""Settings: the registry, validation messages, presets, versioned JSON, --set parsing."""

import dataclasses
import json

import pytest

from engine import registry
from engine.config import (
    CONFIG_VERSION, MOST_TRAINABLE_LAYERS, PRESET_MODEL_KEYS, PRESETS, SECTIONS, ModelConfig, RunConfig,
    apply_preset, preset, preset_matches, validate,
)
from engine.errors import ConfigError

# config.json as the code before settings versions wrote it (version 1, no "version" key).
VERSION_1_JSON = """{
  "dataset": {
    "image_size": 32,
    "path": "",
    "seed": 0,
    "source": "cifar10",
    "test_subset": 0,
    "train_subset": 0,
    "validation_split": 0.1
  },
  "model": {
    "architecture": "resnet50",
    "head": "default",
    "input_size": 0,
    "trainable_layers": -1,
    "weights": "imagenet",
    "weights_file": ""
  },
  "name": "old run",
  "preset": "ResNet50-02",
  "training": {
    "augmentation": "none",
    "batch_size": 64,
    "distribution": "none",
    "early_stopping": 0,
    "epochs": 30,
    "label_smoothing": 0.0,
    "learning_rate": 0.005,
    "momentum": 0.0,
    "optimizer": "sgd",
    "precision": "float32",
    "schedule": "constant",
    "seed": 42,
    "step_every": 10,
    "step_factor": 0.1,
    "steps_per_epoch": 0,
    "steps_per_execution": 0,
    "validation_steps": 0,
    "warmup_epochs": 0,
    "weight_decay": 0.0
  }
}"""


def field_keys():
    return {f"{name}.{f.name}" for name, cls in SECTIONS.items() for f in dataclasses.fields(cls)}


def test_the_registry_describes_every_setting_once():
    assert set(registry.SETTINGS) == field_keys() | {"name", "preset"}
    for key, described in registry.SETTINGS.items():
        assert described.key == key and described.label and described.help
        assert registry.setting(key) is described
    assert registry.named("training.batch_size") == "Batch size (training.batch_size)"
    with pytest.raises(KeyError):
        registry.setting("training.speed")


def test_every_default_is_an_allowed_choice_with_a_label():
    config = RunConfig()
    for key, described in registry.SETTINGS.items():
        if described.choices is not None:
            section, name = key.split(".")
            assert getattr(getattr(config, section), name) in described.choices
    assert registry.setting("training.optimizer").choices == {
        "sgd": "SGD", "adam": "Adam", "adamw": "AdamW", "rmsprop": "RMSprop"}
    assert registry.setting("model.trainable_layers").words == {0: "frozen", -1: "all"}


def test_docs_settings_names_every_setting_and_every_choice():
    """docs/settings.md is the CLI user's list: a new setting or choice must appear there too."""
    import os
    import re

    path = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "settings.md")
    with open(path, encoding="utf-8") as handle:
        rows = [line for line in handle if line.startswith("| ") and not line.startswith("| setting")]
    named = {}
    for row in rows:
        keys, values = row.split(" | ", 1)
        section = None
        for key in keys.strip("| ").split(", "):
            section, _, name = key.rpartition(".") if "." in key else (section, "", key)
            named[f"{section}.{name}"] = values
    for key, described in registry.SETTINGS.items():
        if key in ("name", "preset"):
            continue
        assert key in named, f"docs/settings.md does not name {key}"
        for choice in described.choices or ():
            assert re.search(rf"\b{re.escape(choice)}\b", named[key]), f"docs/settings.md: {key} lacks {choice}"


def test_architectures_in_their_order_with_their_defaults():
    assert list(registry.ARCHITECTURES) == ["simcnn", "resnet50", "vgg16", "mobilenetv2", "cnn"]
    resnet = registry.ARCHITECTURES["resnet50"]
    assert (resnet.label, resnet.pretrained, resnet.default_input_size, resnet.default_head) == (
        "ResNet50", True, 224, "dense1024_512")
    for architecture in registry.ARCHITECTURES.values():
        assert architecture.description.endswith(".")
        assert (architecture.default_head in registry.HEADS) == architecture.pretrained


@pytest.mark.parametrize("architecture", list(registry.ARCHITECTURES))
def test_paper_table_1_applies_to_every_architecture(architecture):
    config = preset("Paper Table 1", architecture)
    t = config.training
    assert config.model.architecture == architecture and config.preset == "Paper Table 1"
    assert (t.batch_size, t.epochs, t.steps_per_epoch, t.validation_steps) == (32, 25, 550, 1)
    assert (t.optimizer, t.learning_rate, t.momentum) == ("sgd", 0.01, 0.0)


def test_resnet50_presets_train_the_whole_network_or_the_head():
    seed = preset("ResNet50-02", "resnet50")
    assert seed.model.trainable_layers == -1
    assert (seed.training.batch_size, seed.training.epochs, seed.training.learning_rate,
            seed.training.steps_per_epoch) == (64, 30, 0.005, 0)
    frozen = preset("ResNet50 frozen base", "resnet50")
    assert frozen.model.trainable_layers == 0 and frozen.training == seed.training
    a = preset("Seed 2 (Adam)").training
    assert (a.optimizer, a.learning_rate, a.batch_size, a.epochs) == ("adam", 1e-3, 64, 10)
    vgg = preset("VGG16 fine-tune", "vgg16")
    assert (vgg.model.trainable_layers, vgg.model.head, vgg.training.learning_rate) == (10, "dense256", 1e-4)


@pytest.mark.parametrize("name", list(PRESETS))
@pytest.mark.parametrize("architecture", list(registry.ARCHITECTURES))
def test_every_preset_is_valid_for_every_architecture_and_round_trips(name, architecture):
    config = preset(name, architecture)
    assert config.validate() == {}
    assert RunConfig.from_json(config.to_json()) == config
    assert preset_matches(config, name)


@pytest.mark.parametrize("name", list(PRESETS))
def test_a_preset_never_sets_the_architecture(name):
    assert set(PRESETS[name].model) <= set(PRESET_MODEL_KEYS)
    assert PRESETS[name].description


def test_apply_preset_keeps_the_model_choice_data_and_machine_settings():
    config = RunConfig(model=ModelConfig(architecture="mobilenetv2", weights="none"))
    config.dataset.train_subset = 500
    config.training.precision, config.training.steps_per_execution = "mixed_bfloat16", 7
    applied = apply_preset(config, "VGG16 fine-tune")
    assert (applied.model.architecture, applied.model.weights) == ("mobilenetv2", "none")
    assert (applied.model.trainable_layers, applied.model.head) == (10, "dense256")
    assert applied.dataset.train_subset == 500
    assert (applied.training.precision, applied.training.steps_per_execution) == ("mixed_bfloat16", 7)
    assert applied.training.learning_rate == 1e-4 and applied.preset == "VGG16 fine-tune"
    assert config.model.trainable_layers == 0 and config.preset == ""  # the original is left as it was


def test_preset_matches_until_a_field_it_sets_changes():
    config = preset("ResNet50-02", "resnet50")
    config.training.precision = "mixed_float16"
    assert preset_matches(config, "ResNet50-02")
    config.model.trainable_layers = 0
    assert not preset_matches(config, "ResNet50-02")
    assert preset_matches(config, "ResNet50 frozen base")
    config.model.architecture = "simcnn"  # no pretrained base: the model settings do not count
    assert preset_matches(config, "ResNet50-02")
    config.training.epochs = 31
    assert not preset_matches(config, "ResNet50-02")
    assert not preset_matches(config, "Table 2")


def test_validation_names_the_field_as_the_window_and_the_cli_do():
    config = preset("Paper Table 1")
    config.set("batch_size", "0")
    assert validate(config) == {"training.batch_size": (
        "Batch size (training.batch_size) = 0 is out of range; it must be between 1 and 8192")}


def test_every_validation_message_starts_with_the_label_and_key():
    config = RunConfig()
    for name, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            if f.name in ("path", "weights_file"):
                continue
            bad = "nonsense" if f.type == "str" else -5
            setattr(getattr(config, name), f.name, bad)
    problems = validate(config)
    assert set(problems) == field_keys() - {"dataset.path", "model.weights_file"}
    config.dataset.source, config.model.weights = "folder", "file"
    problems.update(validate(config))
    assert set(problems) == field_keys()
    for key, message in problems.items():
        assert message.startswith(registry.named(key) + " "), message


@pytest.mark.parametrize("key, value, words", [
    ("batch_size", "0", ["Batch size (training.batch_size)", "0", "between 1 and 8192"]),
    ("epochs", "-3", ["Epochs (training.epochs)", "-3"]),
    ("learning_rate", "0", ["Learning rate (training.learning_rate)", "above 0"]),
    ("momentum", "1.5", ["training.momentum", "1.5", "between 0 and 0.999"]),
    ("validation_split", "0.9", ["Validation split (dataset.validation_split)", "0.9", "between 0 and 0.5"]),
    ("optimizer", "adagrad", ["Optimizer (training.optimizer)", "adagrad", "sgd, adam, adamw, rmsprop"]),
    ("architecture", "alexnet", ["Architecture (model.architecture)", "alexnet", "simcnn"]),
    ("trainable_layers", "-2", ["Trainable layers (model.trainable_layers)", "-1 (all), 0 (frozen)"]),
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


def test_set_converts_types_and_the_settings_words():
    config = preset("Paper Table 1")
    config.set("steps_per_epoch", "auto")
    config.set("validation_steps", "All")
    config.set("model.trainable_layers", "frozen")
    config.set("training.learning_rate", "1e-3")
    config.set("train_subset", "500")
    assert (config.training.steps_per_epoch, config.training.validation_steps) == (0, 0)
    assert config.model.trainable_layers == 0
    assert config.training.learning_rate == pytest.approx(1e-3)
    assert config.dataset.train_subset == 500


@pytest.mark.parametrize("key, value, message", [
    ("epochs", "ten", r"Epochs \(training.epochs\) = 'ten' is not a whole number"),
    ("batch_size", "2.5", "not a whole number"),
    ("learning_rate", "fast", r"Learning rate \(training.learning_rate\) = 'fast' is not a number"),
    ("epochs", "auto", "is not a whole number"),
    ("colour", "red", "unknown setting 'colour'"),
    ("training.nope", "1", "unknown setting 'training.nope'"),
    ("copy.x", "1", "unknown setting 'copy.x'"),
])
def test_set_rejects_nonsense(key, value, message):
    with pytest.raises(ConfigError, match=message):
        preset("Paper Table 1").set(key, value)


def test_from_json_rejects_bad_documents():
    with pytest.raises(ConfigError, match="not valid JSON"):
        RunConfig.from_json("{nope")
    with pytest.raises(ConfigError, match="unknown setting 'training.speed'"):
        RunConfig.from_json('{"training": {"speed": 3}}')
    with pytest.raises(ConfigError, match=r"Epochs \(training.epochs\) = 2.5 is not a whole number"):
        RunConfig.from_json('{"version": 2, "training": {"epochs": 2.5}}')
    with pytest.raises(ConfigError, match="unknown preset"):
        preset("Table 2")


def test_config_json_carries_its_version():
    data = json.loads(preset("SimCNN best").to_json())
    assert data["version"] == CONFIG_VERSION == 2
    assert RunConfig.from_dict(data) == preset("SimCNN best")


def test_version_1_files_open_migrated():
    config = RunConfig.from_json(VERSION_1_JSON)
    assert config.name == "old run" and config.training.batch_size == 64
    # version 1's -1 kept batch normalization frozen: now every layer but batch normalization
    assert config.model.trainable_layers == MOST_TRAINABLE_LAYERS
    assert config.validate() == {}
    assert not preset_matches(config, "ResNet50-02")


def test_version_1_resnet50_02_was_the_frozen_base():
    data = json.loads(VERSION_1_JSON)
    data["model"]["trainable_layers"] = 0
    config = RunConfig.from_dict(data)
    assert config.preset == "ResNet50 frozen base" and preset_matches(config, "ResNet50 frozen base")


def test_version_1_with_unknown_keys_is_still_an_error():
    data = json.loads(VERSION_1_JSON)
    data["training"]["speed"] = 3
    with pytest.raises(ConfigError, match="unknown setting 'training.speed'"):
        RunConfig.from_dict(data)


def test_a_newer_version_is_refused_clearly():
    with pytest.raises(ConfigError) as caught:
        RunConfig.from_json('{"version": 3, "training": {"turbo": true}}')
    assert str(caught.value) == (
        "these settings were saved by a newer CIFAR Studio (settings version 3; this one reads up to 2)")
    for bad in ('"2"', "0", "true", "2.0"):
        with pytest.raises(ConfigError, match="is not a version CIFAR Studio wrote"):
            RunConfig.from_json('{"version": %s}' % bad)


# Settings that once raised OverflowError, TypeError or ValueError out of set(),
# from_dict() or from_json(): each is now one line naming the setting.
BAD_SETTINGS = [
    ("epochs", "inf", r"Epochs \(training.epochs\) = 'inf' is not a whole number"),
    ("epochs", "-inf", r"Epochs \(training.epochs\) = '-inf' is not a whole number"),
    ("epochs", "nan", r"Epochs \(training.epochs\) = 'nan' is not a whole number"),
    ("batch_size", "1e400", r"Batch size \(training.batch_size\) = '1e400' is not a whole number"),
    ("learning_rate", "nan", r"Learning rate \(training.learning_rate\) = nan is out of range"),
    ("learning_rate", "inf", r"Learning rate \(training.learning_rate\) = inf is out of range"),
    ("momentum", "nan", r"Momentum \(training.momentum\) = nan is out of range"),
    ("epochs", "9" * 400, r"Epochs \(training.epochs\) = 9{37}\.\.\. is out of range; it must be between 1 and 10000$"),
    ("__class__", "1", r"^unknown setting '__class__'$"),
    ("training.__class__", "1", r"^unknown setting 'training.__class__'$"),
    ("training.__dict__", "1", r"^unknown setting 'training.__dict__'$"),
    ("training.copy", "1", r"^unknown setting 'training.copy'$"),
    ("to_json", "x", r"^unknown setting 'to_json'$"),
    ("__init__", "1", r"^unknown setting '__init__'$"),
]


@pytest.mark.parametrize("key, value, message", BAD_SETTINGS)
def test_set_gives_a_setting_message_for_values_python_cannot_convert(key, value, message):
    config = preset("Paper Table 1")
    with pytest.raises(ConfigError, match=message):
        config.set(key, value)
        config.check()


@pytest.mark.parametrize("data, message", [
    ({"training": {"epochs": 1e309}}, r"Epochs \(training.epochs\) = inf is not a whole number"),
    ({"training": {"epochs": float("nan")}}, r"Epochs \(training.epochs\) = nan is not a whole number"),
    ({"training": {"epochs": 10**400}}, r"Epochs \(training.epochs\) = 10{36}\.\.\. is out of range"),
    ({"training": {"epochs": 10**5000}}, r"Epochs \(training.epochs\) = a number of about 5000 digits is out of"),
    ({"training": {"learning_rate": 10**5000}}, r"Learning rate \(training.learning_rate\) = a number of about"),
    ({"training": {"learning_rate": float("inf")}}, r"Learning rate \(training.learning_rate\) = inf is out of"),
    ({"training": {"epochs": [1]}}, r"Epochs \(training.epochs\) = \[1\] is not a whole number"),
    ({"training": {"epochs": {"a": 1}}}, r"Epochs \(training.epochs\) = \{'a': 1\} is not a whole number"),
    ({"training": {"epochs": None}}, r"Epochs \(training.epochs\) = None is not a whole number"),
    ({"training": {"learning_rate": [0.1]}}, r"Learning rate \(training.learning_rate\) = \[0.1\] is not a number"),
    ({"training": {"learning_rate": None}}, r"Learning rate \(training.learning_rate\) = None is not a number"),
    ({"training": {"optimizer": ["sgd"]}}, r"Optimizer \(training.optimizer\) = \['sgd'\] is not text"),
    ({"training": {"optimizer": None}}, r"Optimizer \(training.optimizer\) = None is not text"),
    ({"name": None}, r"Name \(name\) = None is not text"),
    ({"training": {"__class__": 1}}, r"^unknown setting 'training.__class__'$"),
    ({"__dict__": {}}, r"^unknown setting '__dict__'$"),
])
def test_from_dict_gives_a_setting_message_for_values_of_the_wrong_kind(data, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig.from_dict({"version": CONFIG_VERSION, **data}).check()


@pytest.mark.parametrize("text, message", [
    ('{"training": {"epochs": 1e309}}', r"Epochs \(training.epochs\) = inf is not a whole number"),
    ('{"training": {"epochs": NaN}}', r"Epochs \(training.epochs\) = nan is not a whole number"),
    ('{"training": {"learning_rate": Infinity}}', r"Learning rate \(training.learning_rate\) = inf is out of"),
    ('{"training": {"epochs": ' + "9" * 400 + "}}", r"Epochs \(training.epochs\) = 9{37}\.\.\. is out of range"),
    ('{"training": {"epochs": ' + "9" * 5000 + "}}", "settings are not usable JSON: a number in them has over 4300"),
    ('{"training": {"epochs": "' + "9" * 5000 + '"}}', r"Epochs \(training.epochs\) = '9{36}\.\.\. is not a whole"),
    ('{"training": {"epochs": null}}', r"Epochs \(training.epochs\) = None is not a whole number"),
    ('{"training": {"batch_size": [32]}}', r"Batch size \(training.batch_size\) = \[32\] is not a whole number"),
    ('{"version": 1e400}', "the settings version inf is not a version"),
    ("[" * 100_000 + "]" * 100_000, "settings are not usable JSON: they are nested too deeply"),
])
def test_from_json_gives_a_setting_message_for_numbers_python_cannot_hold(text, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig.from_json(text).check()
