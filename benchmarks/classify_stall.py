"""The longest stall of the GUI event loop while the Classify tab writes a folder to CSV.

    python benchmarks/classify_stall.py [--data FOLDER] [--images 10000]

The tab (alone, with its own task runner) opens a saved SimCNN and
classifies every image of the folder to a CSV through its own path: listing,
chunks of decode and predict on the task runner, rows and thumbnails into
the table. A 5 ms QTimer on the GUI thread records the gaps between its
ticks (as benchmarks/gui_stall.py does); a gap well above 5 ms is time the
window could not repaint or answer input. Without --data, generated 32x32
PNGs. Prints the longest gap, the 99th percentile, how many exceeded 50 ms,
the images per second, the longest gaps each with the table's last change
before it, the full garbage collections (with Keras loaded each holds the
GIL for a few hundred ms), and, for a shared machine, the gaps of the same
timer alone in another process over the same time (gui_stall.py --control).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from PySide6.QtCore import QTimer  # noqa: E402

from common import generated_folder  # noqa: E402
import gui_stall  # noqa: E402
from gui_stall import Ticks, longest, summary  # noqa: E402


def saved_simcnn(folder: Path) -> Path:
    """The app's SimCNN (123,210 parameters, untrained: its speed does not depend on its weights)."""
    import keras

    from engine.config import ModelConfig
    from engine.inference import write_class_names
    from engine.models import build_model

    keras.utils.set_random_seed(0)
    path = folder / "simcnn.h5"
    build_model(ModelConfig(architecture="simcnn"), (32, 32, 3), 10).save(path)
    write_class_names(path, [f"class_{i}" for i in range(10)])
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="a folder of images (any layout); default: generated PNGs")
    parser.add_argument("--images", type=int, default=10_000, help="generated images (without --data)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="classify_stall_"))
    data = Path(args.data) if args.data else generated_folder(work / "images", max(1, args.images // 10))
    model = saved_simcnn(work)

    from gui.app import create_application
    from gui.concurrent import TaskRunner
    from gui.tabs.classify import ClassifyTab

    app = create_application([])
    runner = TaskRunner()
    tab = ClassifyTab(runner)
    tab.resize(1200, 800)
    tab.show()
    marks: dict[str, float] = {}
    result: dict = {}
    events: list[tuple[float, str]] = []
    tab.pictures.rowsInserted.connect(lambda parent, first, last: events.append((time.time(), f"{last + 1} rows")))
    tab.pictures.dataChanged.connect(lambda first, last: events.append((time.time(), f"rows {last.row()} done")))

    def on_opened(slot, info) -> None:
        marks["start"] = time.time()
        tab.classify_folder_to_csv(data, work / "predictions.csv")

    def on_finished(outcome: str) -> None:
        marks["end"] = time.time()
        result.update(outcome=outcome, status=tab.status.text(), speed=tab.speed.text())
        QTimer.singleShot(200, app.quit)

    tab.model_opened.connect(on_opened)
    tab.job_finished.connect(on_finished)
    tab.status_changed.connect(lambda text: "could not be opened" in text and app.quit())
    full_collections: list[tuple[float, float]] = []
    gc.callbacks.append(lambda phase, info: info["generation"] == 2 and full_collections.append(
        (time.time(), time.perf_counter())))
    stop_file = work / "stop"
    control = subprocess.Popen([sys.executable, gui_stall.__file__, "--control", str(stop_file)],
                               stdout=subprocess.PIPE, text=True)
    ticks = Ticks()
    tab.open_model(model)
    app.exec()
    ticks.timer.stop()
    runner.shutdown()
    stop_file.touch()
    control_gaps = json.loads(control.communicate(timeout=60)[0])
    pairs = zip(full_collections[::2], full_collections[1::2])
    collections = [round((end[1] - begin[1]) * 1000, 1) for begin, end in pairs
                   if marks.get("start", 0) <= begin[0] <= marks.get("end", 0)]
    seconds = marks.get("end", 0) - marks.get("start", 0)
    rows = tab.pictures.rowCount()
    print(json.dumps({"load_average_1min": round(os.getloadavg()[0], 2), "data": str(data), "images": rows,
                      "seconds_listing_to_csv": round(seconds, 1),
                      "images_per_second": round(rows / seconds) if seconds > 0 else None,
                      "while_classifying": summary(ticks.gaps, marks.get("start"), marks.get("end")),
                      "longest_gaps": longest(ticks.gaps, events, marks.get("start", 0)),
                      "full_collections_ms": collections,
                      "control_same_time_no_app": summary(control_gaps, marks.get("start"), marks.get("end")),
                      **result}, indent=2))
    return 0 if result.get("outcome") == "done" else 1


if __name__ == "__main__":
    sys.exit(main())
