"""Inference: images per second and the latency of one image, SimCNN on CPU.

Usage: python benchmarks/bench_inference.py [--data FOLDER] [--images 10000] [--rounds 3] [--repeats 300]

A SimCNN saved by the engine (.h5 with class names; random weights: the
speed does not depend on them) is opened with engine.inference.Classifier,
as the Classify tab and `main.py predict` do, and with plain
`keras.models.load_model`, as a notebook does. Measured:

- throughput on 10,000 real images (uint8 arrays, the size of CIFAR-10's
  test split), alternated over rounds: Classifier.predict_arrays, plain
  `model.predict(x)` at its default batch of 32 and at batch 256;
- the latency of one image from a loaded model (median of many calls):
  `model.predict`, `model.predict_on_batch` and the Classifier;
- the whole path from files: Classifier.classify on 1,000 JPEGs (decode,
  predict, top 3).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import add_data_argument, find_images, image_paths, load_images, machine, median, table  # noqa: E402


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


def seconds(function, images) -> float:
    started = time.perf_counter()
    function(images)
    return time.perf_counter() - started


def latency_ms(function, image, repeats: int) -> float:
    for _ in range(10):
        function(image)
    return median(seconds(function, image) for _ in range(repeats)) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_argument(parser)
    parser.add_argument("--images", type=int, default=10_000, help="images for the throughput measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternated rounds of the throughput measurement")
    parser.add_argument("--repeats", type=int, default=300, help="single-image calls per latency measurement")
    parser.add_argument("--files", type=int, default=1000, help="image files for the end-to-end measurement")
    args = parser.parse_args()
    folder = find_images(args.data)
    data = load_images(folder)
    images = data.x_train[:args.images]

    import keras

    from engine.inference import Classifier

    with tempfile.TemporaryDirectory() as scratch:
        path = saved_simcnn(scratch, data.class_names)
        classifier = Classifier(path)
        plain = keras.models.load_model(path)
        throughput = {
            "engine Classifier.predict_arrays": classifier.predict_arrays,
            "plain model.predict(x) (batch 32)": lambda x: plain.predict(x.astype("float32"), verbose=0),
            "plain model.predict(x, batch_size=256)": lambda x: plain.predict(x.astype("float32"), batch_size=256,
                                                                             verbose=0),
        }
        for function in throughput.values():
            function(images[:512])  # trace and warm up
        timings: dict[str, list[float]] = {name: [] for name in throughput}
        for _ in range(args.rounds):
            for name, function in throughput.items():
                timings[name].append(seconds(function, images))
        reference = len(images) / median(timings["plain model.predict(x) (batch 32)"])
        rows = []
        for name, values in timings.items():
            rate = len(images) / median(values)
            rows.append([name, f"{rate:,.0f}", f"{rate / reference:.2f}"])
        print(f"\nThroughput, {len(images)} images of 32x32, median of {args.rounds} alternated rounds, {machine()}")
        print(table(rows, ["path", "images/s", "vs plain predict"]))

        one = images[:1]
        one_float = one.astype("float32")
        single = {
            "plain model.predict(image)": lambda x: plain.predict(x, verbose=0),
            "plain model.predict_on_batch(image)": plain.predict_on_batch,
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

        paths = image_paths(folder)
        files = paths[::max(1, len(paths) // args.files)][:args.files]  # from every class
        classifier.classify(files[:32])
        started = time.perf_counter()
        results = classifier.classify(files, top_k=3)
        elapsed = time.perf_counter() - started
        assert all(not r.error for r in results)
        print(f"\nClassifier.classify on {len(files)} image files (decode + predict + top 3): "
              f"{len(files) / elapsed:,.0f} images/s")


if __name__ == "__main__":
    main()
