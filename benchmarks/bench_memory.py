"""Memory: ResNet50 transfer at 224x224 on the 50,000 images, without an
upsampled copy of the data.

Usage: python benchmarks/bench_memory.py [--data FOLDER] [--steps 3] [--subset 1000]

The engine keeps the images as uint8 at 32x32 (150 MB for 50,000) and
upsamples each batch inside the model (UpSampling2D(7)). Each measurement
runs in a fresh process and reports its peak resident memory
(getrusage's ru_maxrss, the kernel's own high-water mark):

- engine: the Trainer with the "ResNet50-02" preset (batch 64, SGD, base
  frozen as the seeds) for a few training steps on all 50,000 images;
- engine, fine-tuning: the same with the whole base trainable (batch 32),
  the worst case for activations kept for the backward pass;
- seeds: what upsampling the data to 224x224 in float32 before fit costs,
  measured on a subset and scaled to 50,000 images, next to the exact size
  of that array.

weights="none" (no download here): the same shapes and the same memory as
ImageNet weights. The final evaluation is on 64 held-out images so the
run ends quickly; every training image is in memory for the steps.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import find_images, load_images, machine, report, run_in_subprocess, table  # noqa: E402

GIB = 1024 ** 3
SIDE = 224


def size(nbytes: float) -> str:
    return f"{nbytes / GIB:.2f} GiB ({nbytes / 1e9:.2f} GB)"


def peak_rss_bytes() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def rss_bytes() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def engine_trial(spec: dict) -> dict:
    import numpy as np

    from engine.config import preset
    from engine.data import Dataset
    from engine.events import Listener
    from engine.runs import RunStore
    from engine.training import Trainer

    loaded = load_images(spec["data"], validation_split=0.0)
    held_out = 64
    data = Dataset(x_train=loaded.x_train, y_train=loaded.y_train, x_val=loaded.x_train[:held_out],
                   y_val=loaded.y_train[:held_out], x_test=np.zeros((0, 32, 32, 3), np.uint8),
                   y_test=np.zeros(0, np.int64), class_names=loaded.class_names, description="bench")
    del loaded
    after_data = rss_bytes()

    config = preset("ResNet50-02")
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

        def on_epoch_ended(self, event):
            samples.append(rss_bytes())

        def on_log(self, text):
            print(text, file=sys.stderr)

    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        started = time.monotonic()
        result = Trainer(config, Sampler(), RunStore(folder), dataset=data).run()
        seconds = time.monotonic() - started
    if result.status != "finished":
        raise SystemExit(f"run {result.status}: {result.reason}")
    return {"images": int(len(data.y_train)), "batch_size": t.batch_size, "steps": t.steps_per_epoch,
            "after_data": after_data, "during_training": max(samples) if samples else None,
            "peak": peak_rss_bytes(), "seconds": seconds}


def seeds_trial(spec: dict) -> dict:
    """The seeds' way: the whole array upsampled to 224 in float32 before fit."""
    import numpy as np

    loaded = load_images(spec["data"], validation_split=0.0)
    subset = loaded.x_train[:spec["subset"]].copy()
    total = len(loaded.y_train)
    del loaded
    before = rss_bytes()
    factor = SIDE // subset.shape[1]
    upsampled = np.repeat(np.repeat(subset.astype(np.float32), factor, axis=1), factor, axis=2)
    grown = rss_bytes() - before
    return {"subset": len(subset), "images": total, "array_bytes": int(upsampled.nbytes), "grown": grown,
            "exact_for_all": int(total * SIDE * SIDE * 3 * 4)}


def trial(spec: dict) -> None:
    report(seeds_trial(spec) if spec["kind"] == "seeds" else engine_trial(spec))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="folder of the 50,000 JPEGs (default: /tmp/cifar10-jpg/train)")
    parser.add_argument("--steps", type=int, default=3, help="training steps per engine measurement")
    parser.add_argument("--subset", type=int, default=1000, help="images upsampled for the seeds' measurement")
    parser.add_argument("--no-finetune", action="store_true", help="skip the fine-tuning measurement")
    parser.add_argument("--trial", help=argparse.SUPPRESS)
    args = parser.parse_args()
    try:
        import psutil  # noqa: F401
    except ImportError:
        sys.exit("this benchmark reads memory with psutil: .venv/bin/pip install -e \".[bench]\"")
    if args.trial:
        trial(json.loads(args.trial))
        return
    folder = find_images(args.data)
    load_images(folder, validation_split=0.0)  # fill the cache outside the measurements
    base = {"data": folder, "steps": args.steps, "subset": args.subset}

    rows = []
    seeds = run_in_subprocess(__file__, {**base, "kind": "seeds"})
    scaled = seeds["grown"] / seeds["subset"] * seeds["images"]
    rows.append([f"seeds: x upsampled to {SIDE} in float32 (exact size)", "-",
                 size(seeds["exact_for_all"]), "(the array alone)"])
    rows.append([f"seeds: measured on {seeds['subset']} images, scaled to {seeds['images']}", "-",
                 size(scaled), "(the array alone)"])
    runs = [("engine: ResNet50-02 preset (frozen base, batch 64)", {}),
            ("engine: whole base trainable (batch 32)", {"trainable_layers": -1, "batch_size": 32})]
    if args.no_finetune:
        runs = runs[:1]
    for name, extra in runs:
        print(f"measuring {name} ...", flush=True)
        result = run_in_subprocess(__file__, {**base, "kind": "engine", **extra})
        rows.append([name, size(result["after_data"]), size(result["peak"]),
                     f"{size(result['during_training'])} during the steps, {result['steps']} steps, "
                     f"{result['seconds']:.0f} s"])
    print(f"\nResNet50 transfer at {SIDE}x{SIDE}, {seeds['images']} training images, {machine()}")
    print(table(rows, ["approach", "RSS with the data loaded", "peak RSS", "notes"]))


if __name__ == "__main__":
    main()
