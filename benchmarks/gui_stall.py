"""The longest stall of the GUI event loop while the window trains a model.

    python benchmarks/gui_stall.py [--data FOLDER] [--train-subset 4000] [--epochs 2]

A QTimer ticks every 5 ms on the GUI thread and records the gap between
ticks; a gap well above 5 ms is time the event loop could not run (the
window would not repaint or answer input). The window trains SimCNN through
its own Train path, on an image folder if given, else on generated images.

Prints, while Keras imports (the first seconds after start-up), over the
whole run (loading, building, training, evaluating, saving) and over
training alone: the longest gap, the 99th percentile and how many gaps
exceeded 50 ms; and the longest gaps, each with the last event the window
had received before it (where to look when a figure gets worse).

A control process runs the same timer alone (no window, no training) over
the same time: its gaps are what the machine itself imposes (other
processes, the hypervisor), to read the app's figures against on a shared
or busy machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from PySide6.QtCore import QTimer  # noqa: E402

from common import generated_folder, open_window, press_train, training_signals  # noqa: E402

TICK_MS = 5


class Ticks:
    """A 5 ms timer on this thread's event loop: (wall time, gap before it in ms) of every tick."""

    def __init__(self):
        self.gaps: list[tuple[float, float]] = []
        self.last = time.perf_counter()
        self.timer = QTimer()
        self.timer.setInterval(TICK_MS)
        self.timer.timeout.connect(self._on_tick)
        self.timer.start()

    def _on_tick(self) -> None:
        now = time.perf_counter()
        self.gaps.append((time.time(), (now - self.last) * 1000))
        self.last = now


def summary(gaps: list[tuple[float, float]], start: float | None, end: float | None) -> dict:
    ms = np.array([gap for at, gap in gaps if start is not None and end is not None and start <= at <= end])
    if not len(ms):
        return {}
    return {"ticks": len(ms), "max_ms": round(float(ms.max()), 1), "p99_ms": round(float(np.percentile(ms, 99)), 1),
            "median_ms": round(float(np.median(ms)), 1), "over_50ms": int((ms > 50).sum())}


def longest(gaps: list[tuple[float, float]], events: list[tuple[float, str]], start: float, count: int = 6):
    """The longest gaps from `start` on, each with the last event received before it."""
    lines = []
    for at, gap in sorted((g for g in gaps if g[0] >= start), key=lambda g: -g[1])[:count]:
        before = [label for when, label in events if when <= at - gap / 1000]
        lines.append(f"{gap:7.1f} ms ending at {at - start:6.2f} s, after: {before[-1] if before else 'start'}")
    return lines


def control(stop_file: Path) -> int:
    """The timer alone, until stop_file appears; prints its ticks."""
    from PySide6.QtCore import QCoreApplication

    app = QCoreApplication([])
    ticks = Ticks()
    check = QTimer()
    check.timeout.connect(lambda: stop_file.exists() and app.quit())
    check.start(100)
    app.exec()
    print(json.dumps(ticks.gaps))
    return 0


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--control":
        return control(Path(sys.argv[2]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--data", help="an image folder (one subfolder per class); default: generated images")
    parser.add_argument("--train-subset", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="gui_stall_"))
    os.environ.setdefault("CIFAR_STUDIO_CACHE_DIR", str(Path(tempfile.gettempdir()) / "cifar_studio_bench_cache"))
    data = Path(args.data) if args.data else generated_folder(work / "images", args.train_subset // 10 + 50)
    stop_file = work / "stop"
    control_process = subprocess.Popen([sys.executable, __file__, "--control", str(stop_file)],
                                       stdout=subprocess.PIPE, text=True)
    subsets = {"train_subset": str(args.train_subset), "test_subset": "1000", "validation_split": "0.1"}
    app, window = open_window(work, str(data), subsets,
                              {"batch_size": str(args.batch_size), "epochs": str(args.epochs),
                               "steps_per_epoch": "auto", "validation_steps": "all"})
    marks: dict[str, float] = {"idle_start": time.time()}
    events: list[tuple[float, str]] = []
    result = {}

    def on_idle_done() -> None:
        marks["run_start"] = time.time()
        press_train(app, window)

    def on_progress(event) -> None:
        marks.setdefault("train_start", time.time())
        events.append((time.time(), f"progress epoch {event.epoch} batch {event.batch}/{event.steps}"))

    def on_run_ended(event) -> None:
        marks["run_end"] = time.time()
        result.update(status=event.status, reason=event.reason, elapsed_s=round(event.elapsed, 1),
                      test_accuracy=event.test_metrics.get("accuracy"))
        QTimer.singleShot(200, app.quit)

    signals = training_signals(window)
    signals.stage.connect(lambda event: events.append((time.time(), f"stage {event.stage}: {event.text}")))
    signals.epoch_ended.connect(lambda event: events.append((time.time(), f"epoch {event.epoch} ended")))
    signals.progress.connect(on_progress)
    signals.run_ended.connect(on_run_ended)
    ticks = Ticks()
    QTimer.singleShot(10_000, on_idle_done)  # the idle baseline, while Keras imports on its thread
    app.exec()
    ticks.timer.stop()
    stop_file.touch()
    control_gaps = json.loads(control_process.communicate(timeout=60)[0])

    phases = {"while_keras_imports": ("idle_start", "run_start"), "whole_run": ("run_start", "run_end"),
              "training": ("train_start", "run_end")}
    report = {"load_average_1min": round(os.getloadavg()[0], 2), "data": str(data), "run": result,
              **{phase: summary(ticks.gaps, marks.get(a), marks.get(b)) for phase, (a, b) in phases.items()},
              "longest_gaps": longest(ticks.gaps, events, marks["idle_start"]),
              "longest_gaps_training": longest(ticks.gaps, events, marks.get("train_start", float("inf"))),
              "control_same_time_no_app": {phase: summary(control_gaps, marks.get(a), marks.get(b))
                                           for phase, (a, b) in phases.items()}}
    print(json.dumps(report, indent=2))
    window.close()
    return 0 if result.get("status") == "finished" else 1


if __name__ == "__main__":
    sys.exit(main())
