"""Settings for a run: dataset, model and training, as plain dataclasses.

One place declares every setting, its default and what values it allows.
`validate()` returns every problem at once with a message that names the
field, the value and what is allowed, so the GUI can mark each field and the
CLI can print one clear line. Settings round-trip through JSON.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from engine.errors import ConfigError

DATASET_SOURCES = ("cifar10", "cifar10_archive", "folder", "cifar100", "fashion_mnist")
ARCHITECTURES = ("simcnn", "resnet50", "vgg16", "mobilenetv2", "cnn")
# One line per architecture for the Model panel; here, not in models.py, so
# the window can show it before Keras has been imported.
ARCHITECTURE_INFO: dict[str, str] = {
    "simcnn": "SimCNN: the paper's small CNN with batch norm, trained from scratch",
    "resnet50": "ResNet50 pretrained on ImageNet with a dense head; images upsampled to 224 by default",
    "vgg16": "VGG16 pretrained on ImageNet, frozen or fine-tuned, at the images' own size",
    "mobilenetv2": "MobileNetV2 pretrained on ImageNet: small and fast, at the images' own size",
    "cnn": "Plain three-block CNN trained from scratch (the second seed's)",
}
WEIGHTS = ("imagenet", "none", "file")
HEADS = ("default", "linear", "dense256", "dense1024_512")
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
SCHEDULES = ("constant", "step", "cosine")
AUGMENTATIONS = ("none", "flip", "flip_crop")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
DISTRIBUTIONS = ("none", "mirrored")


@dataclass
class DatasetConfig:
    """Where the images come from and how they are split.

    `path` is the archive or folder for "cifar10_archive" and "folder".
    Subsets (0 = all) cut each split for quick runs, keeping classes balanced.
    `validation_split` is the stratified share of the training images held
    out for validation when the source has no validation split of its own.
    `image_size` is the side images from a folder are resized to when they
    are not all that size already (0 = keep the size of the first image).
    """

    source: str = "cifar10"
    path: str = ""
    train_subset: int = 0
    test_subset: int = 0
    validation_split: float = 0.1
    image_size: int = 32
    seed: int = 0


@dataclass
class ModelConfig:
    """Which architecture, with which weights and which layers trainable.

    `trainable_layers`: 0 freezes the pretrained base, N > 0 unfreezes its
    last N layers, -1 trains the whole base. `input_size` is the side the
    images are resized to inside the model for the pretrained bases; 0 means
    the architecture's default (ResNet50: 224, as the first seed's 7x
    upsample; VGG16 and MobileNetV2: the data's own size, as the second
    seed). SimCNN and the CNN always use the data's own size. `head` is the
    classifier on top of a pretrained base: "default" is the seeds' head for
    that architecture (ResNet50: Dense 1024-512; others: linear).
    """

    architecture: str = "simcnn"
    weights: str = "imagenet"
    weights_file: str = ""
    trainable_layers: int = 0
    input_size: int = 0
    head: str = "default"


@dataclass
class TrainingConfig:
    """Hyperparameters. `steps_per_epoch` and `validation_steps` are 0 for
    "auto": every batch the data gives (and never more, so a run cannot
    overrun its input). `early_stopping` is the patience in epochs (0 = off).
    """

    optimizer: str = "sgd"
    learning_rate: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup_epochs: int = 0
    step_every: int = 10
    step_factor: float = 0.1
    batch_size: int = 32
    epochs: int = 25
    steps_per_epoch: int = 0
    validation_steps: int = 0
    augmentation: str = "none"
    label_smoothing: float = 0.0
    early_stopping: int = 0
    seed: int = 42
    precision: str = "float32"
    distribution: str = "none"
    steps_per_execution: int = 0  # 0: auto (engine/training.py's SpeedSettings)


@dataclass
class RunConfig:
    """Everything one training run needs; saved as the run's config.json."""

    name: str = ""
    preset: str = ""
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunConfig":
        """Build from a dict; unknown keys are an error, missing keys default."""
        if not isinstance(data, dict):
            raise ConfigError("settings must be a JSON object")
        sections = {"dataset": DatasetConfig, "model": ModelConfig, "training": TrainingConfig}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key in sections:
                kwargs[key] = _section_from_dict(sections[key], value, key)
            elif key in ("name", "preset"):
                kwargs[key] = str(value)
            else:
                raise ConfigError(f"unknown setting '{key}'")
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str) -> "RunConfig":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"settings are not valid JSON: {exc}") from None
        return cls.from_dict(data)

    def copy(self) -> "RunConfig":
        return copy.deepcopy(self)

    def validate(self) -> dict[str, str]:
        """Return {"section.field": message} for every invalid setting."""
        return validate(self)

    def check(self) -> None:
        """Raise ConfigError naming the first invalid setting(s)."""
        problems = self.validate()
        if problems:
            raise ConfigError("; ".join(problems.values()))

    def set(self, key: str, raw: str | Any) -> None:
        """Set "section.field" (or a bare field name) from a string or value.

        Used by the CLI's `--set key=value`; the string is converted to the
        field's type and the result is *not* validated here (call check()).
        """
        section, name, full_key = _resolve_key(self, key)
        current = getattr(section, name)
        setattr(section, name, _convert(raw, type(current), full_key))


