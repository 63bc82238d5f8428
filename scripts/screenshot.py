"""Remake the README's screenshots of the window (docs/*.png).

Runs the real app offscreen (Qt's "offscreen" platform: no X server or xcb
libraries needed) with its settings, run store and dataset cache in a
temporary folder, and grabs the window:

- train (docs/screenshot.png): SimCNN training with the "SimCNN best"
  recipe on 10,000 images, grabbed in the middle of an epoch, then stopped;
- results (docs/results.png): SimCNN trained with "SimCNN best" for a few
  epochs on 10,000 images, its most confused pair chosen in the confusion
  matrix and one of those images with its top-5 and Grad-CAM;
- classify (docs/classify.png): that SimCNN as model A and a ResNet50
  trained here (whole network, weights none, 32x32 input, 5,000 images:
  no ImageNet download) as model B, side by side on test images.

    python scripts/screenshot.py [--view train|results|classify|all] [--data FOLDER] [--models A.h5 B.h5]

--data is an image folder with train/ and test/ subfolders of one folder per
class (for example CIFAR-10's training JPEGs split into the two); without it
generated images are used. Each PNG is full colour, or reduced to a
256-colour palette if that would be over 400 KB.
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

MAX_BYTES = 400_000
TRAIN_IMAGES = 10_000
TEST_IMAGES = 2_000
RESULTS_EPOCHS = 8
WINDOW_SIZE = (1480, 980)


def save_small(image: QImage, path: Path) -> int:
    """Save as a PNG in full colour, or with a palette of 256 colours when
    that would be over MAX_BYTES; return its size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image.convertToFormat(QImage.Format_RGB888).save(str(path), "PNG", 0)
    if path.stat().st_size > MAX_BYTES:
        image.convertToFormat(QImage.Format_Indexed8, Qt.DiffuseDither).save(str(path), "PNG", 0)
    return path.stat().st_size


class Session:
    """The app, one window, and what the views share (the SimCNN run)."""

    def __init__(self, work: Path, data: Path):
        from gui.app import create_application

        self.work, self.data = work, data
        self.app = create_application([])
        self.status = 0
        self.simcnn_run = ""

    def window(self):
        from gui.main_window import MainWindow
        from gui.settings import Settings

        window = MainWindow(Settings(self.work / "settings.ini"))
        window.confirm_stop_on_close = True
        window.resize(*WINDOW_SIZE)
        window.lay_out_docks()  # as a first start on a screen this big lays them out
        dataset = window.dataset_panel
        dataset.source.set_value("folder")
        dataset.path.setText(str(self.data))
        dataset.train_subset.setText(str(TRAIN_IMAGES))
        dataset.test_subset.setText(str(TEST_IMAGES))
        dataset.validation_split.setText("0.1")
        window.model_panel.architecture.set_value("simcnn")
        presets = window.hyperparameter_panel.preset_list
        presets.setCurrentText("SimCNN best")
        presets.activated.emit(presets.currentIndex())
        window.hyperparameter_panel.batch_size.setText("64")
        return window

    def grab(self, window, out: Path) -> None:
        size = save_small(window.grab().toImage(), out)
        print(f"saved {out} ({size:,} bytes)")
        self.status = max(self.status, 0 if size <= MAX_BYTES else 2)

    def run(self, start) -> None:
        """Run the event loop until `start`'s steps call app.quit()."""
        QTimer.singleShot(300, start)
        self.app.exec()


def train_view(session: Session, out: Path, epochs_before: int) -> None:
    window = session.window()
    window.hyperparameter_panel.epochs.setText("10")
    window.show()
    state = {}

    def on_epoch_ended(event) -> None:
        if event.epoch == epochs_before:
            window.training.progress.connect(on_progress)

    def on_progress(event) -> None:
        if event.batch >= event.steps // 2 and "grabbed" not in state:
            state["grabbed"] = True
            QTimer.singleShot(300, grab)

    def grab() -> None:
        session.grab(window, out)
        window.stop()

    def on_run_ended(event) -> None:
        print(f"run {event.status}: {event.reason}")
        window.close()
        session.app.quit()

    window.training.epoch_ended.connect(on_epoch_ended)
    window.training.run_ended.connect(on_run_ended)
    session.run(window.train)


