"""What the benchmarks (and scripts/screenshot.py) share: finding the real
CIFAR-10 images or generating a small learnable folder, running one
measurement in a fresh process, and printing tables."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

ARCHIVE = os.path.join(os.path.dirname(ROOT), "shared", "data", "cifar10-jpg-train.tar.gz")
CANDIDATES = ("/tmp/cifar10-jpg/train", os.path.expanduser("~/cifar10-jpg/train"))
UNPACK_HINT = "tar xzf ../shared/data/cifar10-jpg-train.tar.gz -C /tmp"
RESULT_MARK = "RESULT "
EPOCH_MARK = "EPOCH "
INTERLEAVE_ENV = "CIFAR_STUDIO_BENCH_INTERLEAVE"


def generated_folder(root: Path, per_class: int = 300) -> Path:
    """Ten classes of 32x32 PNGs: noise with a coloured square, learnable fast."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in range(10):
        folder = root / f"class_{label}"
        folder.mkdir(parents=True)
        for index in range(per_class):
            image = rng.integers(0, 90, size=(32, 32, 3), dtype=np.uint8)
            row, column = divmod(label % 4, 2)
            image[row * 16:(row + 1) * 16, column * 16:(column + 1) * 16, label % 3] += 160
            Image.fromarray(image).save(folder / f"{index:04d}.png")
    return root


def find_images(explicit: str | None) -> str:
    """The folder of the 50,000 training JPEGs (one subfolder per class).

    Looks at --data, then $CIFAR_STUDIO_BENCH_DATA, then /tmp/cifar10-jpg/train
    and ~/cifar10-jpg/train; says where it looked and how to unpack the
    archive when none is there.
    """
    looked = [p for p in (explicit, os.environ.get("CIFAR_STUDIO_BENCH_DATA")) if p] + list(CANDIDATES)
    for path in looked:
        if os.path.isdir(path):
            print(f"images: {path}")
            return path
    hint = f"unpack it first:  {UNPACK_HINT}" if os.path.exists(ARCHIVE) else f"the archive is not at {ARCHIVE} either"
    sys.exit(f"no image folder found; looked in: {', '.join(looked)}\n{hint}")


def load_images(folder: str, validation_split: float = 0.1, seed: int = 0):
    """The engine's own reader (cached after the first read), as the app loads it."""
    from engine.config import DatasetConfig
    from engine.data import load_dataset

    return load_dataset(DatasetConfig(source="folder", path=folder, validation_split=validation_split, seed=seed))


def run_in_subprocess(script: str, spec: dict, env: dict | None = None, timeout: float = 3600) -> dict:
    """Run `script --trial SPEC` in a fresh Python and return its RESULT line.

    Each measurement gets its own process: TensorFlow's thread pools,
    graphs and memory start from nothing, and peak memory is the trial's own.
    """
    command = [sys.executable, script, "--trial", json.dumps(spec)]
    started = time.monotonic()
    process = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                             env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})})
    lines = [line for line in process.stdout.splitlines() if line.startswith(RESULT_MARK)]
    if process.returncode != 0 or not lines:
        sys.stderr.write(process.stdout[-3000:] + process.stderr[-5000:])
        raise SystemExit(f"trial {spec} failed (exit {process.returncode})")
    result = json.loads(lines[-1][len(RESULT_MARK):])
    result["process_seconds"] = time.monotonic() - started
    return result