def _section_from_dict(cls, value: Any, where: str):
    if not isinstance(value, dict):
        raise ConfigError(f"'{where}' must be an object of settings")
    names = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, item in value.items():
        if key not in names:
            raise ConfigError(f"unknown setting '{where}.{key}'")
        default = getattr(cls(), key)
        kwargs[key] = _convert(item, type(default), f"{where}.{key}")
    return cls(**kwargs)


def _resolve_key(config: RunConfig, key: str):
    """Find the section holding a setting; a bare name is looked up in
    training, then model, then dataset."""
    if key in ("name", "preset"):
        return config, key, key
    if "." in key:
        section_name, name = key.split(".", 1)
        section = getattr(config, section_name, None)
        if section is None or not dataclasses.is_dataclass(section) or not hasattr(section, name):
            raise ConfigError(f"unknown setting '{key}'")
        return section, name, key
    for section_name in ("training", "model", "dataset"):
        if hasattr(getattr(config, section_name), key):
            return getattr(config, section_name), key, f"{section_name}.{key}"
    raise ConfigError(f"unknown setting '{key}'")


def _convert(raw: Any, kind: type, key: str):
    if kind is str:
        return str(raw)
    if isinstance(raw, kind) and not (kind is int and isinstance(raw, bool)):
        return raw
    text = str(raw).strip()
    if kind in (int, float) and text.lower() == "auto":
        return kind(0)
    try:
        if kind is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind is int:
            number = float(text)
            if number != int(number):
                raise ValueError
            return int(number)
        return kind(text)
    except (TypeError, ValueError):
        raise ConfigError(f"{key} = {raw!r} is not a valid {kind.__name__}") from None


def _choice(problems, key, value, allowed):
    if value not in allowed:
        problems[key] = f"{key} = {value!r} is not allowed; choose one of {', '.join(allowed)}"


def _range(problems, key, value, low, high, what):
    if not (low <= value <= high):
        problems[key] = f"{key} = {value!r} is out of range; it must be {what}"


