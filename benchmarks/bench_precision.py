"""Mixed precision against float32: ResNet50 transfer at 224x224, training images per second.

Usage:
    python benchmarks/bench_precision.py [--batch 64] [--steps 20] [--repeat 2] [--whole]
    KERAS_BACKEND=jax python benchmarks/bench_precision.py        # on a GPU: float32 against mixed_float16

The engine's Trainer with the "ResNet50-02" preset's settings and head, the
base frozen (--whole trains it too, as the seeds did), on generated 32x32
uint8 images upsampled to 224x224 inside the model. Weights "none": the
same shapes and arithmetic as ImageNet's with nothing to download, so it
runs on a machine without internet. Each precision trains in a fresh
process (a dtype policy is global) for two epochs of --steps batches; the
first compiles the step, the second is timed. The precisions alternate,
--repeat rounds. "mixed" is mixed_float16 on a GPU and mixed_bfloat16 on a
CPU (which pays off on CPUs with AVX512_BF16 or AMX; elsewhere it may be
slower).
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (arrays_dataset, machine, median, parse, report, run_in_subprocess, run_trainer,  # noqa: E402
                    table, time_epochs)

CLASSES = 10


def accelerator() -> str:
    """The GPU the backend trains on, or "CPU"."""
    import keras

    if keras.backend.backend() == "torch":  # Keras has no device list for PyTorch
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    device = keras.distribution.list_devices()[0]  # a GPU where there is one
    return "CPU" if "cpu" in device.lower() else device


def trial(spec: dict) -> None:
    import keras
    import numpy as np

    from engine.config import preset

    count = spec["batch"] * spec["steps"]
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, CLASSES, count).astype(np.int64)
    data = arrays_dataset(images, labels, images[:0], labels[:0], [f"class {i}" for i in range(CLASSES)])
    config = preset("ResNet50-02", "resnet50")
    config.name = "bench precision"
    config.model.weights = "none"
    config.model.trainable_layers = -1 if spec["whole"] else 0
    t = config.training
    t.epochs, t.batch_size, t.steps_per_epoch = 2, spec["batch"], spec["steps"]
    device = accelerator()
    t.precision = spec["precision"] if spec["precision"] != "mixed" else (
        "mixed_bfloat16" if device == "CPU" else "mixed_float16")
    records = time_epochs()
    run_trainer(config, data)
    report({"epoch_records": records, "images_per_second": count / records[-1]["wall"],
            "precision": t.precision, "backend": keras.backend.backend(), "device": device})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=64, help="batch size (the preset's: 64)")
    parser.add_argument("--steps", type=int, default=20, help="batches per epoch; the second epoch is timed")
    parser.add_argument("--repeat", type=int, default=2, help="rounds of every precision, alternated")
    parser.add_argument("--whole", action="store_true", help="train the whole base, not only the head")
    parser.add_argument("--precisions", default="float32,mixed",
                        help="comma-separated; mixed: mixed_float16 on a GPU, mixed_bfloat16 on a CPU")
    args = parse(parser, trial)
    if args is None:
        return
    results: dict[str, list[dict]] = {}
    for number in range(args.repeat):
        print(f"round {number + 1} of {args.repeat}", flush=True)
        for precision in args.precisions.split(","):
            spec = {"precision": precision.strip(), "batch": args.batch, "steps": args.steps, "whole": args.whole}
            result = run_in_subprocess(__file__, spec)
            results.setdefault(result["precision"], []).append(result)
            epochs = ", ".join(f"{e['wall']:.2f}" for e in result["epoch_records"])
            print(f"  {result['precision']}: epochs {epochs} s, {result['images_per_second']:.1f} images/s "
                  f"on {result['device']}", flush=True)
    reference_name, reference_runs = next(iter(results.items()))
    first, reference = reference_runs[0], median(r["images_per_second"] for r in reference_runs)
    rows = [[p, len(rs), median(r["images_per_second"] for r in rs), max(r["images_per_second"] for r in rs),
             median(r["images_per_second"] for r in rs) / reference] for p, rs in results.items()]
    base = "whole base trained" if args.whole else "base frozen"
    print(f"\nResNet50 at 224x224, {base}, batch {args.batch}, {args.steps} timed steps, "
          f"backend {first['backend']}, device {first['device']}, {machine()}")
    print(table(rows, ["precision", "runs", "images/s", "best images/s", f"against {reference_name}"]))


if __name__ == "__main__":
    main()
