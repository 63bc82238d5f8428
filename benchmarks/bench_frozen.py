"""Transfer learning with a frozen base: the engine (features computed once) against plain Keras `fit`.

Usage:
    python benchmarks/bench_frozen.py [--data FOLDER] [--case vgg16,resnet50,finetune,breakeven]
        [--vgg-per-class 270] [--resnet-per-class 30] [--resnet-estimate-epochs 2]

Whole runs, each side in a fresh process timed from its start to its end
(imports, reading the cached images, building, training, the test
evaluation). "plain" is what a notebook does: the same model
(engine.models.build_model, preprocessing inside it) compiled with the same
optimizer and `model.fit(x, y, batch_size, epochs, validation_data)`, then
`model.evaluate` on the test images. "engine" is the Trainer with the
preset and an empty feature cache (it computes the features); "engine,
cached" is a second run on a warm cache.

Cases: `vgg16`: the second seed's frozen VGG16 (linear head, batch 64, Adam
1e-3, 10 epochs, 32x32; weights none: no internet here) on 300 images a
class of the CIFAR-10 JPEGs (2,700 training with 10% held out, and a test
folder of 50 a class). `breakeven`: the same at 1 and 2 epochs.
`resnet50`: the "ResNet50 frozen base" preset (224x224, 30 epochs, SGD
0.005, batch 64), plain Keras estimated from `--resnet-estimate-epochs`
epochs: its whole process time plus (30 - that many) times its last
epoch's time. `finetune`: the "VGG16 fine-tune" preset (last 10 layers
trainable, float16 features up to block3_conv3), the engine with and
without the cache, 2 epochs (without it the engine is plain Keras' time, as
the `vgg16` case shows). Figures: docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import add_data_argument, find_images, parse, report, table, machine, time_epochs  # noqa: E402

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def subset_folder(source: str, per_class: int, test_per_class: int) -> str:
    """train/ and test/ folders of links to the first images of each class (made once)."""
    root = os.path.join(tempfile.gettempdir(), f"bench-frozen-{per_class}-{test_per_class}")
    if os.path.isdir(root):
        return root
    staging = tempfile.mkdtemp(dir=tempfile.gettempdir())
    for name in CLASSES:
        files = sorted(os.listdir(os.path.join(source, name)))[:per_class + test_per_class]
        for split, chosen in (("train", files[:per_class]), ("test", files[per_class:])):
            folder = os.path.join(staging, split, name)
            os.makedirs(folder)
            for file in chosen:
                os.symlink(os.path.join(source, name, file), os.path.join(folder, file))
    os.replace(staging, root)
    return root


def run_config(spec: dict):
    from engine.config import DatasetConfig, preset

    config = preset(spec["preset"], spec["architecture"])
    config.name = "bench"
    config.dataset = DatasetConfig(source="folder", path=spec["data"], validation_split=0.1)
    config.model.weights = "none"
    config.training.epochs = spec["epochs"]
    return config


def plain_trial(spec: dict) -> dict:
    import keras

    from engine.datasets import load_dataset
    from engine.models import build_model

    config = run_config(spec)
    data = load_dataset(config.dataset)
    t = config.training
    keras.utils.set_random_seed(t.seed)
    model = build_model(config.model, data.image_shape, data.num_classes)
    optimizer = (keras.optimizers.Adam(t.learning_rate) if t.optimizer == "adam"
                 else keras.optimizers.SGD(t.learning_rate, momentum=t.momentum))
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    records = time_epochs()
    model.fit(data.x_train, data.y_train, batch_size=t.batch_size, epochs=t.epochs,
              validation_data=(data.x_val, data.y_val), verbose=0)
    began = time.perf_counter()
    test = model.evaluate(data.x_test, data.y_test, batch_size=256, verbose=0, return_dict=True)
    return {"test_accuracy": test["accuracy"], "epochs": [r["wall"] for r in records],
            "evaluate_s": time.perf_counter() - began}


def engine_trial(spec: dict) -> dict:
    from engine.events import Listener
    from engine.runs import RunStore
    from engine.training import SpeedSettings, Trainer

    lines = []

    class Log(Listener):
        def on_log(self, text):
            lines.append(text)

    config = run_config(spec)
    with tempfile.TemporaryDirectory() as folder:
        trainer = Trainer(config, Log(), RunStore(folder), speed=SpeedSettings(frozen_features=spec["features"]))
        result = trainer.run()
    if result.status != "finished":
        raise SystemExit(f"run {result.status}: {result.reason}")
    use = trainer.features
    return {"test_accuracy": result.test_metrics["accuracy"], "log": lines,
            "feature_seconds": use.seconds if use else None}


def trial(spec: dict) -> None:
    report(plain_trial(spec) if spec["side"] == "plain" else engine_trial(spec))


def whole_process(spec: dict, cache: str) -> tuple[float, dict]:
    """Start the trial in a fresh Python and time it from start to end."""
    from common import Trial

    os.environ["CIFAR_STUDIO_CACHE_DIR"] = cache
    began = time.perf_counter()
    result = Trial(__file__, spec).finish()
    return time.perf_counter() - began, result


def compare_runs(title: str, sides: dict[str, dict], data_cache: str, estimate_from: int = 0,
                 planned_epochs: int = 0) -> dict:
    """Each side once, in order, against the first; a side named "engine, cached" runs on the
    previous engine side's feature cache, the others on a fresh one (the
    decoded images come from `data_cache` on every side)."""
    rows, seconds, results = [], {}, {}
    cache = None
    for name, spec in sides.items():
        if not name.endswith("cached"):
            cache = tempfile.mkdtemp(prefix="bench-frozen-cache-")
            os.symlink(os.path.join(data_cache, "datasets"), os.path.join(cache, "datasets"))
        wall, result = whole_process(spec, cache)
        if estimate_from and spec["side"] == "plain":
            result["measured_s"] = wall
            wall += (planned_epochs - estimate_from) * result["epochs"][-1]
        seconds[name], results[name] = wall, result
        print(f"  {name}: {wall:.1f} s, test accuracy {result['test_accuracy']:.4f}", flush=True)
    reference = seconds[next(iter(sides))]
    for name, wall in seconds.items():
        result = results[name]
        epochs = result.get("epochs")
        rows.append([name, wall, wall / reference, result["test_accuracy"],
                     f"{epochs[-1]:.1f}" if epochs else "-",
                     f"{result['feature_seconds']:.1f}" if result.get("feature_seconds") else "-"])
    print(f"\n{title}, whole processes, {machine()}")
    print(table(rows, ["side", "seconds", f"/ {next(iter(sides))}", "test acc", "plain epoch s", "feature pass s"]))
    for name, result in results.items():
        for line in result.get("log", []):
            if "frozen base" in line:
                print(f"  {name}: {line}")
    return results


def prepare_cache(data: str) -> str:
    """Decode the folder once into a data cache every side then reads."""
    from engine.config import DatasetConfig
    from engine.datasets import load_dataset

    cache = tempfile.mkdtemp(prefix="bench-frozen-data-")
    os.environ["CIFAR_STUDIO_CACHE_DIR"] = cache
    dataset = load_dataset(DatasetConfig(source="folder", path=data, validation_split=0.1))
    print(f"{data}: {len(dataset.y_train)} training, {len(dataset.y_val)} validation, {len(dataset.y_test)} test "
          "images", flush=True)
    return cache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_argument(parser)
    parser.add_argument("--case", default="vgg16,breakeven,finetune,resnet50")
    parser.add_argument("--vgg-per-class", type=int, default=270)
    parser.add_argument("--resnet-per-class", type=int, default=30)
    parser.add_argument("--resnet-estimate-epochs", type=int, default=2)
    args = parse(parser, trial)
    if args is None:
        return
    source = find_images(args.data)
    cases = args.case.split(",")
    vgg = {"preset": "Seed 2 (Adam)", "architecture": "vgg16"}
    if any(case in cases for case in ("vgg16", "breakeven", "finetune")):
        data = subset_folder(source, args.vgg_per_class, 50)
        cache = prepare_cache(data)
        vgg["data"] = data
    if "vgg16" in cases:
        compare_runs("Frozen VGG16, linear head, batch 64, Adam, 10 epochs, 32x32", {
            "plain": {**vgg, "side": "plain", "epochs": 10},
            "engine": {**vgg, "side": "engine", "features": True, "epochs": 10},
            "engine, cached": {**vgg, "side": "engine", "features": True, "epochs": 10},
            "engine, no feature cache": {**vgg, "side": "engine", "features": False, "epochs": 10},
        }, cache)
    if "breakeven" in cases:
        for epochs in (1, 2):
            compare_runs(f"Frozen VGG16 as above, {epochs} epoch(s)", {
                "plain": {**vgg, "side": "plain", "epochs": epochs},
                "engine": {**vgg, "side": "engine", "features": True, "epochs": epochs},
            }, cache)
    if "finetune" in cases:
        tune = {**vgg, "preset": "VGG16 fine-tune", "epochs": 2}
        compare_runs("VGG16 fine-tune (last 10 layers, Dense 256 head), batch 64, Adam 1e-4, 2 epochs, 32x32", {
            "engine": {**tune, "side": "engine", "features": True},
            "engine, no feature cache": {**tune, "side": "engine", "features": False},
        }, cache)
    if "resnet50" in cases:
        data = subset_folder(source, args.resnet_per_class, 10)
        cache = prepare_cache(data)
        resnet = {"preset": "ResNet50 frozen base", "architecture": "resnet50", "data": data}
        estimate = args.resnet_estimate_epochs
        compare_runs(f"ResNet50 frozen base at 224x224, 30 epochs (plain: {estimate} epochs measured, the rest "
                     "estimated from its last epoch)", {
                         "plain": {**resnet, "side": "plain", "epochs": estimate},
                         "engine": {**resnet, "side": "engine", "features": True, "epochs": 30},
                     }, cache, estimate_from=estimate, planned_epochs=30)


if __name__ == "__main__":
    main()