def results_view(session: Session, out: Path) -> None:
    window = session.window()
    window.hyperparameter_panel.epochs.setText(str(RESULTS_EPOCHS))
    window.hyperparameter_panel.warmup_epochs.setText("1")
    window.show()
    tab = window.results_tab

    def on_run_ended(event) -> None:
        print(f"run {event.status}: {event.reason}")
        session.simcnn_run = event.run_id
        wait_for_results()

    def wait_for_results() -> None:
        if tab.results is None or tab.results.record.run_id != session.simcnn_run:
            QTimer.singleShot(200, wait_for_results)
            return
        from engine.evaluation import most_confused

        results = tab.results
        names = list(results.class_names)
        true_name, predicted_name, _ = most_confused(results.confusion, names, top=1)[0]
        rows = tab.show_selection("cell", (names.index(true_name), names.index(predicted_name)))
        window.tabs.setCurrentWidget(tab)
        tab.gallery.image_selected.emit(int(rows[0]))
        QTimer.singleShot(200, wait_for_heatmap)

    def wait_for_heatmap() -> None:
        pixmap = tab.heatmap.pixmap()
        if pixmap is None or pixmap.isNull():
            QTimer.singleShot(200, wait_for_heatmap)
            return
        QTimer.singleShot(300, finish)

    def finish() -> None:
        session.grab(window, out)
        window.close()
        session.app.quit()

    window.training.run_ended.connect(on_run_ended)
    session.run(window.train)


def train_resnet50(session: Session) -> str:
    """ResNet50 trained here in a few minutes of CPU: no download (weights none), a 32x32 input."""
    from engine.config import preset
    from engine.runs import RunStore
    from engine.training import Trainer

    config = preset("Paper Table 1", "resnet50")
    config.name = "ResNet50 (weights none, 32x32, 5,000 images)"
    config.dataset.source, config.dataset.path = "folder", str(session.data)
    config.dataset.train_subset, config.dataset.test_subset = 5_000, TEST_IMAGES
    config.model.weights, config.model.input_size = "none", 32
    t = config.training
    t.optimizer, t.learning_rate, t.batch_size, t.epochs = "adam", 1e-3, 64, 4
    t.steps_per_epoch = t.validation_steps = 0
    result = Trainer(config, store=RunStore()).run()
    print(f"ResNet50 run {result.status}: {result.reason}")
    return result.run_id


def classify_view(session: Session, out: Path, models: list[str] | None) -> None:
    resnet_run = "" if models else train_resnet50(session)
    window = session.window()
    window.show()
    tab = window.classify_tab
    window.tabs.setCurrentWidget(tab)
    test = session.data / "test"
    pictures = [sorted(folder.iterdir())[index] for index in range(3) for folder in sorted(test.iterdir())]
    opened = set()

    def on_model_opened(slot, _classifier) -> None:
        opened.add(slot)
        if opened == {"A", "B"}:
            tab.add_images(pictures)

    def on_job_finished(outcome) -> None:
        QTimer.singleShot(500, finish)

    def finish() -> None:
        session.grab(window, out)
        window.close()
        session.app.quit()

    def start() -> None:
        if models:
            tab.open_model(models[0], "A")
            tab.open_model(models[1], "B")
        else:
            tab.open_run(session.simcnn_run, "A")
            tab.open_run(resnet_run, "B")

    tab.model_opened.connect(on_model_opened)
    tab.job_finished.connect(on_job_finished)
    session.run(start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--view", default="all", choices=("train", "results", "classify", "all"))
    parser.add_argument("--data", help="an image folder with train/ and test/ subfolders, one folder per class")
    parser.add_argument("--out-dir", default=str(REPO / "docs"))
    parser.add_argument("--epochs-before", type=int, default=3, help="train: epochs to finish before the grab")
    parser.add_argument("--models", nargs=2, metavar=("A", "B"),
                        help="classify: two saved models to compare instead of training SimCNN and ResNet50")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="cifar_studio_screenshot_"))
    os.environ["CIFAR_STUDIO_HOME"] = str(work / "store")
    os.environ.setdefault("CIFAR_STUDIO_CACHE_DIR", str(Path(tempfile.gettempdir()) / "cifar_studio_screenshot_cache"))
    data = Path(args.data) if args.data else work / "images"
    if not args.data:  # a quick look at the views; the README's pictures come from CIFAR-10
        generated_folder(data / "train")
        generated_folder(data / "test", per_class=30)
    session = Session(work, data)
    out = Path(args.out_dir)
    if args.view in ("train", "all"):
        train_view(session, out / "screenshot.png", args.epochs_before)
    if args.view in ("results", "all") or (args.view == "classify" and not args.models):
        results_view(session, out / "results.png")
    if args.view in ("classify", "all"):
        classify_view(session, out / "classify.png", args.models)
    return session.status


if __name__ == "__main__":
    sys.exit(main())
