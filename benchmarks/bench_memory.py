"""Memory: ResNet50 transfer at 224x224 on the 50,000 images, without an
upsampled copy of the data.

Usage: python benchmarks/bench_memory.py [--data FOLDER] [--steps 3] [--no-finetune]

The engine keeps the images as uint8 at 32x32 and upsamples each batch
inside the model, where the seeds upsampled the whole array to 224x224 in
float32 before `fit`. Each measurement runs in a fresh process and reports
its peak resident memory (getrusage's ru_maxrss, the kernel's own
high-water mark):

- engine: the Trainer with the "ResNet50-02" preset, base frozen, for a
  few training steps on every training image (the final evaluation on 64 images, so
  the run ends quickly);
- engine, fine-tuning: the same with the whole base trainable at batch 32,
  the worst case for activations kept for the backward pass;
- seeds: the size of the upsampled float32 array alone.

weights="none" (no download): the same shapes and memory as ImageNet's.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (add_data_argument, arrays_dataset, find_images, load_images, machine, parse,  # noqa: E402
                    report, run_in_subprocess, run_trainer, table)

GIB = 1024 ** 3
SIDE = 224


def size(nbytes: float) -> str:
    return f"{nbytes / GIB:.2f} GiB ({nbytes / 1e9:.2f} GB)"


def rss_bytes() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def trial(spec: dict) -> None:
    import resource
    import time

    from engine.config import preset
    from engine.events import Listener

    loaded = load_images(spec["data"], validation_split=0.0)
    data = arrays_dataset(loaded.x_train, loaded.y_train, loaded.x_train[:64], loaded.y_train[:64],
                          loaded.class_names)
    del loaded
    after_data = rss_bytes()
    config = preset("ResNet50-02", "resnet50")
    config.name = "memory"
    config.model.weights = "none"
    config.model.trainable_layers = spec.get("trainable_layers", 0)
    t = config.training
    t.epochs, t.steps_per_epoch, t.validation_steps = 1, spec["steps"], 1
    t.batch_size = spec.get("batch_size", t.batch_size)
    samples = []

    class Sampler(Listener):
        def on_progress(self, event):
            samples.append(rss_bytes())

        on_epoch_ended = on_progress

    started = time.monotonic()
    run_trainer(config, data, Sampler())
    report({"steps": t.steps_per_epoch, "after_data": after_data, "during_training": max(samples, default=0),
            "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,  # Linux reports KiB
            "seconds": time.monotonic() - started})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_argument(parser)
    parser.add_argument("--steps", type=int, default=3, help="training steps per engine measurement")
    parser.add_argument("--no-finetune", action="store_true", help="skip the fine-tuning measurement")
    try:
        import psutil  # noqa: F401
    except ImportError:
        sys.exit("this benchmark reads memory with psutil: pip install -e \".[bench]\"")
    args = parse(parser, trial)
    if args is None:
        return
    folder = find_images(args.data)
    images = len(load_images(folder, validation_split=0.0).y_train)  # and fill the cache outside the measurements
    rows = [[f"seeds: x upsampled to {SIDE} in float32", "-", size(images * SIDE * SIDE * 3 * 4), "the array alone"]]
    runs = [("engine: ResNet50-02 preset, base frozen (batch 64)", {}),
            ("engine: whole base trainable (batch 32)", {"trainable_layers": -1, "batch_size": 32})]
    for name, extra in runs[:1] if args.no_finetune else runs:
        print(f"measuring {name} ...", flush=True)
        result = run_in_subprocess(__file__, {"data": folder, "steps": args.steps, **extra})
        rows.append([name, size(result["after_data"]), size(result["peak"]),
                     f"{size(result['during_training'])} during the steps, {result['steps']} steps, "
                     f"{result['seconds']:.0f} s"])
    print(f"\nResNet50 transfer at {SIDE}x{SIDE}, {images} training images, {machine()}")
    print(table(rows, ["approach", "RSS with the data loaded", "peak RSS", "notes"]))


if __name__ == "__main__":
    main()
