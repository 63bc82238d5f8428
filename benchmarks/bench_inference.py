"""Inference: images per second and the latency of one image, SimCNN on CPU.

Usage: python benchmarks/bench_inference.py [--data FOLDER] [--images 10000] [--rounds 3] [--repeats 300]

A SimCNN saved by the engine (.h5 with class names; random weights: the
speed does not depend on them) is opened with engine.inference.Classifier
and with plain `keras.models.load_model`. Then, alternated over rounds:

- throughput on 10,000 real images (uint8 arrays, the size of CIFAR-10's
  test split): the engine's Classifier.predict_arrays, plain
  `model.predict(x)` as a notebook calls it (batch 32), plain predict at
  batch 256, and the FastPredictor in chunks of 256;
- the latency of one image from a loaded model (median of many calls):
  `model.predict`, `model.predict_on_batch`, calling the model eagerly,
  and engine.fastpaths.FastPredictor (one compiled function);
- the whole path from files: Classifier.classify on 1,000 JPEGs (decode,
  predict, top 3).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import find_images, load_images, machine, table  # noqa: E402


def saved_simcnn(folder: str, class_names: list[str]) -> str:
    import keras

    from engine import models
    from engine.config import ModelConfig
    from engine.inference import write_class_names

    keras.utils.set_random_seed(0)
    model = models.build_model(ModelConfig(architecture="simcnn"), (32, 32, 3), len(class_names))
    path = os.path.join(folder, "simcnn.h5")
    model.save(path)
    write_class_names(path, class_names)
    return path


def images_per_second(function, images, rounds_seconds: list[float]) -> None:
    started = time.perf_counter()
    function(images)
    rounds_seconds.append(time.perf_counter() - started)


def latency_ms(function, image, repeats: int) -> float:
    for _ in range(10):
        function(image)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function(image)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def image_files(folder: str, count: int) -> list[str]:
    classes = sorted(os.listdir(folder))
    per_class = -(-count // len(classes))
    files = []
    for name in classes:
        entries = sorted(os.listdir(os.path.join(folder, name)))[:per_class]
        files.extend(os.path.join(folder, name, entry) for entry in entries)
    return files[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="folder of the 50,000 JPEGs (default: /tmp/cifar10-jpg/train)")
    parser.add_argument("--images", type=int, default=10_000, help="images for the throughput measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternated rounds of the throughput measurement")
    parser.add_argument("--repeats", type=int, default=300, help="single-image calls per latency measurement")
    parser.add_argument("--files", type=int, default=1000, help="JPEG files for the end-to-end measurement")
    args = parser.parse_args()
    folder = find_images(args.data)
    data = load_images(folder)
    images = data.x_train[:args.images]

    import keras
    import numpy as np

    from engine.fastpaths import FastPredictor
    from engine.inference import Classifier

    with tempfile.TemporaryDirectory() as scratch:
        path = saved_simcnn(scratch, data.class_names)
        classifier = Classifier(path)
        plain = keras.models.load_model(path)
        fast = FastPredictor(plain)

        def fast_in_chunks(x, size=256):
            return np.concatenate([fast(x[i:i + size]) for i in range(0, len(x), size)])

        throughput = {
            "engine Classifier.predict_arrays (batch 256)": classifier.predict_arrays,
            "plain model.predict(x) (batch 32)": lambda x: plain.predict(x.astype("float32"), verbose=0),
            "plain model.predict(x, batch_size=256)": lambda x: plain.predict(x.astype("float32"), batch_size=256,
                                                                             verbose=0),
            "FastPredictor, chunks of 256": fast_in_chunks,
        }
        for function in throughput.values():
            function(images[:512])  # trace and warm up
        seconds: dict[str, list[float]] = {name: [] for name in throughput}
        for _ in range(args.rounds):
            for name, function in throughput.items():
                images_per_second(function, images, seconds[name])
        reference = len(images) / statistics.median(seconds["plain model.predict(x) (batch 32)"])
        rows = []
        for name, values in seconds.items():
            rate = len(images) / statistics.median(values)
            rows.append([name, f"{rate:,.0f}", f"{rate / reference:.2f}"])
        print(f"\nThroughput, {len(images)} images of 32x32, median of {args.rounds} alternated rounds, {machine()}")
        print(table(rows, ["path", "images/s", "vs plain predict"]))

        one = images[:1]
        one_float = one.astype("float32")
        single = {
            "plain model.predict(image)": lambda x: plain.predict(x, verbose=0),
            "plain model.predict_on_batch(image)": plain.predict_on_batch,
            "model(image, training=False), eager": lambda x: plain(x, training=False),
            "engine.fastpaths.FastPredictor(image)": fast,
            "engine Classifier.predict_arrays(image)": lambda x: classifier.predict_arrays(one),
        }
        rows = []
        baseline = None
        for name, function in single.items():
            value = latency_ms(function, one_float, args.repeats)
            baseline = baseline or value
            rows.append([name, f"{value:.2f}", f"{baseline / value:.1f}x"])
        print(f"\nLatency of one image from a loaded model, median of {args.repeats} calls")
        print(table(rows, ["path", "ms", "faster than predict"]))

        files = image_files(folder, args.files)
        classifier.classify(files[:32])
        started = time.perf_counter()
        results = classifier.classify(files, top_k=3)
        elapsed = time.perf_counter() - started
        assert all(not r.error for r in results)
        print(f"\nClassifier.classify on {len(files)} JPEG files (decode + predict + top 3): "
              f"{len(files) / elapsed:,.0f} images/s")


if __name__ == "__main__":
    main()
