"""How fast engine.data reads an image folder, against a plain Pillow loop.

Usage: python benchmarks/bench_data.py [FOLDER] [--repeat N]

FOLDER defaults to /tmp/cifar10-jpg/train (the 50,000 CIFAR-10 training
JPEGs); make it with
    tar xzf ../shared/data/cifar10-jpg-train.tar.gz -C /tmp
In one run it times (a) a plain Pillow loop over every image, (b) the first
load_dataset (empty cache), (c) the second (from the cache), (d) a read
after one file was touched (must re-read), and (e) a first read with worker
processes turned off, and prints each with its ratio to (a), in wall and
CPU seconds. With --repeat N all steps run N rounds and each row shows its
best (for a busy machine). The cache goes to a temporary folder; the
touched file gets its old mtime back at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

try:
    import resource
except ImportError:  # Windows: CPU time of this process only
    resource = None

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


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the decode workers)."""
    own = time.process_time()
    if resource is None:
        return own
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own + children.ru_utime + children.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", help=f"image folder (default {DEFAULT_FOLDER})")
    parser.add_argument("--repeat", type=int, default=1, help="rounds; each row shows its best round")
    args = parser.parse_args()
    folder = os.path.abspath(args.folder or DEFAULT_FOLDER)
    print(f"Image folder: {folder}" + ("" if args.folder else " (default; pass a folder to use another)"))
    if not os.path.isdir(folder):
        print(f"Not found. Unpack the CIFAR-10 JPEGs first, from the repository root:\n    {TAR_HINT}")
        return 1
    cache = tempfile.mkdtemp(prefix="bench-data-cache-")
    os.environ["CIFAR_STUDIO_CACHE_DIR"] = cache
    cfg = DatasetConfig(source="folder", path=folder, image_size=32, validation_split=0.1)
    paths = image_paths(folder)
    touched = paths[len(paths) // 2]
    original = os.stat(touched)
    workers = data._worker_count(len(paths))

    def clear_cache():
        shutil.rmtree(os.path.join(cache, "datasets"), ignore_errors=True)

    def touch_one_file():
        os.utime(touched, ns=(original.st_atime_ns, time.time_ns()))

    def single_process():
        data.MAX_WORKERS = 0
        try:
            return data.load_dataset(cfg)
        finally:
            data.MAX_WORKERS = default_workers

    default_workers = data.MAX_WORKERS
    steps = [
        ("(a) plain Pillow loop", None, lambda: plain_pillow_loop(folder)),
        ("(b) load_dataset, first read", clear_cache, lambda: data.load_dataset(cfg).x_train),
        ("(c) load_dataset, from the cache", None, lambda: data.load_dataset(cfg).x_train),
        ("(d) after touching one file", touch_one_file, lambda: data.load_dataset(cfg).x_train),
        ("(e) first read, no worker processes", clear_cache, lambda: single_process().x_train),
    ]
    best = {name: (float("inf"), 0.0, None) for name, _, _ in steps}
    try:
        for path in paths:  # warm the page cache so no step pays for the disk
            with open(path, "rb") as f:
                f.read()
        print(f"{len(paths)} files; {workers} decode worker processes on {os.cpu_count()} CPUs; "
              f"load average {os.getloadavg()[0]:.1f} at the start")
        for _ in range(args.repeat):  # rounds, so a busy spell hits every step alike
            for name, before, step in steps:
                if before is not None:
                    before()
                wall, cpu = time.perf_counter(), cpu_seconds()
                shape = step().shape
                wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
                if wall < best[name][0]:
                    best[name] = (wall, cpu, shape)
    finally:
        os.utime(touched, ns=(original.st_atime_ns, original.st_mtime_ns))
        shutil.rmtree(cache, ignore_errors=True)

    plain_wall, plain_cpu, _ = best[steps[0][0]]
    print(f"load average {os.getloadavg()[0]:.1f} at the end; best of {args.repeat} round(s)\n")
    print(f"{'step':38} {'seconds':>8} {'vs (a)':>7} {'CPU s':>7} {'vs (a)':>7}  shape")
    for name, (wall, cpu, shape) in best.items():
        print(f"{name:38} {wall:8.2f} {wall / plain_wall:6.2f}x {cpu:7.2f} {cpu / plain_cpu:6.2f}x  {shape}")
    print("\nBelow 1x is faster than the plain loop. (b)-(e) include listing the folder, the")
    print("fingerprint, writing the cache and the 10% stratified validation split (x_train is")
    print("the 90% left). CPU s adds the worker processes' time: the work done, whatever the load.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
