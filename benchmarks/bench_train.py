"""Training speed: the engine's Trainer against a plain Keras script.

Usage:
    python benchmarks/bench_train.py [--data FOLDER] [--rounds 8] [--steps 550]
    python benchmarks/bench_train.py --steps 0             # every image once per epoch
    python benchmarks/bench_train.py --levers [jit,spin]   # and the engine with one lever changed per side

SimCNN with the Paper Table 1 settings (batch 32, SGD lr 0.01, 550 steps
per epoch, 1 validation step) on the real CIFAR-10 training images, 90% for
training and 10% held out. "plain" is what a notebook does: the same
architecture fed float32 x / 255 arrays through `model.fit(...,
shuffle=True)`. "engine" is the Trainer with the preset, its callbacks and
its own input stream, as the window and the CLI run it. Both do the same
math: the held-out accuracy after training is shown to check it.

Each side trains in its own live process and they take turns one epoch at a
time (common.interleave), so epochs seconds apart are compared; the first
epoch traces the graph and is left out, and so are the rounds in which
plain Keras' input ran out (common.compare).

--levers adds sides of the engine with one speed lever changed each: every
field of SpeedSettings against its default, TensorFlow's idle threads
spinning, and mixed bfloat16 (not the same math), each against the engine;
give names (parts of them) to run only those. Why each lever is the way it
is: docs/performance.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (add_data_argument, compare, find_images, load_images, parse, report, run_trainer,  # noqa: E402
                    time_epochs)

BATCH = 32
LEARNING_RATE = 0.01


def plain_simcnn(keras):
    """SimCNN as the seeds wrote it (the input scaled outside the model)."""
    from keras import layers

    inputs = x = keras.Input((32, 32, 3))
    for index, filters in enumerate((32, 64, 64)):
        x = layers.Conv2D(filters, 3, activation="relu")(x)
        x = layers.BatchNormalization()(x)
        if index < 2:
            x = layers.MaxPooling2D()(x)
    x = layers.Dense(64, activation="relu")(layers.Flatten()(x))
    return keras.Model(inputs, layers.Dense(10, activation="softmax")(x))


def plain_trial(spec: dict, data) -> dict:
    import keras

    keras.utils.set_random_seed(spec["seed"])
    x, x_val = data.x_train.astype("float32") / 255, data.x_val.astype("float32") / 255
    model = plain_simcnn(keras)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=LEARNING_RATE),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    records = time_epochs()
    model.fit(x, data.y_train, batch_size=BATCH, epochs=spec["epochs"], steps_per_epoch=spec["steps"] or None,
              validation_data=(x_val, data.y_val), validation_steps=1, shuffle=True, verbose=0)
    held_out = model.evaluate(x_val, data.y_val, batch_size=256, verbose=0, return_dict=True)
    return {"epoch_records": records, "val_accuracy": held_out["accuracy"], "params": model.count_params()}


def engine_trial(spec: dict, data) -> dict:
    from engine.config import DatasetConfig, preset
    from engine.training import SpeedSettings

    config = preset("Paper Table 1")
    config.name = "bench"
    config.dataset = DatasetConfig(source="folder", path=spec["data"], validation_split=0.1)
    t = config.training
    t.epochs, t.steps_per_epoch, t.seed = spec["epochs"], spec["steps"], spec["seed"]
    t.steps_per_execution = 0  # automatic: SpeedSettings.auto_steps_per_execution decides
    t.precision = spec.get("precision", "float32")
    records = time_epochs()
    trainer, result = run_trainer(config, data, speed=SpeedSettings(**spec.get("speed", {})))
    return {"epoch_records": records, "val_accuracy": result.test_metrics["accuracy"],
            "params": trainer.model.count_params()}


def trial(spec: dict) -> None:
    data = load_images(spec["data"])
    report((plain_trial if spec["side"] == "plain" else engine_trial)(spec, data))


def lever_sides(wanted: str) -> dict[str, dict]:
    """The engine with one lever changed per side, those whose name contains
    one of the comma-separated `wanted` (all when empty)."""
    from engine.system import SPINNING_ENV
    from engine.training import SpeedSettings

    sides = {}
    for field in dataclasses.fields(SpeedSettings):
        default = field.default
        changed = (not default) if isinstance(default, bool) else True if default == "auto" else 1
        sides[f"engine, {field.name}={changed}"] = {"speed": {field.name: changed}}
    sides[f"engine, {SPINNING_ENV}=on"] = {"env": {SPINNING_ENV: "on"}}
    sides["engine, mixed_bfloat16 (not the same math)"] = {"precision": "mixed_bfloat16"}
    chosen = [w.strip().lower() for w in wanted.split(",") if w.strip()]
    return {name: {"side": "engine", **spec} for name, spec in sides.items()
            if not chosen or any(w in name.lower() for w in chosen)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_argument(parser)
    parser.add_argument("--rounds", type=int, default=8, help="epochs per side after the first")
    parser.add_argument("--steps", type=int, default=550, help="steps per epoch (Paper Table 1: 550; 0: every image)")
    parser.add_argument("--levers", nargs="?", const="", metavar="NAMES",
                        help="also the engine with one lever changed per side (comma-separated parts of names)")
    args = parse(parser, trial)
    if args is None:
        return
    folder = find_images(args.data)
    print("reading (and caching) the images once ...", flush=True)
    data = load_images(folder)
    print(f"{len(data.y_train)} training and {len(data.y_val)} held-out images", flush=True)
    base = {"data": folder, "steps": args.steps, "seed": 0}
    sides = {"plain": {"side": "plain"}, "engine": {"side": "engine"}}
    if args.levers is not None:
        sides.update(lever_sides(args.levers))
    reference = "plain" if args.levers is None else "engine"  # a lever against the engine without it
    results = compare(__file__, {name: {**base, **spec} for name, spec in sides.items()}, args.rounds, reference,
                      f"SimCNN, batch {BATCH}, SGD lr {LEARNING_RATE}, {args.steps or 'all'} steps per epoch",
                      {"held-out acc": lambda result: result["val_accuracy"]})
    params = {result["params"] for result in results.values()}
    print(f"parameters: {', '.join(str(p) for p in sorted(params))} (the same model on every side)")


if __name__ == "__main__":
    main()
