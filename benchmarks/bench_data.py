"""How fast the engine reads an image folder, against a plain Pillow loop.

Usage: python benchmarks/bench_data.py [--data FOLDER] [--repeat N]

In one run it times (a) a plain Pillow loop over every image, what a
notebook does, (b) the engine's first read (empty cache), (c) its second
(from the cache) and (d) a read after one file was touched (which must read
again), each with its ratio to (a) in wall and CPU seconds; CPU seconds
include the decode worker processes: the work done, whatever the load. The
engine's reads include listing the folder, the fingerprint, writing the
cache and the stratified 10% validation split. With --repeat N every step
runs N rounds, so a busy spell hits every step alike, and each row shows
its best. The cache goes to a temporary folder; the touched file gets its
old modification time back at the end.
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
except ImportError:  # Windows: this process's CPU time only
    resource = None

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import add_data_argument, find_images, image_paths, load_images, machine, table  # noqa: E402


def plain_pillow_loop(paths: list[str]):
    import numpy as np
    from PIL import Image

    return np.stack([np.asarray(Image.open(path).convert("RGB")) for path in paths])


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the decode workers)."""
    if resource is None:
        return time.process_time()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_argument(parser)
    parser.add_argument("--repeat", type=int, default=1, help="rounds; each row shows its best round")
    args = parser.parse_args()
    folder = os.path.abspath(find_images(args.data))
    cache = tempfile.mkdtemp(prefix="bench-data-cache-")
    os.environ["CIFAR_STUDIO_CACHE_DIR"] = cache
    paths = image_paths(folder)
    touched = paths[len(paths) // 2]
    original = os.stat(touched)

    def clear_cache():
        shutil.rmtree(cache)
        os.mkdir(cache)

    def touch_one_file():
        os.utime(touched, ns=(original.st_atime_ns, time.time_ns()))

    steps = [
        ("(a) plain Pillow loop", None, lambda: plain_pillow_loop(paths)),
        ("(b) engine, first read", clear_cache, lambda: load_images(folder).x_train),
        ("(c) engine, from the cache", None, lambda: load_images(folder).x_train),
        ("(d) engine, after touching one file", touch_one_file, lambda: load_images(folder).x_train),
    ]
    best = {name: (float("inf"), 0.0, None) for name, _, _ in steps}
    try:
        for path in paths:  # warm the page cache so no step pays for the disk
            with open(path, "rb") as f:
                f.read()
        print(f"{len(paths)} files, {machine()} at the start")
        for _ in range(args.repeat):
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
    rows = [[name, wall, wall / plain_wall, cpu, cpu / plain_cpu, str(shape)]
            for name, (wall, cpu, shape) in best.items()]
    print(f"\nBest of {args.repeat} round(s), {machine()} at the end (below 1 is faster than the plain loop)")
    print(table(rows, ["step", "seconds", "vs (a)", "CPU s", "vs (a)", "shape"]))


if __name__ == "__main__":
    main()
