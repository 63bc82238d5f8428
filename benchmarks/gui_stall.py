"""The longest stall of the GUI event loop while the window trains a model.

A QTimer ticks every 5 ms on the GUI thread and records the gap between
ticks; a gap well above 5 ms is time the event loop could not run (the
window would not repaint or answer input). The window trains the real SimCNN
through its own Train path (worker thread, Trainer, events as signals), on
the CIFAR-10 JPEG folder if given, else on generated images.

    python benchmarks/gui_stall.py --data /tmp/cifar10-jpg/train --train-subset 4000 --epochs 2

Prints the idle baseline, then for the whole run (loading, building, training,
evaluating, saving) and for the training phase alone: the longest gap, the
99th percentile and how many gaps exceeded 50 ms. The offscreen platform is
used unless QT_QPA_PLATFORM says otherwise; the window still paints.

A control process runs the same 5 ms timer alone (no window, no training)
over the same time: its gaps are what the machine itself imposes (other
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
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from PySide6.QtCore import QTimer  # noqa: E402

from benchmarks.common import generated_folder  # noqa: E402

TICK_MS = 5


class GapRecorder:
    """Records the time between consecutive ticks of a 5 ms timer."""

    def __init__(self):
        self.gaps: list[tuple[float, float]] = []  # (time of tick, gap before it)
        self.last = time.perf_counter()
        self.timer = QTimer()
        self.timer.setInterval(TICK_MS)
        self.timer.timeout.connect(self._on_tick)

    def start(self) -> None:
        self.last = time.perf_counter()
        self.timer.start()

    def _on_tick(self) -> None:
        now = time.perf_counter()
        self.gaps.append((now, now - self.last))
        self.last = now

    def between(self, start: float, end: float) -> np.ndarray:
        return np.array([gap for at, gap in self.gaps if start <= at <= end]) * 1000


def summary(gaps_ms: np.ndarray) -> dict:
    if not len(gaps_ms):
        return {}
    return {
        "ticks": int(len(gaps_ms)),
        "max_ms": round(float(gaps_ms.max()), 1),
        "p99_ms": round(float(np.percentile(gaps_ms, 99)), 1),
        "median_ms": round(float(np.median(gaps_ms)), 1),
        "over_50ms": int((gaps_ms > 50).sum()),
    }


def longest_gaps(recorder: GapRecorder, events: list[tuple[float, str]], marks: dict, start: str,
                 count: int = 6) -> list[str]:
    """The longest gaps from marks[start] on, each with the last event the
    GUI had received before it."""
    origin = marks["idle_start"]
    lines = []
    gaps = [(at, gap) for at, gap in recorder.gaps if at >= marks.get(start, float("inf"))]
    for at, gap in sorted(gaps, key=lambda item: -item[1])[:count]:
        before = [label for when, label in events if when <= at - gap]
        lines.append(f"{gap * 1000:7.1f} ms ending at {at - origin:6.2f} s, after: {before[-1] if before else 'start'}")
    return lines


def control(stop_file: Path) -> int:
    """The timer alone, until stop_file appears; prints [(wall time, gap)]."""
    from PySide6.QtCore import QCoreApplication

    app = QCoreApplication([])
    ticks: list[tuple[float, float]] = []
    last = [time.perf_counter()]

    def on_tick() -> None:
        now = time.perf_counter()
        ticks.append((time.time(), now - last[0]))
        last[0] = now
        if len(ticks) % 20 == 0 and stop_file.exists():
            app.quit()

    timer = QTimer()
    timer.setInterval(TICK_MS)
    timer.timeout.connect(on_tick)
    timer.start()
    app.exec()
    print(json.dumps(ticks))
    return 0


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--control":
        return control(Path(sys.argv[2]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="an image folder (one subfolder per class); default: generated images")
    parser.add_argument("--train-subset", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--switch-interval", type=float, default=None,
                        help="override the app's sys.setswitchinterval (seconds; the app sets 0.001)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="gui_stall_"))
    os.environ["CIFAR_STUDIO_HOME"] = str(work / "store")
    os.environ.setdefault("CIFAR_STUDIO_CACHE_DIR", str(Path(tempfile.gettempdir()) / "cifar_studio_bench_cache"))
    data = Path(args.data) if args.data else generated_folder(work / "images", args.train_subset // 10 + 50)
    stop_file = work / "stop"
    control_process = subprocess.Popen([sys.executable, __file__, "--control", str(stop_file)],
                                       stdout=subprocess.PIPE, text=True)

    from gui.app import create_application
    from gui.main_window import MainWindow
    from gui.settings import Settings

    app = create_application([])
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)
    window = MainWindow(Settings(work / "settings.ini"))
    window.resize(1400, 900)
    window.show()
    window.dataset_panel.source.set_value("folder")
    window.dataset_panel.path.setText(str(data))
    window.dataset_panel.train_subset.setText(str(args.train_subset))
    window.dataset_panel.test_subset.setText("1000")
    window.dataset_panel.validation_split.setText("0.1")
    window.model_panel.architecture.set_value("simcnn")
    hyper = window.hyperparameter_panel
    hyper.optimizer.set_value("sgd")
    hyper.learning_rate.setText("0.01")
    hyper.batch_size.setText(str(args.batch_size))
    hyper.epochs.setText(str(args.epochs))
    hyper.steps_per_epoch.setText("auto")
    hyper.validation_steps.setText("all")

    recorder = GapRecorder()
    marks: dict[str, float] = {}
    walls: dict[str, float] = {}
    result = {}

    def on_idle_done() -> None:
        marks["run_start"] = time.perf_counter()
        walls["run_start"] = time.time()
        if not window.train():
            print("cannot train:", window.train_blocked_reason(), file=sys.stderr)
            app.quit()

    events: list[tuple[float, str]] = []

    def on_progress(event) -> None:
        marks.setdefault("train_start", time.perf_counter())
        walls.setdefault("train_start", time.time())
        events.append((time.perf_counter(), f"progress epoch {event.epoch} batch {event.batch}/{event.steps}"))

    def on_stage(event) -> None:
        events.append((time.perf_counter(), f"stage {event.stage}: {event.text}"))

    def on_epoch_ended(event) -> None:
        events.append((time.perf_counter(), f"epoch {event.epoch} ended"))

    window.worker.stage.connect(on_stage)
    window.worker.epoch_ended.connect(on_epoch_ended)

    def on_run_ended(event) -> None:
        marks["run_end"] = time.perf_counter()
        walls["run_end"] = time.time()
        result.update(status=event.status, reason=event.reason, elapsed_s=round(event.elapsed, 1),
                      test_accuracy=event.test_metrics.get("accuracy"))
        QTimer.singleShot(200, app.quit)

    window.worker.progress.connect(on_progress)
    window.worker.run_ended.connect(on_run_ended)
    recorder.start()
    marks["idle_start"] = time.perf_counter()
    QTimer.singleShot(10_000, on_idle_done)  # idle baseline while Keras imports on the worker
    app.exec()
    recorder.timer.stop()

    report = {
        "load_average_1min": round(os.getloadavg()[0], 2),
        "switch_interval_s": sys.getswitchinterval(),
        "data": str(data), "train_subset": args.train_subset, "epochs": args.epochs,
        "batch_size": args.batch_size, "run": result,
        "startup_while_keras_imports": summary(recorder.between(marks["idle_start"], marks["run_start"])),
        "whole_run": summary(recorder.between(marks["run_start"], marks.get("run_end", time.perf_counter()))),
        "training": summary(recorder.between(marks.get("train_start", 0), marks.get("run_end", 0))),
    }
    report["longest_gaps"] = longest_gaps(recorder, events, marks, "idle_start")
    report["longest_gaps_training"] = longest_gaps(recorder, events, marks, "train_start")
    stop_file.touch()
    control_ticks = json.loads(control_process.communicate(timeout=60)[0])
    report["control_same_time_no_app"] = {
        phase: summary(np.array([gap for at, gap in control_ticks
                                 if walls.get(start, 0) <= at <= walls.get("run_end", 0)]) * 1000)
        for phase, start in (("whole_run", "run_start"), ("training", "train_start"))
    }
    print(json.dumps(report, indent=2))
    window.close()
    return 0 if result.get("status") == "finished" else 1


if __name__ == "__main__":
    sys.exit(main())
