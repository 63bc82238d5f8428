"""What the benchmarks (and scripts/screenshot.py) share.

Each measurement (a trial) runs in a fresh process, the same script started
with `--trial SPEC` (`parse`), so that TensorFlow's thread pools, graphs and
memory start from nothing and peak memory is the trial's own; it hands its
figures back with `report`. Comparisons let live trials take turns one
epoch at a time (`interleave`, `compare`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

CANDIDATES = ("/tmp/cifar10-jpg/train", os.path.expanduser("~/cifar10-jpg/train"))
RESULT_MARK = "RESULT "
EPOCH_MARK = "EPOCH "
INTERLEAVE_ENV = "CIFAR_STUDIO_BENCH_INTERLEAVE"


# -- data ------------------------------------------------------------------


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
    """The CIFAR-10 training images as a folder (one subfolder per class).

    Looks at --data, then $CIFAR_STUDIO_BENCH_DATA, then /tmp/cifar10-jpg/train
    and ~/cifar10-jpg/train, and says where it looked when none is there.
    """
    looked = [p for p in (explicit, os.environ.get("CIFAR_STUDIO_BENCH_DATA")) if p] + list(CANDIDATES)
    for path in looked:
        if os.path.isdir(path):
            print(f"images: {path}")
            return path
    sys.exit(f"no image folder found; looked in: {', '.join(looked)}\n"
             "pass --data with an unpacked CIFAR-10 image folder (one subfolder per class)")


def image_paths(folder: str) -> list[str]:
    """Every file under `folder`, in sorted order."""
    paths = []
    for directory, subfolders, files in os.walk(folder):
        subfolders.sort()
        paths.extend(os.path.join(directory, name) for name in sorted(files))
    return paths


def load_images(folder: str, validation_split: float = 0.1, seed: int = 0):
    """The engine's own reader (cached after the first read), as the app loads it."""
    from engine.config import DatasetConfig
    from engine.datasets import load_dataset

    return load_dataset(DatasetConfig(source="folder", path=folder, validation_split=validation_split, seed=seed))


def arrays_dataset(x_train, y_train, x_val, y_val, class_names: list[str]):
    """An engine Dataset from arrays, without a test split."""
    import numpy as np

    from engine.datasets import Dataset

    return Dataset(x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val,
                   x_test=np.zeros((0,) + x_train.shape[1:], np.uint8), y_test=np.zeros(0, np.int64),
                   class_names=list(class_names), description="benchmark")


# -- one trial (in its own process) ----------------------------------------


def parse(parser: argparse.ArgumentParser, trial) -> argparse.Namespace | None:
    """The script's arguments; or, started as a trial (`--trial SPEC`), run
    `trial(spec)` with the spec's environment applied first (before Keras
    starts) and return None."""
    parser.add_argument("--trial", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.trial:
        return args
    spec = json.loads(args.trial)
    os.environ.update(spec.get("env", {}))
    trial(spec)
    return None


def add_data_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", help="an unpacked CIFAR-10 image folder, one subfolder per class "
                                       "(default: /tmp/cifar10-jpg/train)")


def time_epochs() -> list[dict]:
    """Wall and CPU seconds (all threads) and training steps of every epoch
    of every `fit` in this process, from the start of the epoch to its end
    (validation and every other callback included).

    Taken with a callback added to each `keras.Model.fit` call, after the
    caller's own, so plain Keras, the Trainer, the CLI and the window are
    timed at the same place. It has no per-batch hook: Keras keeps
    dispatching steps asynchronously. In an interleaved run each epoch ends
    with this process's turn (`epoch_turn`).
    """
    import keras

    records: list[dict] = []

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.wall, self.cpu = time.perf_counter(), time.process_time()
            self.steps = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

        def on_epoch_end(self, epoch, logs=None):
            steps = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)) - self.steps
            records.append({"wall": time.perf_counter() - self.wall, "cpu": time.process_time() - self.cpu,
                            "steps": steps})
            epoch_turn(records[-1])

    fit = keras.Model.fit

    def timed_fit(self, *args, callbacks=None, **kwargs):
        return fit(self, *args, callbacks=[*(callbacks or []), EpochTimer()], **kwargs)

    keras.Model.fit = timed_fit
    return records


