"""Save a screenshot of the window during a training run (docs/screenshot.png).

Runs the real app offscreen (Qt's "offscreen" platform: no X server or xcb
libraries needed) with its settings, run store and dataset cache in a
temporary folder: loads the dataset in the Dataset panel, trains SimCNN with
the "SimCNN best" recipe (10 epochs at batch 64 on 10,000 images), grabs the window in the
middle of an epoch, then stops the run and quits.

    python scripts/screenshot.py [--data /tmp/cifar10-jpg/train] [--out docs/screenshot.png]

Without --data it uses /tmp/cifar10-jpg/train when that exists
(`tar xzf ../shared/data/cifar10-jpg-train.tar.gz -C /tmp`), else generated
images. The PNG is full colour, or reduced to a 256-colour palette if that
would be over 300 KB.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from PySide6.QtCore import Qt, QTimer  # noqa: E402
from PySide6.QtGui import QImage  # noqa: E402

from benchmarks.common import generated_folder  # noqa: E402

REAL_DATA = Path("/tmp/cifar10-jpg/train")
MAX_BYTES = 300_000


def save_small(image: QImage, path: Path) -> int:
    """Save as a PNG in full colour, or with a palette of 256 colours when
    that would be over MAX_BYTES; return its size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image.convertToFormat(QImage.Format_RGB888).save(str(path), "PNG", 0)
    if path.stat().st_size > MAX_BYTES:
        image.convertToFormat(QImage.Format_Indexed8, Qt.DiffuseDither).save(str(path), "PNG", 0)
    return path.stat().st_size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="an image folder with one subfolder per class")
    parser.add_argument("--out", default=str(REPO / "docs" / "screenshot.png"))
    parser.add_argument("--epochs-before", type=int, default=3, help="epochs to finish before the grab")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="cifar_studio_screenshot_"))
    os.environ["CIFAR_STUDIO_HOME"] = str(work / "store")
    os.environ.setdefault("CIFAR_STUDIO_CACHE_DIR", str(Path(tempfile.gettempdir()) / "cifar_studio_screenshot_cache"))
    if args.data:
        data = Path(args.data)
    elif REAL_DATA.is_dir():
        data = REAL_DATA
    else:
        data = generated_folder(work / "images")

    from gui.app import create_application
    from gui.main_window import MainWindow
    from gui.settings import Settings

    app = create_application([])
    window = MainWindow(Settings(work / "settings.ini"))
    window.resize(1480, 980)
    dataset = window.dataset_panel
    dataset.source.set_value("folder")
    dataset.path.setText(str(data))
    dataset.train_subset.setText("10000")
    dataset.test_subset.setText("1000")
    dataset.validation_split.setText("0.1")
    window.model_panel.architecture.set_value("simcnn")
    presets = window.hyperparameter_panel.preset_list
    presets.setCurrentText("SimCNN best")
    presets.activated.emit(presets.currentIndex())
    window.hyperparameter_panel.epochs.setText("10")
    window.hyperparameter_panel.batch_size.setText("64")
    window.show()

    state = {"status": 1}

    def on_loaded(_dataset) -> None:
        window.train()

    def on_epoch_ended(event) -> None:
        if event.epoch == args.epochs_before:
            window.training.progress.connect(on_progress)

    def on_progress(event) -> None:
        if event.batch >= event.steps // 2 and "grabbed" not in state:
            state["grabbed"] = True
            QTimer.singleShot(300, grab)

    def grab() -> None:
        size = save_small(window.grab().toImage(), Path(args.out))
        print(f"saved {args.out} ({size:,} bytes)")
        state["status"] = 0 if size <= MAX_BYTES else 2
        window.stop()

    def on_run_ended(event) -> None:
        print(f"run {event.status}: {event.reason}")
        window.close()
        app.quit()

    def on_failed(message: str) -> None:
        print("could not load the dataset:", message, file=sys.stderr)
        window.close()
        app.quit()

    dataset.loaded.connect(on_loaded)
    window.dataset_panel.failed.connect(on_failed)
    window.training.epoch_ended.connect(on_epoch_ended)
    window.training.run_ended.connect(on_run_ended)
    QTimer.singleShot(500, dataset.load)
    app.exec()
    return state["status"]


if __name__ == "__main__":
    sys.exit(main())
