"""The Results tab: what a run's model gets right and wrong, image by image.

Shows one run of the store (the run just trained opens here when it ends;
any other is chosen from the list): its test metrics and settings, the
per-class table and the most confused pairs, the confusion matrix, the
test images with their predictions, and for one image its top-5 and a
Grad-CAM heatmap. Everything shown is computed by the engine
(engine.evaluation, engine.explain) in tasks on the task runner; the tab
only draws. A cell of the matrix, a class label, a confused pair or a
filter each select the gallery's images, as Orange3's confusion matrix
selects the rows of its data.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QImage, QPainter, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView, QComboBox, QFileDialog, QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QMenu,
    QPushButton, QSplitter, QTableWidget, QTableWidgetItem, QTabWidget, QToolButton, QVBoxLayout, QWidget,
)

from engine.errors import EngineError
from engine.inference import check_output_file
from engine.registry import ARCHITECTURES
from engine.text import format_seconds
from gui.concurrent import TaskRunner, TaskState
from gui.widgets.bars import ProbabilityBars
from gui.widgets.confusion import ConfusionMatrixView
from gui.widgets.gallery import ImageGallery
from gui.widgets.metric_plot import MetricPlot

EXPLAIN = "explain"  # Grad-CAM's own lane: an image's map never waits behind a dataset loading
LARGE_SIDE = 160  # the selected image and its heatmap, in pixels
FILTERS = {
    "all": "All images",
    "misclassified": "Misclassified",
    "confident_mistakes": "Most confident mistakes (highest loss first)",
    "unsure_correct": "Least confident right answers",
}


EXPORTS = {  # what: (what it is, file suffix)
    "confusion_csv": ("confusion matrix", ".csv"),
    "per_class_csv": ("per-class table", ".csv"),
    "selection_csv": ("gallery's images", ".csv"),
    "confusion_png": ("confusion matrix", ".png"),
    "curves_png": ("curves", ".png"),
}


class ResultsTab(QWidget):
    """One run's evaluation; `message(str)` for the window's status bar."""

    message = Signal(str)

    def __init__(self, runner: TaskRunner, parent: QWidget | None = None):
        super().__init__(parent)
        self.runner = runner
        self.results = None
        self.run_id = ""
        self._models: dict[str, object] = {}  # Grad-CAM's loaded models, touched on the explain lane only
        self._image_row = -1

        self.run_list = QComboBox()
        # Sized by a few words, not by the longest run's name, which would widen the window past the screen.
        self.run_list.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.run_list.setMinimumContentsLength(24)
        self.run_list.setToolTip("Every run in the store: name, model, status, test accuracy, date.")
        self.run_list.activated.connect(self._on_run_chosen)
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.setToolTip("List the store's runs again (runs made since, in the window or the CLI).")
        self.refresh_button.clicked.connect(self.refresh_runs)
        self.evaluate_button = QPushButton("Evaluate now")
        self.evaluate_button.setToolTip("Evaluate this run's saved model on the whole test split.")
        self.evaluate_button.clicked.connect(self._on_evaluate_clicked)
        self.evaluate_button.hide()
        self.export_button = QToolButton()
        self.export_button.setText("Export")
        self.export_button.setPopupMode(QToolButton.InstantPopup)
        self.export_menu = QMenu(self)
        for what, (title, suffix) in EXPORTS.items():
            self.export_menu.addAction(f"{title.capitalize()} ({suffix[1:].upper()})…",
                                       lambda what=what: self.export(what))
        self.export_button.setMenu(self.export_menu)
        self.export_button.setEnabled(False)
        self.summary = QLabel("Choose a run, or train one: it opens here when it ends.")
        self.summary.setObjectName("summary")
        self.summary.setWordWrap(True)
        self.summary.setTextFormat(Qt.RichText)
        self.summary.setTextInteractionFlags(Qt.TextSelectableByMouse)

        self.confusion = ConfusionMatrixView()
        self.per_class = QTableWidget(0, 5)
        self.per_class.setHorizontalHeaderLabels(["class", "precision", "recall", "F1", "support"])
        self.per_class.setSortingEnabled(True)
        self.per_class.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.per_class.verticalHeader().hide()
        self.per_class.horizontalHeader().setStretchLastSection(True)
        self.confused = QListWidget()
        self.confused.setToolTip("Click a pair to see its images.")
        self.confused.itemClicked.connect(self._on_confused_pair_clicked)
        self.loss_plot = MetricPlot("loss", "Loss", legend_corner=(-10, 10))
        self.accuracy_plot = MetricPlot("accuracy", "Accuracy", legend_corner=(-10, -10))
        curves = QSplitter(Qt.Vertical)
        curves.addWidget(self.loss_plot)
        curves.addWidget(self.accuracy_plot)
        self.curves = curves
        self.averages = QLabel()
        self.averages.setWordWrap(True)
        self.averages.setTextInteractionFlags(Qt.TextSelectableByMouse)
        per_class_box = QWidget()
        per_class_layout = QVBoxLayout(per_class_box)
        per_class_layout.setContentsMargins(0, 0, 0, 0)
        per_class_layout.addWidget(self.per_class, 1)
        per_class_layout.addWidget(self.averages)
        self.side_tabs = QTabWidget()
        self.side_tabs.addTab(per_class_box, "Per class")
        self.side_tabs.addTab(self.confused, "Most confused")
        self.side_tabs.addTab(curves, "Curves")

        self.filter = QComboBox()
        self.filter.setToolTip("Which test images the gallery shows.")
        self.filter.activated.connect(self._on_filter_chosen)
        self.gallery = ImageGallery()
        self.gallery.image_selected.connect(self._on_image_selected)
        self.image = QLabel()
        self.image.setFixedSize(LARGE_SIDE, LARGE_SIDE)
        self.image.setAlignment(Qt.AlignCenter)
        self.heatmap = QLabel()
        self.heatmap.setFixedSize(LARGE_SIDE, LARGE_SIDE)
        self.heatmap.setAlignment(Qt.AlignCenter)
        self.heatmap.setToolTip("Grad-CAM: where the model looked for the class it chose (red: most).")
        self.image_caption = QLabel("Click an image to see its top-5 classes and where the model looked.")
        self.image_caption.setWordWrap(True)
        self.bars = ProbabilityBars()

        top = QHBoxLayout()
        top.addWidget(QLabel("Run"))
        top.addWidget(self.run_list, 1)
        top.addWidget(self.refresh_button)
        top.addWidget(self.evaluate_button)
        top.addWidget(self.export_button)
        upper = QSplitter(Qt.Horizontal)
        upper.addWidget(self.confusion)
        upper.addWidget(self.side_tabs)
        upper.setStretchFactor(0, 3)
        upper.setStretchFactor(1, 2)
        gallery_box = QWidget()
        gallery_layout = QVBoxLayout(gallery_box)
        gallery_layout.setContentsMargins(0, 0, 0, 0)
        filter_row = QHBoxLayout()
        filter_row.addWidget(QLabel("Show"))
        filter_row.addWidget(self.filter, 1)
        gallery_layout.addLayout(filter_row)
        gallery_layout.addWidget(self.gallery, 1)
        one = QWidget()
        one_layout = QVBoxLayout(one)
        one_layout.setContentsMargins(0, 0, 0, 0)
        pictures = QHBoxLayout()
        pictures.addWidget(self.image)
        pictures.addWidget(self.heatmap)
        one_layout.addLayout(pictures)
        one_layout.addWidget(self.image_caption)
        one_layout.addWidget(self.bars, 1)
        lower = QSplitter(Qt.Horizontal)
        lower.addWidget(gallery_box)
        lower.addWidget(one)
        lower.setStretchFactor(0, 3)
        lower.setStretchFactor(1, 1)
        body = QSplitter(Qt.Vertical)
        body.addWidget(upper)
        body.addWidget(lower)
        body.setStretchFactor(0, 1)
        body.setStretchFactor(1, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.summary)
        layout.addWidget(body, 1)

        self.confusion.cell_clicked.connect(self._on_cell_clicked)
        self.confusion.true_class_clicked.connect(lambda index: self.show_selection("true", index))
        self.confusion.predicted_class_clicked.connect(lambda index: self.show_selection("predicted", index))
        self.refresh_runs()

    # --- choosing a run -----------------------------------------------------

    def refresh_runs(self) -> None:
        """List the store's runs, newest first; keep the one shown."""
        from engine.runs import RunStore

        try:
            records = sorted(RunStore().list_runs(), key=lambda r: r.created, reverse=True)
        except Exception as exc:  # a store that cannot be read must not take the tab down
            self._say(f"Cannot read the run store: {exc}", error=True)
            records = []
        self.run_list.blockSignals(True)
        self.run_list.clear()
        for record in records:
            accuracy = f"{record.test_accuracy:.2%}" if record.test_accuracy is not None else "not evaluated"
            label = ARCHITECTURES[record.model].label if record.model in ARCHITECTURES else record.model
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(record.created))
            self.run_list.addItem(f"{record.name} · {label} · {record.status} · {accuracy} · {when}", record.run_id)
        index = self.run_list.findData(self.run_id)
        self.run_list.setCurrentIndex(index if index >= 0 else -1)
        self.run_list.blockSignals(False)

    def open_run(self, run_id: str) -> None:
        """Show a run of the store (the window calls it when a run ends)."""
        self.run_id = run_id
        self.refresh_runs()
        self._load(run_id)

    def _on_run_chosen(self, index: int) -> None:
        run_id = self.run_list.itemData(index)
        if run_id:
            self.open_run(run_id)

    def _load(self, run_id: str) -> None:
        self._say("Opening the run…")
        self.evaluate_button.hide()
        self.runner.start(_load_results, run_id, key="results", on_partial=self._on_stage,
                          on_done=self._on_loaded, on_error=self._on_failed)

    def _on_evaluate_clicked(self) -> None:
        self.evaluate_button.setEnabled(False)
        self._say("Evaluating the run's model on the whole test split…")
        self.runner.start(_evaluate_and_load, self.run_id, key="results", on_partial=self._on_stage,
                          on_done=self._on_loaded, on_error=self._on_failed)

    def _on_stage(self, event) -> None:
        self._say(event.text)

    def _on_failed(self, exc: BaseException) -> None:
        self.evaluate_button.setEnabled(True)
        self._say(f"Cannot open this run: {exc}", error=True)

    # --- showing a run ------------------------------------------------------

    def _on_loaded(self, results) -> None:
        if results is None:  # cancelled
            return
        self.results = results
        self.evaluate_button.setEnabled(True)
        self.evaluate_button.setVisible(results.needs_evaluation)
        self.export_button.setEnabled(not results.needs_evaluation)
        self._show_summary(results)
        self._show_history(results)
        if results.needs_evaluation:
            self.confusion.set_matrix(np.zeros((0, 0), dtype=np.int64), [])
            self.per_class.setRowCount(0)
            self.confused.clear()
            self.gallery.set_data(None, np.zeros(0, int), np.zeros(0, int), np.zeros(0), [])
            self.filter.clear()
            return
        names = list(results.class_names)
        self.confusion.set_matrix(results.confusion, names)
        self._show_per_class(results)
        self._show_most_confused(results)
        self.gallery.set_data(results.images, results.y_true, results.y_pred, results.top_k_probs[:, 0], names,
                              files=results.files)
        self.filter.clear()
        # Keys as text: findData compares Python tuples by identity, text by value.
        self.filter.addItem("(chosen in the matrix or the confused pairs)", "chosen")
        for kind, text in FILTERS.items():
            self.filter.addItem(text, kind)
        for index, name in enumerate(names):
            self.filter.addItem(f"True class: {name}", f"true:{index}")
        for index, name in enumerate(names):
            self.filter.addItem(f"Predicted as: {name}", f"predicted:{index}")
        self.show_selection("misclassified")
        self.message.emit(f"Results of run {results.record.name}.")

    def _show_summary(self, results) -> None:
        record, metrics = results.record, results.metrics
        config = results.config
        t = config.training
        lines = [f"<b>{_html(record.name)}</b> ({record.run_id}) · {_html(ARCHITECTURES[record.model].label)} · "
                 f"{record.status} after {record.epochs_done} of {record.epochs} epochs in "
                 f"{format_seconds(record.train_seconds)}"]
        if results.needs_evaluation:
            lines.append("This run has no test metrics yet (it was interrupted, or its evaluation was skipped): "
                         "<b>Evaluate now</b> evaluates its saved model on the whole test split.")
        else:
            split = results.split
            lines.append(
                f"{split.capitalize()} accuracy <b>{metrics['accuracy']:.2%}</b> · loss {metrics['loss']:.4f} · "
                f"top-5 {metrics['top5_accuracy']:.2%} · macro F1 {metrics['macro']['f1']:.4f} · "
                f"{metrics['images']:,} {split} images"
                + ("" if split == "test" else " (the dataset has no test split)"))
            plain = metrics.get("without_tta")
            if isinstance(plain, dict) and "accuracy" in plain:
                lines.append(f"With test-time flip averaging, as Classify predicts; without it (plain Keras' "
                             f"predict on model.h5): accuracy {plain['accuracy']:.2%} · loss {plain['loss']:.4f}")
        lines.append(f"{record.params_total:,} parameters ({record.params_trainable:,} trainable) · "
                     f"preset {_html(record.preset or 'none')} · {t.optimizer} lr {t.learning_rate:g}, batch "
                     f"{t.batch_size}, {t.epochs} epoch{'' if t.epochs == 1 else 's'}, augmentation "
                     f"{t.augmentation} · data {_html(record.dataset)}")
        if t.validation_steps:
            lines.append(f"Validation during training was a partial estimate ({t.validation_steps} batches an "
                         "epoch); the figures above are on the whole split.")
        if results.images_note:
            lines.append(f"<span style='color:#b35900'>{_html(results.images_note)}</span>")
        self.summary.setText("<br>".join(lines))
        self.summary.setProperty("error", False)

    def _show_history(self, results) -> None:
        validation = "validation (partial estimate)" if results.config.training.validation_steps else "validation"
        for plot in (self.loss_plot, self.accuracy_plot):
            plot.show_history(results.history, results.record.best_epoch,
                              "val_accuracy" if "val_accuracy" in results.history else "accuracy", validation)

    def _show_per_class(self, results) -> None:
        from engine.evaluation import per_class_table

        rows = per_class_table(results, averages=True)
        classes = [row for row in rows if not row.get("average")]
        self.per_class.setSortingEnabled(False)
        self.per_class.setRowCount(len(classes))
        for index, row in enumerate(classes):
            self.per_class.setItem(index, 0, QTableWidgetItem(row["class"]))
            for column, key in enumerate(("precision", "recall", "f1", "support"), start=1):
                value = row[key]
                item = QTableWidgetItem()
                item.setData(Qt.DisplayRole, int(value) if key == "support" else round(float(value), 4))
                item.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter)
                self.per_class.setItem(index, column, item)
        self.per_class.setSortingEnabled(True)
        self.per_class.sortByColumn(0, Qt.AscendingOrder)
        self.per_class.resizeColumnsToContents()
        self.averages.setText(" · ".join(
            f"{row['class']}: precision {row['precision']:.4f}, recall {row['recall']:.4f}, F1 {row['f1']:.4f}"
            for row in rows if row.get("average")))

    def _show_most_confused(self, results) -> None:
        from engine.evaluation import most_confused

        self.confused.clear()
        names = list(results.class_names)
        for true_name, predicted_name, count in most_confused(results.confusion, names, top=20):
            item = QListWidgetItem(f"{true_name} → {predicted_name}: {count:,}")
            item.setData(Qt.UserRole, (names.index(true_name), names.index(predicted_name)))
            self.confused.addItem(item)

    # --- the gallery --------------------------------------------------------

    def show_selection(self, kind: str, cls=None) -> np.ndarray:
        """Show a selection of the test images in the gallery; returns its rows."""
        from engine.evaluation import select

        results = self.results
        if results is None or results.needs_evaluation:
            return np.zeros(0, dtype=np.int64)
        rows = select(results, kind, cls)
        names = results.class_names
        if kind == "cell":
            title = f"true {names[cls[0]]}, predicted {names[cls[1]]}: {len(rows):,} images"
        elif kind == "true":
            title = f"true class {names[cls]}: {len(rows):,} images"
        elif kind == "predicted":
            title = f"predicted as {names[cls]}: {len(rows):,} images"
        else:
            title = f"{FILTERS[kind].lower()}: {len(rows):,} images"
        self.gallery.show_rows(rows, title)
        index = self.filter.findData(kind if cls is None else f"{kind}:{cls}")
        self.filter.setCurrentIndex(max(index, 0))
        return rows

    def _on_filter_chosen(self, index: int) -> None:
        kind, _, cls = str(self.filter.itemData(index)).partition(":")
        if kind != "chosen":
            self.show_selection(kind, int(cls) if cls else None)

    def _on_cell_clicked(self, true_index: int, predicted_index: int) -> None:
        self.show_selection("cell", (true_index, predicted_index))

    def _on_confused_pair_clicked(self, item: QListWidgetItem) -> None:
        self.show_selection("cell", tuple(item.data(Qt.UserRole)))

    def _on_image_selected(self, row: int) -> None:
        results = self.results
        self._image_row = row
        names = results.class_names
        top = [names[int(i)] for i in results.top_k_indices[row]]
        self.bars.set_probabilities(top, [float(p) for p in results.top_k_probs[row]])
        true_name, predicted_name = names[int(results.y_true[row])], names[int(results.y_pred[row])]
        verdict = "right" if true_name == predicted_name else "wrong"
        self.image_caption.setText(f"Image {int(results.indices[row])} of the {results.split} split: true "
                                   f"{true_name}, predicted {predicted_name} ({verdict}).")
        self.heatmap.clear()
        if results.images is None:
            self.image.setText("(image not available)")
            return
        image = results.images[row]
        self.image.setPixmap(_pixmap(image, LARGE_SIDE))
        self.heatmap.setText("computing…")
        model_path = str(results.model_path)
        self.runner.start(_explain, self._models, model_path, image, int(results.y_pred[row]), lane=EXPLAIN,
                          key="explain", on_done=lambda overlay, row=row: self._on_explained(row, overlay),
                          on_error=self._on_explain_failed)

    def _on_explained(self, row: int, explained) -> None:
        if row != self._image_row:
            return
        overlay, layer, note = explained
        self.heatmap.setPixmap(_pixmap(overlay, LARGE_SIDE))
        self.heatmap.setToolTip(f"Grad-CAM (HiResCAM) of the predicted class at layer {layer} "
                                "(red: where it looked most).")
        if note:
            self.image_caption.setText(self.image_caption.text() + f" Grad-CAM: {note}")

    def _on_explain_failed(self, exc: BaseException) -> None:
        self.heatmap.setText("no heatmap")
        self.heatmap.setToolTip(str(exc))
        self.image_caption.setText(self.image_caption.text() + f" Grad-CAM: {exc}")

    # --- export -------------------------------------------------------------

    def export(self, what: str, path: Path | None = None) -> None:
        """Save one of EXPORTS; without a path, ask for one with a file dialog."""
        title, suffix = EXPORTS[what]
        if path is None:
            name = f"{self.results.record.name} {what.rsplit('_', 1)[0]}{suffix}".replace("/", "-")
            chosen, _ = QFileDialog.getSaveFileName(self, f"Export the {title}", name, f"*{suffix}")
            if not chosen:
                return
            path = Path(chosen)
        writers = {
            "confusion_csv": lambda: self.confusion.export_csv(path),
            "confusion_png": lambda: self.confusion.export_png(path),
            "curves_png": lambda: self.export_curves_png(path),
            "selection_csv": lambda: self.gallery.export_csv(path),
            "per_class_csv": lambda: self.export_per_class_csv(path),
        }
        try:
            check_output_file(path, title)  # a folder, a missing folder, no permission: said before writing
            writers[what]()
            if not path.exists():
                _raise_unwritable(path)
        except EngineError as exc:
            self._say(f"Cannot export the {title}: {exc}", error=True)
            return
        except OSError as exc:
            self._say(f"Could not write {path}: {exc.strerror or exc}", error=True)
            return
        self._say(f"Saved {path}.")

    def export_curves_png(self, path: Path) -> None:
        """The loss and accuracy plots one above the other, as pyqtgraph renders them.

        pyqtgraph's exporter rather than QWidget.grab: grabbing a plot that was
        never shown (a tab not opened yet) crashed Qt's offscreen platform.
        """
        from pyqtgraph.exporters import ImageExporter

        images = [ImageExporter(plot.plotItem).export(toBytes=True) for plot in (self.loss_plot, self.accuracy_plot)]
        combined = QImage(max(i.width() for i in images), sum(i.height() for i in images), QImage.Format_RGB32)
        combined.fill(Qt.white)
        painter = QPainter(combined)
        top = 0
        for image in images:
            painter.drawImage(0, top, image)
            top += image.height()
        painter.end()
        if not combined.save(str(path), "PNG"):
            _raise_unwritable(path)

    def export_per_class_csv(self, path: Path) -> None:
        """Precision, recall, F1 and support per class, then the macro and weighted averages."""
        from engine.evaluation import per_class_table

        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["class", "precision", "recall", "f1", "support"])
            for row in per_class_table(self.results, averages=True):
                writer.writerow([row["class"], row["precision"], row["recall"], row["f1"], row["support"]])

    def _say(self, text: str, error: bool = False) -> None:
        self.message.emit(text)
        if error or self.results is None:
            self.summary.setText(_html(text))
            self.summary.setProperty("error", error)
            self.summary.style().unpolish(self.summary)
            self.summary.style().polish(self.summary)