def run_trainer(config, dataset=None, listener=None, speed=None):
    """Train with the engine's Trainer into a throwaway run store; the
    Trainer (its model) and the RunEnded event. A run that does not finish
    ends the trial with its reason."""
    from engine.events import Listener
    from engine.runs import RunStore
    from engine.training import Trainer

    class Quiet(Listener):
        def on_log(self, text):
            print(text, file=sys.stderr)

    with tempfile.TemporaryDirectory() as folder:
        trainer = Trainer(config, listener or Quiet(), RunStore(folder), dataset=dataset, speed=speed)
        result = trainer.run()
    if result.status != "finished":
        raise SystemExit(f"run {result.status}: {result.reason}")
    return trainer, result


def report(result: dict) -> None:
    """Hand a trial's result back to the parent process."""
    print(RESULT_MARK + json.dumps(result), flush=True)


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


# -- the comparisons (the parent process) ----------------------------------


class Trial:
    """`script --trial SPEC` in a fresh Python. Interleaved, it stops at the
    end of each epoch until the parent says go (the child side is `epoch_turn`)."""

    def __init__(self, script: str, spec: dict, interleaved: bool = False):
        self.spec, self.interleaved = spec, interleaved
        self.errors = tempfile.TemporaryFile(mode="w+")
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **({INTERLEAVE_ENV: "1"} if interleaved else {})}
        self.process = subprocess.Popen([sys.executable, script, "--trial", json.dumps(spec)], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=self.errors, text=True, env=env)
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
        self.epochs.append(self._read_until(EPOCH_MARK))
        return self.epochs[-1]

    def go(self) -> dict:
        """Run one more epoch, alone, and return its figures."""
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        return self.next_epoch()

    def finish(self) -> dict:
        """Let the trial end; its RESULT (interleaved: with every epoch as the parent saw it)."""
        if self.interleaved:
            self.process.stdin.write("go\n")
        self.process.stdin.close()
        result = self._read_until(RESULT_MARK)
        self.process.wait()
        if self.interleaved:
            result["epoch_records"] = self.epochs
        return result

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def run_in_subprocess(script: str, spec: dict) -> dict:
    """Run `script --trial SPEC` in a fresh Python and return its RESULT."""
    return Trial(script, spec).finish()


def interleave(script: str, sides: dict[str, dict], rounds: int) -> dict[str, dict]:
    """Run each side's trial (`rounds` + 1 epochs) in its own live process,
    one epoch at a time: the first epochs (graph tracing) one after the
    other, then rounds of one epoch each, the order reversed every round
    (A B, B A, ...).

    Alternating whole trials (tens of seconds each) leaves a comparison at
    the mercy of a shared machine's speed drifting over minutes; alternating
    single epochs of live processes compares epochs seconds apart, only one
    side runs at a time, and a drift weighs on every side alike."""
    live = {}
    try:
        for name, spec in sides.items():
            live[name] = Trial(script, spec, interleaved=True)
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


