"""Groups of runs trained one after the other: the seeds' experiments in one action.

`main.py queue GROUP` and the window's Queue action both take their runs
from here, so they train the same settings.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable

from engine.config import MACHINE_KEYS, ModelConfig, RunConfig, apply_preset
from engine.errors import ConfigError


@dataclass(frozen=True)
class QueuedRun:
    """One run of a group: a name, the architecture, the preset, and model settings the preset does not give."""

    name: str
    architecture: str
    preset: str
    model: dict[str, Any] = field(default_factory=dict)


# The runs' names are the rows of the seeds' tables (DESIGN.md's comparison
# for the second seed's), so a queued group reads like the table it redoes.
GROUPS: dict[str, list[QueuedRun]] = {
    # The first seed: SimCNN and ResNet50 with the paper's recipe, then
    # ResNet50 again with its second recipe; ResNet50 trained whole both times.
    "Seed 1": [
        QueuedRun("SimCNN (Paper Table 1)", "simcnn", "Paper Table 1"),
        QueuedRun("ResNet50 (Paper Table 1)", "resnet50", "Paper Table 1"),
        QueuedRun("ResNet50 (ResNet50-02)", "resnet50", "ResNet50-02"),
    ],
    # The second seed's table: batch 64, Adam, 10 epochs for all; the
    # pretrained bases frozen with linear heads at 32x32, then VGG16 with its
    # last 10 layers fine-tuned, at 32x32 too (its preset leaves the size to
    # the architecture's default, which is the data's own size).
    "Seed 3": [
        QueuedRun("CNN from scratch", "cnn", "Seed 2 (Adam)"),
        QueuedRun("VGG16 frozen", "vgg16", "Seed 2 (Adam)"),
        QueuedRun("ResNet50 frozen", "resnet50", "Seed 2 (Adam)"),
        QueuedRun("MobileNetV2 frozen", "mobilenetv2", "Seed 2 (Adam)"),
        QueuedRun("VGG16 fine-tuned (top 10 layers)", "vgg16", "VGG16 fine-tune", {"input_size": 32}),
    ],
}


def group_configs(group: str, base: RunConfig, overrides: list[str] | None = None) -> list[RunConfig]:
    """The settings of every run of `group`, in order: `base`'s dataset and
    machine settings (precision, distribution...), the run's architecture,
    preset and model settings, then each "key=value" of `overrides` (applied
    to every run), each config checked. ConfigError for an unknown group or
    a bad override, before anything trains."""
    if group not in GROUPS:
        raise ConfigError(f"unknown group '{group}'; choose one of {', '.join(repr(name) for name in GROUPS)}")
    overrides = list(overrides or [])
    pairs = []
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"group '{group}': the override '{item}' is not KEY=VALUE (e.g. epochs=1)")
        pairs.append((item, key.strip(), value.strip()))
    configs = []
    for run in GROUPS[group]:
        config = RunConfig(dataset=copy.deepcopy(base.dataset), model=ModelConfig(architecture=run.architecture))
        for key in MACHINE_KEYS:  # apply_preset keeps them from the config it is given
            setattr(config.training, key, getattr(base.training, key))
        config = apply_preset(config, run.preset)
        for key, value in run.model.items():
            config.set(f"model.{key}", value)
        config.name = f"{group} · {run.name}"
        for item, key, value in pairs:
            try:
                config.set(key, value)
            except ConfigError as exc:
                raise ConfigError(f"group '{group}', override '{item}': {exc}") from None
        try:
            config.check()
        except ConfigError as exc:
            given = f" with {', '.join(overrides)}" if overrides else ""
            raise ConfigError(f"group '{group}', run '{run.name}'{given}: {exc}") from None
        configs.append(config)
    return configs


def run_group(configs: list[RunConfig], store, listener=None, should_stop: Callable[[], bool] | None = None,
              on_trainer: Callable[[Any], None] | None = None, *, dataset=None) -> list[Any]:
    """Train the configs one after the other with the engine's Trainer, each
    saved as it ends; `should_stop` True (asked between runs) cancels the
    runs not started; `on_trainer(trainer)` is called as each one starts so
    a caller can stop it. The TrainResults of the runs that ran.

    A run that fails does not end the queue (an overnight queue should
    train what it can); its result says why. `dataset` (an engine Dataset)
    is used for every run; without it, the data a run loaded is handed to
    the next run with the same dataset settings instead of loading it again.
    """
    from engine.training import Trainer

    results = []
    loaded, loaded_for = None, None
    for config in configs:
        if should_stop is not None and should_stop():
            break
        data = dataset if dataset is not None else loaded if config.dataset == loaded_for else None
        trainer = Trainer(config, listener=listener, store=store, dataset=data)
        if on_trainer is not None:
            on_trainer(trainer)
        results.append(trainer.run())
        if dataset is None and trainer.dataset is not None:
            loaded, loaded_for = trainer.dataset, copy.deepcopy(config.dataset)
    return results