def validate(config: RunConfig, train_size: int | None = None, val_size: int | None = None) -> dict[str, str]:
    """Check every setting; with the split sizes, also the step counts.

    The step counts can only be checked against the data: a fixed
    steps_per_epoch larger than the data gives is refused (the seeds' "Your
    input ran out of data" trap).
    """
    p: dict[str, str] = {}
    d, m, t = config.dataset, config.model, config.training
    _choice(p, "dataset.source", d.source, DATASET_SOURCES)
    if d.source in ("cifar10_archive", "folder") and not d.path.strip():
        p["dataset.path"] = f"dataset.path is empty; the '{d.source}' source needs a file or folder"
    _range(p, "dataset.train_subset", d.train_subset, 0, 10**9, "0 (all) or a positive count")
    _range(p, "dataset.test_subset", d.test_subset, 0, 10**9, "0 (all) or a positive count")
    _range(p, "dataset.seed", d.seed, 0, 2**31 - 1, "between 0 and 2147483647")
    _range(p, "dataset.validation_split", d.validation_split, 0.0, 0.5, "between 0 and 0.5")
    _range(p, "dataset.image_size", d.image_size, 0, 1024, "0 (as the files are) or 18 to 1024")
    if 0 < d.image_size < 18:
        p["dataset.image_size"] = (
            f"dataset.image_size = {d.image_size} is too small for the models; use 0 or 18 to 1024"
        )

    _choice(p, "model.architecture", m.architecture, ARCHITECTURES)
    _choice(p, "model.weights", m.weights, WEIGHTS)
    if m.weights == "file" and not m.weights_file.strip():
        p["model.weights_file"] = "model.weights_file is empty; weights 'file' needs a .h5 weights file"
    _range(p, "model.trainable_layers", m.trainable_layers, -1, 10_000, "-1 (all), 0 (frozen) or N last layers")
    if m.input_size != 0 and not (32 <= m.input_size <= 640):
        p["model.input_size"] = f"model.input_size = {m.input_size} is out of range; use 0 (default) or 32 to 640"
    _choice(p, "model.head", m.head, HEADS)

    _choice(p, "training.optimizer", t.optimizer, OPTIMIZERS)
    if not (0 < t.learning_rate <= 10):
        p["training.learning_rate"] = (
            f"training.learning_rate = {t.learning_rate!r} is out of range; it must be above 0 and at most 10"
        )
    _range(p, "training.momentum", t.momentum, 0.0, 0.999, "between 0 and 0.999")
    _range(p, "training.weight_decay", t.weight_decay, 0.0, 1.0, "between 0 and 1")
    _choice(p, "training.schedule", t.schedule, SCHEDULES)
    _range(p, "training.warmup_epochs", t.warmup_epochs, 0, 1000, "between 0 and the number of epochs")
    if t.warmup_epochs >= max(t.epochs, 1) and t.warmup_epochs > 0:
        p["training.warmup_epochs"] = (
            f"training.warmup_epochs = {t.warmup_epochs} must be fewer than the epochs ({t.epochs})"
        )
    _range(p, "training.step_every", t.step_every, 1, 10_000, "at least 1 epoch")
    if not (0 < t.step_factor < 1):
        p["training.step_factor"] = f"training.step_factor = {t.step_factor!r} must be between 0 and 1 (exclusive)"
    _range(p, "training.batch_size", t.batch_size, 1, 8192, "between 1 and 8192")
    _range(p, "training.epochs", t.epochs, 1, 10_000, "between 1 and 10000")
    _range(p, "training.steps_per_epoch", t.steps_per_epoch, 0, 10**7, "0 (auto) or a positive count")
    _range(p, "training.validation_steps", t.validation_steps, 0, 10**7, "0 (all) or a positive count")
    _choice(p, "training.augmentation", t.augmentation, AUGMENTATIONS)
    _range(p, "training.label_smoothing", t.label_smoothing, 0.0, 0.5, "between 0 and 0.5")
    _range(p, "training.early_stopping", t.early_stopping, 0, 1000, "0 (off) or a patience in epochs")
    _range(p, "training.seed", t.seed, 0, 2**31 - 1, "between 0 and 2147483647")
    _choice(p, "training.precision", t.precision, PRECISIONS)
    _choice(p, "training.distribution", t.distribution, DISTRIBUTIONS)
    _range(p, "training.steps_per_execution", t.steps_per_execution, 0, 1000, "0 (auto) or between 1 and 1000")

    if train_size is not None and "training.batch_size" not in p:
        available = -(-train_size // t.batch_size)
        if train_size == 0:
            p["dataset"] = "the training split is empty"
        elif t.steps_per_epoch > available:
            p["training.steps_per_epoch"] = (
                f"training.steps_per_epoch = {t.steps_per_epoch} is more than the data gives: "
                f"{train_size} training images at batch {t.batch_size} make {available} steps; "
                f"use 0 (auto) or at most {available}"
            )
    if val_size is not None and "training.batch_size" not in p and t.validation_steps:
        available = -(-val_size // t.batch_size)
        if t.validation_steps > available:
            p["training.validation_steps"] = (
                f"training.validation_steps = {t.validation_steps} is more than the data gives: "
                f"{val_size} validation images at batch {t.batch_size} make {available} steps; "
                f"use 0 (all) or at most {available}"
            )
    return p


def _paper_table_1() -> RunConfig:
    return RunConfig(
        preset="Paper Table 1",
        model=ModelConfig(architecture="simcnn"),
        training=TrainingConfig(
            optimizer="sgd", learning_rate=0.01, momentum=0.0, batch_size=32, epochs=25,
            steps_per_epoch=550, validation_steps=1,
        ),
    )


def _resnet50_02() -> RunConfig:
    return RunConfig(
        preset="ResNet50-02",
        model=ModelConfig(architecture="resnet50", weights="imagenet"),
        training=TrainingConfig(optimizer="sgd", learning_rate=0.005, batch_size=64, epochs=30),
    )


def _seed2_adam() -> RunConfig:
    return RunConfig(
        preset="Seed 2 (Adam)",
        model=ModelConfig(architecture="cnn"),
        training=TrainingConfig(optimizer="adam", learning_rate=1e-3, batch_size=64, epochs=10),
    )


def _simcnn_best() -> RunConfig:
    """The best SimCNN recipe found on a validation split (see README).

    Same 123,210 parameters as the paper; in-model flip + translation
    augmentation, AdamW with decoupled weight decay, label smoothing and a
    warmed-up cosine schedule at batch 64: 80.9% on a 5,000-image validation
    split of the 50,000 training images (batch 128: 80.7%); never tuned on
    the test split.
    """
    return RunConfig(
        preset="SimCNN best",
        model=ModelConfig(architecture="simcnn"),
        training=TrainingConfig(
            optimizer="adamw", learning_rate=2e-3, weight_decay=0.05, schedule="cosine",
            warmup_epochs=2, batch_size=64, epochs=40, augmentation="flip_crop",
            label_smoothing=0.1, early_stopping=0,
        ),
    )


def _vgg16_finetune() -> RunConfig:
    return RunConfig(
        preset="VGG16 fine-tune",
        model=ModelConfig(architecture="vgg16", weights="imagenet", trainable_layers=10, head="dense256"),
        training=TrainingConfig(optimizer="adam", learning_rate=1e-4, batch_size=64, epochs=10),
    )


PRESETS = {
    "Paper Table 1": _paper_table_1,
    "ResNet50-02": _resnet50_02,
    "Seed 2 (Adam)": _seed2_adam,
    "SimCNN best": _simcnn_best,
    "VGG16 fine-tune": _vgg16_finetune,
}


def preset(name: str) -> RunConfig:
    """A fresh RunConfig for a named preset."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise ConfigError(f"unknown preset '{name}'; choose one of {', '.join(PRESETS)}") from None
