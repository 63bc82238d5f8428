"""Mixed precision against float32: ResNet50 transfer at 224x224, training images per second.

Usage:
    python benchmarks/bench_precision.py [--batch 64] [--steps 20] [--repeat 2] [--whole]
    KERAS_BACKEND=jax python benchmarks/bench_precision.py        # on a GPU: float32 against mixed_float16

The engine's Trainer with the "ResNet50-02" preset (the seeds' frozen base
and Dense 1024-512 head; --whole trains the whole base too) on generated
32x32 uint8 images, upsampled to 224x224 inside the model as the engine
always does. Weights "none": the same shapes and arithmetic as the ImageNet
weights, with nothing to download, so it runs on a machine without internet
(a lent GPU machine, say). Each precision trains in a fresh process (a dtype
policy is global) for two epochs of --steps batches; the first compiles or
traces the step, the second is timed (EpochEnded.epoch_seconds, so the
engine's own callbacks are included). The precisions alternate, --repeat
rounds. Reported: images per second, the ratio against float32, the backend
and the device that trained.

Default precisions: float32 and mixed_float16 where Keras finds a GPU;
float32 and mixed_bfloat16 on a CPU (bfloat16 pays off on CPUs with
AVX512_BF16 or AMX; elsewhere it may be slower).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import machine, median, report, run_in_subprocess, table  # noqa: E402

CLASSES = 10


def accelerator() -> str:
    """The GPU the backend sees, or "" (Keras trains on the CPU then)."""
    import keras

    backend = keras.backend.backend()
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            return gpus[0].name if gpus else ""
        if backend == "jax":
            import jax

            gpus = [d for d in jax.devices() if d.platform == "gpu"]
            return gpus[0].device_kind if gpus else ""
        if backend == "torch":
            import torch

            return torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""
    except Exception:  # a backend without GPU support says so in its own way
        return ""
    return ""


def trial(spec: dict) -> None:
    import keras
    import numpy as np

    from engine.config import preset
    from engine.data import Dataset
    from engine.events import Listener
    from engine.runs import RunStore
    from engine.training import Trainer

    count = spec["batch"] * spec["steps"]
    rng = np.random.default_rng(0)
    empty_x, empty_y = np.zeros((0, 32, 32, 3), np.uint8), np.zeros((0,), np.int64)
    data = Dataset(x_train=rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8),
                   y_train=rng.integers(0, CLASSES, count).astype(np.int64),
                   x_val=empty_x, y_val=empty_y, x_test=empty_x, y_test=empty_y,
                   class_names=[f"class {i}" for i in range(CLASSES)], description="generated")
    config = preset("ResNet50-02")
    config.name = "bench precision"
    config.model.weights = "none"
    config.model.trainable_layers = -1 if spec["whole"] else 0
    t = config.training
    t.epochs, t.batch_size, t.steps_per_epoch = 2, spec["batch"], spec["steps"]
    t.precision = spec["precision"]
    epochs: list[float] = []

    class Timing(Listener):
        def on_epoch_ended(self, event):
            epochs.append(event.epoch_seconds)

        def on_log(self, text):
            print(text, file=sys.stderr)

    with tempfile.TemporaryDirectory() as folder:
        result = Trainer(config, Timing(), RunStore(folder), dataset=data).run()
    if result.status != "finished":
        raise SystemExit(f"{spec['precision']} run {result.status}: {result.reason}")
    report({"epochs": epochs, "images_per_second": count / epochs[-1], "backend": keras.backend.backend(),
            "device": accelerator() or "CPU"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=64, help="batch size (the preset's: 64)")
    parser.add_argument("--steps", type=int, default=20, help="batches per epoch; the second epoch is timed")
    parser.add_argument("--repeat", type=int, default=2, help="rounds of every precision, alternated")
    parser.add_argument("--whole", action="store_true", help="train the whole base, not only the head")
    parser.add_argument("--precisions", help="comma-separated (default: float32 and the device's mixed one)")
    parser.add_argument("--trial", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.trial:
        trial(json.loads(args.trial))
        return
    # Without --precisions: float32, then the mixed policy for the device
    # float32 trained on (known after its first run).
    precisions = [p.strip() for p in (args.precisions or "float32").split(",") if p.strip()]
    results: dict[str, list[dict]] = {}
    for number in range(args.repeat):
        print(f"round {number + 1} of {args.repeat}", flush=True)
        for precision in precisions:  # the mixed one appended below runs in this round too
            spec = {"precision": precision, "batch": args.batch, "steps": args.steps, "whole": args.whole}
            result = run_in_subprocess(__file__, spec)
            results.setdefault(precision, []).append(result)
            print(f"  {precision}: epochs {', '.join(f'{s:.2f}' for s in result['epochs'])} s, "
                  f"{result['images_per_second']:.1f} images/s on {result['device']}", flush=True)
            if not args.precisions and len(precisions) == 1:
                precisions.append("mixed_bfloat16" if result["device"] == "CPU" else "mixed_float16")
    first = next(iter(results.values()))[0]
    reference = median(r["images_per_second"] for r in results[precisions[0]])
    rows = [[p, len(rs), median(r["images_per_second"] for r in rs), max(r["images_per_second"] for r in rs),
             median(r["images_per_second"] for r in rs) / reference] for p, rs in results.items()]
    base = "whole base trained" if args.whole else "base frozen (the preset)"
    print(f"\nResNet50 at 224x224, {base}, batch {args.batch}, {args.steps} timed steps, "
          f"backend {first['backend']}, device {first['device']}, {machine()}")
    print(table(rows, ["precision", "runs", "images/s", "best images/s", f"against {precisions[0]}"]))


if __name__ == "__main__":
    main()
