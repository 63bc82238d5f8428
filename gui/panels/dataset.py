"""The Dataset panel: where the images come from, and what was loaded.

Shows DatasetConfig and, once it is loaded, the Dataset: split sizes, a bar
chart of images per class and a grid of sample images with their labels.
Loading runs on the task runner (the latest Load wins); the panel shows its
progress (downloads included) and any error in plain words.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QImage, QPixmap
from PySide6.QtWidgets import (
    QFileDialog, QFormLayout, QGridLayout, QHBoxLayout, QLabel, QProgressBar, QPushButton,
    QVBoxLayout, QWidget,
)

from engine.config import DatasetConfig, RunConfig
from engine.errors import EngineError
from gui.concurrent import TaskRunner, TaskState
from gui.panels.forms import (
    ChoiceField, NumberField, TextField, connect_fields, mark, mark_fields, read_fields, write_fields,
)

ON_DISK = ("cifar10_archive", "folder")
SAMPLE_COLUMNS = 8
SAMPLE_ROWS = 2
SAMPLE_SIDE = 40
SPLIT_COLORS = {"train": "#4c78a8", "validation": "#f58518", "test": "#54a24b"}


class DatasetPanel(QWidget):
    """Edits the dataset settings, loads them off the GUI thread and shows the data.

    `loaded` is emitted with the Dataset once it is shown, `failed` with the
    message shown when it could not be loaded; `changed` on every edit of the
    settings.
    """

    changed = Signal()
    loaded = Signal(object)
    failed = Signal(str)

    def __init__(self, runner: TaskRunner, parent: QWidget | None = None):
        super().__init__(parent)
        self.runner = runner
        self.dataset = None
        self.loaded_config: DatasetConfig | None = None
        self._loading = False
        self._load_task = None
        self._rng = np.random.default_rng()

        d = "dataset."
        self.source = ChoiceField(d + "source")
        self.path = TextField(d + "path")
        self.browse_button = QPushButton("Browse…")
        self.browse_button.clicked.connect(self._on_browse_clicked)
        self.train_subset = NumberField(d + "train_subset")
        self.test_subset = NumberField(d + "test_subset")
        self.validation_split = NumberField(d + "validation_split")
        self.image_size = NumberField(d + "image_size")
        self.seed = NumberField(d + "seed")
        self.fields = [
            self.source, self.path, self.train_subset, self.test_subset, self.validation_split,
            self.image_size, self.seed,
        ]

        self.load_button = QPushButton("Load")
        self.load_button.setToolTip("Load the dataset now to see it (Train loads it anyway).")
        self.load_button.clicked.connect(self._on_load_clicked)
        self.progress = QProgressBar()
        self.progress.setTextVisible(False)
        self.progress.setMaximumHeight(10)
        self.progress.hide()
        self.status = QLabel("Not loaded yet.")
        self.status.setObjectName("status")
        self.status.setWordWrap(True)
        self.warning = QLabel()  # what is odd about the loaded dataset
        self.warning.setObjectName("warning")
        self.warning.setWordWrap(True)
        self.warning.setStyleSheet("color: #a05a00;")
        self.warning.hide()
        self.sizes = QLabel()
        self.sizes.setWordWrap(True)
        self.sizes.setTextFormat(Qt.RichText)

        self.class_chart = pg.PlotWidget()
        self.class_chart.setMenuEnabled(False)
        self.class_chart.setMouseEnabled(False, False)
        self.class_chart.hideButtons()
        self.class_chart.setFixedHeight(150)
        self.class_chart.invertY(True)
        self.class_chart.setToolTip("Images per class in each split (the colours of the line above).")
        self.class_bars: dict[str, pg.BarGraphItem] = {}
        for split, color in SPLIT_COLORS.items():
            bars = pg.BarGraphItem(x0=[], y=[], height=0.7, width=[], brush=color, pen=None)
            self.class_chart.addItem(bars)
            self.class_bars[split] = bars

        self.sample_images: list[QLabel] = []
        self.sample_captions: list[QLabel] = []
        samples = QGridLayout()
        samples.setSpacing(2)
        for index in range(SAMPLE_COLUMNS * SAMPLE_ROWS):
            row, column = divmod(index, SAMPLE_COLUMNS)
            image = QLabel()
            image.setFixedSize(SAMPLE_SIDE, SAMPLE_SIDE)
            image.setAlignment(Qt.AlignCenter)
            caption = QLabel()
            caption.setObjectName("caption")
            caption.setAlignment(Qt.AlignHCenter | Qt.AlignTop)
            caption.setFixedWidth(SAMPLE_SIDE + 4)
            samples.addWidget(image, row * 2, column, Qt.AlignHCenter)
            samples.addWidget(caption, row * 2 + 1, column, Qt.AlignHCenter)
            self.sample_images.append(image)
            self.sample_captions.append(caption)
        self.shuffle_button = QPushButton("Shuffle")
        self.shuffle_button.setToolTip("Show other training images.")
        self.shuffle_button.clicked.connect(self.show_samples)

        path_row = QHBoxLayout()
        path_row.addWidget(self.path, 1)
        path_row.addWidget(self.browse_button)
        form = QFormLayout()
        form.addRow("Source", self.source)
        form.addRow("Path", path_row)
        subsets = QHBoxLayout()
        subsets.addWidget(QLabel("train"))
        subsets.addWidget(self.train_subset)
        subsets.addWidget(QLabel("test"))
        subsets.addWidget(self.test_subset)
        subsets.addWidget(QLabel("size"))
        subsets.addWidget(self.image_size)
        form.addRow("Images", subsets)
        split_row = QHBoxLayout()
        split_row.addWidget(self.validation_split)
        split_row.addWidget(QLabel("seed"))
        split_row.addWidget(self.seed)
        form.addRow("Validation split", split_row)
        load_row = QHBoxLayout()
        load_row.addWidget(self.load_button)
        load_row.addWidget(self.progress, 1)
        sample_header = QHBoxLayout()
        sample_header.addWidget(QLabel("Samples"))
        sample_header.addStretch(1)
        sample_header.addWidget(self.shuffle_button)

        self.data_view = QWidget()
        data_layout = QVBoxLayout(self.data_view)
        data_layout.setContentsMargins(0, 0, 0, 0)
        data_layout.addWidget(self.sizes)
        data_layout.addWidget(self.class_chart)
        data_layout.addLayout(sample_header)
        data_layout.addLayout(samples)
        self.data_view.hide()
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(load_row)
        layout.addWidget(self.status)
        layout.addWidget(self.warning)
        layout.addWidget(self.data_view)
        layout.addStretch(1)

        connect_fields(self.fields, self._on_field_changed)
        self._update_enabled()

    # --- settings -----------------------------------------------------------

    def set_config(self, config: RunConfig) -> None:
        read_fields(self.fields, config)
        self._on_field_changed()

    def write_into(self, config: RunConfig) -> dict[str, str]:
        config.dataset = DatasetConfig()
        return write_fields(self.fields, config)

    def show_problems(self, problems: dict[str, str]) -> None:
        mark_fields(self.fields, problems)
        mark(self.load_button, problems.get("dataset"))

    def dataset_for(self, config: DatasetConfig):
        """The loaded Dataset if it was loaded with these settings, else None."""
        return self.dataset if self.dataset is not None and config == self.loaded_config else None

    # --- loading ------------------------------------------------------------

    def load(self) -> bool:
        """Load the dataset as configured; False (and the reason shown) if the
        settings cannot be read."""
        config = RunConfig()
        problems = self.write_into(config)
        if problems:
            self._show_status(next(iter(problems.values())), error=True)
            return False
        self._loading = True
        self._update_enabled()
        self.progress.setRange(0, 0)
        self.progress.show()
        self._show_status("Loading…")
        self._load_task = self.runner.start(
            _load_dataset, copy.deepcopy(config.dataset), key="dataset", on_partial=self._on_dataset_stage,
            on_done=self._on_dataset_loaded, on_error=self._on_dataset_failed, on_cancelled=self._on_load_cancelled)
        return True

    def cancel_loading(self) -> None:
        """Stop the load in progress; the dataset loaded before (if any) stays."""
        if self._loading and self._load_task is not None:
            self._load_task.cancel()
            self._show_status("Cancelling…")

    def open_dataset(self) -> None:
        """Ask for a folder (an image folder or an extracted CIFAR-10 archive) and load it."""
        folder = QFileDialog.getExistingDirectory(self, "Open dataset", self.path.text())
        if not folder:
            return
        extracted_cifar = (Path(folder) / "data_batch_1").exists() or (Path(folder) / "cifar-10-batches-py").exists()
        self.source.set_value("cifar10_archive" if extracted_cifar else "folder")
        self.path.setText(folder)
        self.load()

    def _on_load_clicked(self) -> None:
        if self._loading:
            self.cancel_loading()
        else:
            self.load()

    def _on_load_cancelled(self) -> None:
        self._finish_loading()
        self._show_status("Loading was cancelled." if self.dataset is None else
                          "Loading was cancelled; the dataset loaded before is still the one shown.")

    def _on_dataset_stage(self, event) -> None:
        if event.fraction is None:
            self.progress.setRange(0, 0)
        else:
            self.progress.setRange(0, 1000)
            self.progress.setValue(int(event.fraction * 1000))
        self._show_status(event.text)

    def show_loaded(self, dataset, config: DatasetConfig) -> bool:
        """Show data loaded elsewhere (by a run) as if Load had loaded it, and keep it for the next run;
        only where the fields still ask for those settings and no Load is going. True if it is shown."""
        current = RunConfig()
        if self._loading or self.write_into(current) or current.dataset != config:
            return False
        self._on_dataset_loaded((dataset, config))
        return True

    def _on_dataset_loaded(self, result) -> None:
        dataset, config = result
        self._finish_loading()
        self.dataset = dataset
        self.loaded_config = config
        self._show_status(getattr(dataset, "description", "") or "Loaded.")
        warnings = dataset.warnings()
        self.warning.setText("\n".join(f"⚠ {text}" for text in warnings))
        self.warning.setVisible(bool(warnings))
        splits = (("train", dataset.y_train), ("validation", dataset.y_val), ("test", dataset.y_test))
        self.sizes.setText(
            " · ".join(f"<span style='color:{SPLIT_COLORS[name]}'>■</span> {len(labels):,} {name}"
                       for name, labels in splits)
            + f" · {dataset.num_classes} classes of {'x'.join(str(n) for n in dataset.image_shape)}"
        )
        self._show_class_counts(dataset)
        self.show_samples()
        self.data_view.show()
        self.loaded.emit(dataset)

    def _on_dataset_failed(self, exc: BaseException) -> None:
        # An unreadable file can raise anything; say so plainly.
        if self._load_task is not None and self._load_task.state.should_stop():  # the loader's way to stop
            self._on_load_cancelled()
            return
        message = str(exc) if isinstance(exc, EngineError) else f"Could not load the dataset: {exc}"
        self._finish_loading()
        self._show_status(message, error=True)
        self.failed.emit(message)

    # --- what was loaded ----------------------------------------------------

    def _show_class_counts(self, dataset) -> None:
        classes = dataset.num_classes
        left = np.zeros(classes)
        rows = np.arange(classes)
        for split, labels in (("train", dataset.y_train), ("validation", dataset.y_val), ("test", dataset.y_test)):
            counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=classes)[:classes]
            self.class_bars[split].setOpts(x0=left.copy(), y=rows, width=counts, height=0.7)
            left += counts
        step = max(1, classes // 12)
        names = list(dataset.class_names)
        self.class_chart.getAxis("left").setTicks([[(i, names[i]) for i in range(0, classes, step)], []])
        self.class_chart.setYRange(-0.6, classes - 0.4, padding=0)
        self.class_chart.setXRange(0, float(left.max()) * 1.05 or 1, padding=0)

    def show_samples(self) -> None:
        """Show randomly chosen training images with their class names."""
        if self.dataset is None:
            return
        images, labels, names = self.dataset.x_train, self.dataset.y_train, self.dataset.class_names
        count = min(len(labels), len(self.sample_images))
        chosen = self._rng.choice(len(labels), size=count, replace=False) if count else []
        for cell, index in enumerate(chosen):
            name = str(names[int(labels[index])])
            self.sample_images[cell].setPixmap(_pixmap(images[index], SAMPLE_SIDE))
            self.sample_images[cell].setToolTip(name)
            metrics = self.sample_captions[cell].fontMetrics()
            self.sample_captions[cell].setText(metrics.elidedText(name, Qt.ElideRight, SAMPLE_SIDE + 4))
        for cell in range(count, len(self.sample_images)):
            self.sample_images[cell].clear()
            self.sample_captions[cell].clear()

    # --- helpers ------------------------------------------------------------

    def _on_field_changed(self) -> None:
        self._update_enabled()
        if self.dataset is not None and not self._loading:
            config = RunConfig()
            if not self.write_into(config) and config.dataset != self.loaded_config:
                self._show_status("The settings changed since loading: Load shows the new data "
                                  "(Train loads it anyway).")
            elif config.dataset == self.loaded_config:
                self._show_status(getattr(self.dataset, "description", "") or "Loaded.")
        self.changed.emit()

    def _finish_loading(self) -> None:
        self._loading = False
        self.progress.hide()
        self._update_enabled()

    def _update_enabled(self) -> None:
        on_disk = self.source.value() in ON_DISK
        self.path.setEnabled(on_disk)
        self.browse_button.setEnabled(on_disk)
        self.image_size.setEnabled(self.source.value() == "folder")
        self.load_button.setText("Cancel" if self._loading else "Load")
        self.load_button.setToolTip("Stop loading." if self._loading else
                                    "Load the dataset now to see it (Train loads it anyway).")

    def _show_status(self, text: str, error: bool = False) -> None:
        self.status.setText(text)
        if self.status.property("error") != error:
            self.status.setProperty("error", error)
            self.status.style().unpolish(self.status)
            self.status.style().polish(self.status)

    def _on_browse_clicked(self) -> None:
        if self.source.value() == "cifar10_archive":
            path, _ = QFileDialog.getOpenFileName(
                self, "CIFAR-10 archive", self.path.text(), "CIFAR-10 python archive (*.tar.gz *.tgz);;All files (*)"
            )
        else:
            path = QFileDialog.getExistingDirectory(self, "Image folder", self.path.text())
        if path:
            self.path.setText(path)


def _load_dataset(state: TaskState, config: DatasetConfig):
    from engine.datasets import load_dataset

    return load_dataset(config, report=state.set_partial_result, should_stop=state.should_stop), config


def _pixmap(image: np.ndarray, side: int) -> QPixmap:
    """A uint8 HxWx3 (or HxWx1) image as a pixmap scaled to fit side x side."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    height, width = image.shape[:2]
    if image.ndim == 2 or image.shape[2] == 1:
        qimage = QImage(image.data, width, height, width, QImage.Format_Grayscale8)
    else:
        qimage = QImage(image.data, width, height, 3 * width, QImage.Format_RGB888)
    pixmap = QPixmap.fromImage(qimage.copy())
    return pixmap.scaled(side, side, Qt.KeepAspectRatio, Qt.SmoothTransformation)