def compare(script: str, sides: dict[str, dict], rounds: int, reference: str, title: str,
            columns: dict | None = None) -> dict[str, dict]:
    """Interleave the sides' trials for `rounds` epochs each after their
    first (graph tracing), print each side against the reference and return
    each side's result. `columns` adds {title: function of a result}.

    Per side: the median of the per-round ratios, the ratio of the medians,
    the best (least disturbed) epoch against the best, and CPU seconds.
    Plain Keras' input runs out every third epoch of 550 steps on 45,000
    images and ends that epoch early: a round in which the sides ran
    different numbers of steps is left out, and the ratio without the round
    just after it is shown too (plain Keras re-creates its input iterator
    then, which sometimes stalls for many seconds)."""
    print(f"{rounds} rounds of one epoch per side, after each side's first epoch", flush=True)
    results = interleave(script, {n: {**s, "epochs": rounds + 1} for n, s in sides.items()}, rounds)
    epochs = {n: r["epoch_records"][1:] for n, r in results.items()}
    full = [len({e[number]["steps"] for e in epochs.values()}) == 1 for number in range(rounds)]
    kept = [number for number, ok in enumerate(full) if ok]
    after_kept = [i for i, k in enumerate(kept) if k == 0 or full[k - 1]]
    columns = {**(columns or {}),
               "most CPU s paused": lambda r: max(e["cpu_while_paused"] for e in r["epoch_records"][1:])}
    reference_wall = [epochs[reference][k]["wall"] for k in kept]
    reference_cpu = median(epochs[reference][k]["cpu"] for k in kept)
    rows, lines = [], []
    for name, result in results.items():
        wall, cpu = [epochs[name][k]["wall"] for k in kept], median(epochs[name][k]["cpu"] for k in kept)
        per_round = [w / r for w, r in zip(wall, reference_wall)]
        rows.append([name, len(wall), median(wall), min(wall), cpu, median(per_round),
                     median(wall) / median(reference_wall), min(wall) / min(reference_wall), cpu / reference_cpu,
                     *(f(result) for f in columns.values())])
        if name != reference:
            lines.append(f"{name} / {reference} per round (wall): " + ", ".join(f"{r:.3f}" for r in per_round))
            if len(after_kept) < len(kept):
                lines.append(f"  leaving out too the rounds just after one left out: per-round median "
                             f"{median(per_round[i] for i in after_kept):.3f} over {len(after_kept)} rounds")
    if len(kept) < rounds:
        lines.insert(0, f"{rounds - len(kept)} of {rounds} rounds left out: a side's input ran out")
    header = ["side", "rounds", "epoch s", "best s", "CPU s", "per-round ratio", "median / median", "best / best",
              f"CPU / {reference}", *columns]
    print("\n".join([f"\n{title}, epochs alternated in one run, {machine()}", table(rows, header), *lines]))
    return results


def median(values) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


def table(rows: list[list], header: list[str]) -> str:
    cells = [header] + [[c if isinstance(c, str) else f"{c:.3f}" if isinstance(c, float) else str(c) for c in row]
                        for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def machine() -> str:
    try:
        load = ", load average %.1f" % os.getloadavg()[0]
    except (OSError, AttributeError):
        load = ""
    return f"{os.cpu_count()} CPU cores{load}"


# -- the window ------------------------------------------------------------


def open_window(work: Path, data: str, dataset: dict[str, str], hyper: dict[str, str]):
    """The main window as a user leaves it before pressing Train: SimCNN,
    SGD at 0.01, the image folder `data`, and the given fields of the
    dataset and hyperparameter panels. Settings and runs go under `work`;
    Qt's offscreen platform unless QT_QPA_PLATFORM says otherwise (the
    window still paints). Returns the application and the window."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ["CIFAR_STUDIO_HOME"] = str(work / "store")
    from gui.app import create_application
    from gui.main_window import MainWindow
    from gui.settings import Settings

    app = create_application([])
    window = MainWindow(Settings(str(work / "settings.ini")))
    window.resize(1400, 900)
    window.show()
    window.dataset_panel.source.set_value("folder")
    window.dataset_panel.path.setText(data)
    for name, value in dataset.items():
        getattr(window.dataset_panel, name).setText(value)
    window.model_panel.architecture.set_value("simcnn")
    window.hyperparameter_panel.optimizer.set_value("sgd")
    for name, value in {"learning_rate": "0.01", **hyper}.items():
        getattr(window.hyperparameter_panel, name).setText(value)
    return app, window


def training_signals(window):
    """The object whose Qt signals report the window's training run
    (stage, progress, epoch_ended, run_ended)."""
    return window.training


def press_train(app, window) -> None:
    """Start training as the Train button does; if the window refuses, say why and quit."""
    if not window.train():
        print("cannot train:", window.train_blocked_reason(), file=sys.stderr)
        app.quit()