def _load_results(state: TaskState, run_id: str):
    from engine.evaluation import load_results
    from engine.runs import RunStore

    return load_results(RunStore(), run_id, report=state.set_partial_result, should_stop=state.should_stop)


def _evaluate_and_load(state: TaskState, run_id: str):
    from engine.datasets import load_dataset
    from engine.evaluation import evaluate_run, load_results
    from engine.runs import RunStore

    store = RunStore()
    dataset = load_dataset(store.config(run_id).dataset, report=state.set_partial_result,
                           should_stop=state.should_stop)
    if evaluate_run(store, run_id, dataset=dataset, report=state.set_partial_result,
                    should_stop=state.should_stop) is None:
        return None  # cancelled: a newer request or the window closing
    return load_results(store, run_id, dataset=dataset, report=state.set_partial_result,
                        should_stop=state.should_stop)


def _explain(state: TaskState, models: dict, model_path: str, image: np.ndarray, class_index: int):
    """The Grad-CAM overlay of one image (uint8 RGB), the layer it used and a note when the map is empty."""
    from engine.explain import grad_cam, overlay
    from engine.inference import load_model_safely

    if model_path not in models:
        models.clear()  # one model at a time: a ResNet50 is 100 MB
        models[model_path] = load_model_safely(model_path)
    cam = grad_cam(models[model_path], image, class_index)
    return overlay(image, cam.heatmap), cam.layer_name, cam.note


def _raise_unwritable(path: Path) -> None:
    raise OSError(f"cannot write {path}")


def _html(text: str) -> str:
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _pixmap(image: np.ndarray, side: int) -> QPixmap:
    """A uint8 HxWx3 image as a pixmap scaled up to side x side (pixels kept sharp)."""
    image = np.ascontiguousarray(image[..., :3] if image.ndim == 3 else image, dtype=np.uint8)
    height, width = image.shape[:2]
    if image.ndim == 2 or image.shape[2] == 1:
        qimage = QImage(image.data, width, height, width, QImage.Format_Grayscale8)
    else:
        qimage = QImage(image.data, width, height, 3 * width, QImage.Format_RGB888)
    return QPixmap.fromImage(qimage.copy()).scaled(side, side, Qt.KeepAspectRatio, Qt.FastTransformation)
