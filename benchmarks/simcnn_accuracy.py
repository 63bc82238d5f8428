"""SimCNN's validation accuracy from runs already trained, read back by plain Keras.

For each run: the saved (final) model.h5 opened with keras.saving.load_model,
its accuracy on the run's own validation split (rebuilt from the run's
dataset settings, so the same images), without and with test-time flip
averaging (the mean of the softmax of the image and of its mirror image),
the training time, and the best validation accuracy of its history.

    main.py train --preset "SimCNN best" --data FOLDER --set training.seed=42   # and 43
    .venv/bin/python benchmarks/simcnn_accuracy.py RUN RUN [--store STORE]

Tune on the validation split only: the test split stays held out.
"""

from __future__ import annotations

import argparse
import json
import statistics

import common  # noqa: F401  (puts the repository on sys.path)
import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--store", help="the run store (default: $CIFAR_STUDIO_HOME or the user data folder)")
    args = parser.parse_args()

    import keras

    from engine.datasets import load_dataset
    from engine.runs import RunStore

    store = RunStore(args.store)
    rows, cache = [], {}
    for run in args.runs:
        record = store.get(run)
        config = store.config(record.run_id)
        key = json.dumps(config.to_dict()["dataset"], sort_keys=True)
        if key not in cache:
            cache[key] = load_dataset(config.dataset)
        data = cache[key]
        model = keras.saving.load_model(store.model_path(record.run_id), compile=False)
        plain = model.predict(data.x_val, batch_size=500, verbose=0)
        mirrored = model.predict(data.x_val[:, :, ::-1], batch_size=500, verbose=0)
        history, _ = store.read_history(record.run_id)
        best = max(history.get("val_accuracy") or [float("nan")])
        rows.append({
            "run": record.run_id, "name": record.name, "seed": config.training.seed,
            "epochs": record.epochs_done, "train_seconds": record.train_seconds,
            "val_images": len(data.y_val),
            "val_accuracy": float(np.mean(plain.argmax(1) == data.y_val)),
            "val_accuracy_flip_averaged": float(np.mean((plain + mirrored).argmax(1) == data.y_val)),
            "best_val_accuracy_in_history": best,
        })
    print(f"{'run':24} {'seed':>4} {'epochs':>6} {'train s':>8} {'val acc':>8} {'+ flip':>8} {'best epoch':>10}")
    for row in rows:
        print(f"{row['run']:24} {row['seed']:>4} {row['epochs']:>6} {row['train_seconds']:>8.0f} "
              f"{row['val_accuracy']:>8.4f} {row['val_accuracy_flip_averaged']:>8.4f} "
              f"{row['best_val_accuracy_in_history']:>10.4f}")
    if len(rows) > 1:
        print(f"mean over {len(rows)} runs: val acc {statistics.mean(r['val_accuracy'] for r in rows):.4f}, "
              f"flip-averaged {statistics.mean(r['val_accuracy_flip_averaged'] for r in rows):.4f}, "
              f"training {statistics.mean(r['train_seconds'] for r in rows):.0f} s")
    print("RESULT " + json.dumps(rows))


if __name__ == "__main__":
    main()