class LiveTrial:
    """One side of an interleaved comparison: a trial in its own process that
    stops at the end of each epoch until the parent says go.

    Alternating whole trials (tens of seconds each) leaves the comparison at
    the mercy of a shared machine's speed drifting over minutes; alternating
    single epochs of two live processes compares epochs seconds apart, and
    only one side runs at a time. The child side is `epoch_turn`.
    """

    def __init__(self, script: str, spec: dict, env: dict | None = None):
        import tempfile

        self.spec = spec
        self.errors = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(
            [sys.executable, script, "--trial", json.dumps(spec)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self.errors, text=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", INTERLEAVE_ENV: "1", **(env or {})})
        self.epochs: list[dict] = []

    def _read_until(self, mark: str) -> dict:
        for line in self.process.stdout:
            if mark in line:  # after a console progress line's carriage returns, say
                return json.loads(line.split(mark, 1)[1])
        self.process.wait()
        self.errors.seek(0)
        sys.stderr.write(self.errors.read()[-5000:])
        raise SystemExit(f"trial {self.spec} ended early (exit {self.process.returncode})")

    def next_epoch(self) -> dict:
        """Wait for the epoch in progress to end (the first one: started with the process)."""
        epoch = self._read_until(EPOCH_MARK)
        self.epochs.append(epoch)
        return epoch

    def go(self) -> dict:
        """Run one more epoch, alone, and return its figures."""
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        return self.next_epoch()

    def finish(self) -> dict:
        """Let the trial end after its last epoch; its RESULT, with every epoch."""
        self.process.stdin.write("go\n")
        self.process.stdin.close()
        result = self._read_until(RESULT_MARK)
        self.process.wait()
        result["epoch_records"] = self.epochs
        return result

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def add_interleave_arguments(parser, pairs: int, pairs_help: str) -> None:
    """--rounds (the default, epoch-interleaved comparison) and --fresh/--pairs
    (whole trials alternated, each in a fresh process)."""
    parser.add_argument("--rounds", type=int, default=8,
                        help="epochs per side alternated in one live process each (the default comparison)")
    parser.add_argument("--fresh", action="store_true",
                        help="instead: whole trials alternated, each in a fresh process (--pairs of them)")
    parser.add_argument("--pairs", type=int, default=pairs, help=f"with --fresh: {pairs_help}")


def interleave(script: str, sides: dict[str, dict], rounds: int, env: dict | None = None) -> dict[str, dict]:
    """Run each side's trial (`rounds` + 1 epochs) in its own live process,
    one epoch at a time: the first epochs (graph tracing) one after the
    other, then rounds of one epoch each, the order reversed every round
    (A B, B A, ...) so a drift in the machine's speed weighs on both."""
    live = {}
    try:
        for name, spec in sides.items():
            live[name] = LiveTrial(script, spec, env)
            live[name].next_epoch()
        names = list(sides)
        for number in range(rounds):
            for name in (names if number % 2 == 0 else names[::-1]):
                live[name].go()
            print(f"  round {number + 1} of {rounds}: " + ", ".join(
                f"{name} {live[name].epochs[-1]['wall']:.2f} s" for name in names), flush=True)
        return {name: trial.finish() for name, trial in live.items()}
    finally:  # one side failed (or Ctrl+C): the other must not wait for its turn forever
        for trial in live.values():
            trial.kill()


_paused_cpu = [0.0]


def epoch_turn(record: dict) -> None:
    """In a trial run by `interleave`: report this epoch and wait for the
    parent's go (meanwhile the other side runs). Does nothing otherwise.

    Each record also says how many CPU seconds this process used while it
    waited before that epoch ("cpu_while_paused"): work that would have
    slowed the other side's epoch, which should be close to nothing."""
    if not os.environ.get(INTERLEAVE_ENV):
        return
    print("\n" + EPOCH_MARK + json.dumps({**record, "cpu_while_paused": _paused_cpu[0]}), flush=True)
    paused = time.process_time()
    if not sys.stdin.readline():
        raise SystemExit("the benchmark's parent process went away")
    _paused_cpu[0] = time.process_time() - paused


def report(result: dict) -> None:
    """Hand a trial's result back to the parent process."""
    print(RESULT_MARK + json.dumps(result), flush=True)


def median(values) -> float:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else float("nan")


def spread(values) -> str:
    values = [v for v in values if v is not None]
    if len(values) < 2:
        return ""
    return f" (min {min(values):.2f}, max {max(values):.2f})"


def table(rows: list[list], header: list[str]) -> str:
    cells = [header] + [[c if isinstance(c, str) else f"{c:.3f}" if isinstance(c, float) else str(c) for c in row]
                        for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def machine() -> str:
    try:
        import psutil

        cores = psutil.cpu_count(logical=True)
        load = ", load average %.1f" % os.getloadavg()[0]
    except (ImportError, OSError, AttributeError):
        cores, load = os.cpu_count(), ""
    return f"{cores} CPU cores{load}"
