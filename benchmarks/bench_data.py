"""How fast engine.data reads an image folder, against a plain Pillow loop.

Usage: python benchmarks/bench_data.py [FOLDER] [--repeat N]

FOLDER defaults to /tmp/cifar10-jpg/train (the 50,000 CIFAR-10 training
JPEGs); make it with
    tar xzf ../shared/data/cifar10-jpg-train.tar.gz -C /tmp
In one run it times (a) a plain Pillow loop over every image, (b) the first
load_dataset (empty cache), (c) the second (from the cache), (d) a read
after one file was touched (must re-read), and (e) a first read with worker
processes turned off, and prints each with its ratio to (a). With
--repeat N each row is the best of N runs (for a busy machine). The cache
goes to a temporary folder; the touched file gets its old mtime back.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from engine import data  # noqa: E402
from engine.config import DatasetConfig  # noqa: E402

DEFAULT_FOLDER = "/tmp/cifar10-jpg/train"
TAR_HINT = "tar xzf ../shared/data/cifar10-jpg-train.tar.gz -C /tmp"


def image_paths(folder: str) -> list[str]:
    paths = []
    for directory, subfolders, files in os.walk(folder):
        subfolders.sort()
        paths.extend(os.path.join(directory, name) for name in sorted(files))
    return paths


def plain_pillow_loop(folder: str) -> np.ndarray:
    """The baseline: what a notebook does."""
    return np.stack([np.asarray(Image.open(path).convert("RGB")) for path in image_paths(folder)])


def timed(function, repeat: int = 1, before=None):
    """Best of `repeat` runs; `before` runs untimed ahead of each."""
    best, result = float("inf"), None
    for _ in range(repeat):
        if before is not None:
            before()
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", help=f"image folder (default {DEFAULT_FOLDER})")
    parser.add_argument("--repeat", type=int, default=1, help="best of N runs per row")
    args = parser.parse_args()
    folder = os.path.abspath(args.folder or DEFAULT_FOLDER)
    print(f"Image folder: {folder}" + ("" if args.folder else " (default; pass a folder to use another)"))
    if not os.path.isdir(folder):
        print(f"Not found. Unpack the CIFAR-10 JPEGs first, from the repository root:\n    {TAR_HINT}")
        return 1
    cache = tempfile.mkdtemp(prefix="bench-data-cache-")
    os.environ["CIFAR_STUDIO_CACHE_DIR"] = cache
    cfg = DatasetConfig(source="folder", path=folder, image_size=32, validation_split=0.1)
    try:
        paths = image_paths(folder)
        for path in paths:  # warm the page cache so no row pays for the disk
            with open(path, "rb") as f:
                f.read()
        print(f"{len(paths)} files, {data._worker_count(len(paths))} decode worker processes, "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the start\n")

        def clear_cache():
            shutil.rmtree(os.path.join(cache, "datasets"), ignore_errors=True)

        touched = paths[len(paths) // 2]
        original = os.stat(touched)
        bumps = iter(range(1, 1000))

        def touch():
            os.utime(touched, ns=(original.st_atime_ns, original.st_mtime_ns + next(bumps) * 1_000_000_000))

        load = data.load_dataset
        repeat = args.repeat
        rows = []
        plain_seconds, plain = timed(lambda: plain_pillow_loop(folder), repeat)
        rows.append(("(a) plain Pillow loop", plain_seconds, plain.shape))
        seconds, first = timed(lambda: load(cfg), repeat, before=clear_cache)
        rows.append(("(b) load_dataset, first read", seconds, first.x_train.shape))
        seconds, second = timed(lambda: load(cfg), repeat)
        rows.append(("(c) load_dataset, from the cache", seconds, second.x_train.shape))
        assert np.array_equal(first.x_train, second.x_train)
        try:
            seconds, third = timed(lambda: load(cfg), repeat, before=touch)
        finally:
            os.utime(touched, ns=(original.st_atime_ns, original.st_mtime_ns))
        rows.append(("(d) after touching one file", seconds, third.x_train.shape))
        data.MAX_WORKERS = 0
        seconds, single = timed(lambda: load(cfg), repeat, before=clear_cache)
        rows.append(("(e) first read, no worker processes", seconds, single.x_train.shape))
    finally:
        shutil.rmtree(cache, ignore_errors=True)

    print(f"{'step':38} {'seconds':>8} {'vs (a)':>8}  x_train   (best of {args.repeat}, "
          f"load average {os.getloadavg()[0]:.1f} at the end)")
    for name, seconds, shape in rows:
        print(f"{name:38} {seconds:8.2f} {seconds / plain_seconds:7.2f}x  {shape}")
    print("\nvs (a) below 1 means faster than the plain loop. (b)-(e) include listing the folder,")
    print("the fingerprint, writing the cache and the 10% stratified validation split.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
