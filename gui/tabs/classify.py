"""The Classify tab: open one or two saved models and classify pictures with them.

A model comes from a file (the Open button, File > Open model…, or a
.h5/.keras file dropped on the tab) or from a run of the run store. Pictures
come by drag and drop or a file dialog, files or folders; a folder can also
go to a CSV. Each picture is a row of one table model (its thumbnail, then
model A's top-5, then model B's), so thousands of rows cost one view, and
when both models are open the rows where they disagree are highlighted.

Nothing here calls Keras: opening a model and classifying run as tasks on
the task runner, the work being engine.inference's. Classifying goes a
chunk at a time (decode, predict, hand over), so rows fill in as the results
come, Cancel stops between chunks, and the thumbnails arrive from the task
as small uint8 arrays that become pixmaps only when a row is painted.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
from PySide6.QtCore import QAbstractTableModel, QModelIndex, QSize, Qt, Signal
from PySide6.QtGui import QColor, QDragEnterEvent, QDropEvent, QImage, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView, QComboBox, QFileDialog, QGroupBox, QHBoxLayout, QHeaderView, QLabel, QProgressBar,
    QPushButton, QTableView, QVBoxLayout, QWidget,
)

from engine.errors import EngineError
from engine.inference import (
    PREPROCESSING_CHOICES, PREPROCESSING_LABELS, TOP_K, BatchTally, Prediction, check_csv_path, is_model_file,
)
from gui.concurrent import Task, TaskRunner, TaskState

SLOTS = ("A", "B")
CLASSIFY_LANE = "classify"  # predicting: one job after another on one thread
OPEN_LANE = "classify-open"  # loading a model, so it never waits behind a long job
FILES_LANE = "classify-files"  # listing folders (no Keras), so a drop never waits behind a model
JOB_KEY = "classify-job"  # a newer job replaces a running one: it covers every row still without a result
THUMBNAIL = 48
ROW_HEIGHT = THUMBNAIL + 8
PIXMAP_CACHE = 600  # pixmaps kept for rows painted lately; the rest are rebuilt from their arrays when shown
DISAGREE_COLOR = QColor(255, 214, 153)
ERROR_COLOR = QColor(170, 20, 20)
MODEL_FILTER = "Keras models (*.keras *.h5 *.hdf5)"
IMAGE_FILTER = "Images (*.jpg *.jpeg *.png *.bmp *.gif *.webp *.tif *.tiff *.ppm *.pgm);;All files (*)"


class SlotResults:
    """One model's answers for every row, held as arrays.

    A handful of objects however many rows: per-row Python objects (a
    Prediction and two lists each) would be tens of thousands of long-lived
    objects for a large folder, enough to set off full garbage collections
    while a job runs, and a full collection with Keras loaded holds the GIL,
    and so the window, for a few hundred milliseconds.
    """

    def __init__(self, class_names: list[str], rows: int):
        self.class_names = list(class_names)
        self._index = {name: i for i, name in enumerate(self.class_names)}
        self.classes = np.full((rows, TOP_K), -1, np.int32)
        self.probabilities = np.zeros((rows, TOP_K), np.float64)
        self.done = np.zeros(rows, bool)
        self.errors: dict[int, str] = {}

    def grow(self, rows: int) -> None:
        extra = rows - len(self.done)
        self.classes = np.concatenate([self.classes, np.full((extra, TOP_K), -1, np.int32)])
        self.probabilities = np.concatenate([self.probabilities, np.zeros((extra, TOP_K), np.float64)])
        self.done = np.concatenate([self.done, np.zeros(extra, bool)])

    def store(self, row: int, prediction: Prediction) -> None:
        self.done[row] = True
        self.classes[row] = -1
        self.errors.pop(row, None)
        if prediction.error:
            self.errors[row] = prediction.error
        count = len(prediction.labels)
        self.classes[row, :count] = [self._index[name] for name in prediction.labels]
        self.probabilities[row, :count] = prediction.probabilities

    def prediction(self, row: int, path: str) -> Prediction | None:
        """The answer for `row` as the engine gave it, or None before it came."""
        if not self.done[row]:
            return None
        known = [i for i in self.classes[row] if i >= 0]
        return Prediction(path, [self.class_names[i] for i in known],
                          [float(p) for p in self.probabilities[row, :len(known)]], self.errors.get(row, ""))

    def top(self, row: int) -> str:
        index = self.classes[row, 0]
        return self.class_names[index] if index >= 0 else ""


class PictureTable(QAbstractTableModel):
    """The pictures and their predictions: column 0 the picture, then one column per model slot."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.paths: list[str] = []
        self.thumbnails: list[np.ndarray | None] = []
        self.slots: dict[str, SlotResults] = {}
        self.slot_titles: dict[str, str] = {}
        self._pixmaps: OrderedDict[int, QPixmap] = OrderedDict()
        self._disagree = np.zeros(0, bool)

    # --- Qt's model interface --------------------------------------------

    def rowCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.paths)

    def columnCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else 1 + len(SLOTS)

    def headerData(self, section: int, orientation, role=Qt.DisplayRole):
        if orientation != Qt.Horizontal or role != Qt.DisplayRole:
            return None
        if section == 0:
            return "Picture"
        slot = SLOTS[section - 1]
        return self.slot_titles.get(slot, f"Model {slot}")

    def data(self, index: QModelIndex, role=Qt.DisplayRole):
        return self._cell(index.row(), index.column()).get(role) if index.isValid() else None

    def multiData(self, index: QModelIndex, roles) -> None:
        """Every role the delegate asks for, in one Python call per cell instead of one per role.

        While a job runs Python on its thread, each call from Qt into Python
        waits for the GIL (up to the switch interval); painting a screenful
        of cells role by role made that a wait of tens of milliseconds.
        """
        if not index.isValid():
            return
        cell = self._cell(index.row(), index.column())
        for item in roles:
            value = cell.get(item.role())
            if value is None:
                item.clearData()  # the span may hold another cell's value (the disagreement colour of the row above)
            else:
                item.setData(value)

    def _cell(self, number: int, column: int) -> dict:
        """A cell's values by role."""
        cell = {Qt.BackgroundRole: DISAGREE_COLOR} if self._disagree[number] else {}
        if column == 0:
            cell.update({Qt.DisplayRole: Path(self.paths[number]).name, Qt.ToolTipRole: self.paths[number],
                         Qt.DecorationRole: self._pixmap(number)})
            return cell
        slot = SLOTS[column - 1]
        prediction = self.prediction(number, slot)
        cell[Qt.DisplayRole] = cell_text(prediction, slot in self.slots)
        if prediction is not None:
            cell[Qt.ToolTipRole] = prediction.error or "\n".join(
                f"{name}: {p:.2%}" for name, p in zip(prediction.labels, prediction.probabilities))
            if prediction.error:
                cell[Qt.ForegroundRole] = ERROR_COLOR
        return cell

    # --- reading ----------------------------------------------------------

    def prediction(self, row: int, slot: str) -> Prediction | None:
        """Model `slot`'s answer for `row`, or None (no such model, or not classified yet)."""
        results = self.slots.get(slot)
        return results.prediction(row, self.paths[row]) if results is not None else None

    def pending(self, slots) -> list[int]:
        """Rows that lack an answer from any of `slots`."""
        missing = np.zeros(len(self.paths), bool)
        for slot in slots:
            missing |= ~self.slots[slot].done
        return np.flatnonzero(missing).tolist()

    def disagreeing(self) -> set[int]:
        """Rows that both models classified with different top classes."""
        return set(np.flatnonzero(self._disagree).tolist())

    def compared(self) -> int:
        """How many rows both models classified."""
        if not all(slot in self.slots for slot in SLOTS):
            return 0
        a, b = (self.slots[slot] for slot in SLOTS)
        return int(np.count_nonzero((a.classes[:, 0] >= 0) & (b.classes[:, 0] >= 0)))

    # --- changes --------------------------------------------------------

    def append(self, paths: list[str]) -> range:
        """Add rows for these files (without results yet); returns their row numbers."""
        first = len(self.paths)
        if not paths:
            return range(first, first)
        self.beginInsertRows(QModelIndex(), first, first + len(paths) - 1)
        self.paths.extend(paths)
        self.thumbnails.extend([None] * len(paths))
        for results in self.slots.values():
            results.grow(len(self.paths))
        self._disagree = np.concatenate([self._disagree, np.zeros(len(paths), bool)])
        self.endInsertRows()
        return range(first, len(self.paths))

    def clear(self) -> None:
        self.beginResetModel()
        self.paths.clear()
        self.thumbnails.clear()
        self.slots = {slot: SlotResults(results.class_names, 0) for slot, results in self.slots.items()}
        self._disagree = np.zeros(0, bool)
        self._pixmaps.clear()
        self.endResetModel()

    def open_slot(self, slot: str, class_names: list[str], title: str) -> None:
        """A new model in `slot`: its column titled, any answers of the model before it dropped."""
        self.slots[slot] = SlotResults(class_names, len(self.paths))
        self.slot_titles[slot] = title
        self._changed_all(slot)

    def close_slot(self, slot: str) -> None:
        self.slots.pop(slot, None)
        self.slot_titles.pop(slot, None)
        self._changed_all(slot)

    def set_results(self, rows: list[int], results: dict[str, list[Prediction]],
                    thumbnails: list[np.ndarray | None]) -> None:
        """Store a chunk's answers (and thumbnails) on its rows and repaint only those rows."""
        for slot, predictions in results.items():
            stored = self.slots[slot]
            for number, prediction in zip(rows, predictions):
                stored.store(number, prediction)
        for number, thumbnail in zip(rows, thumbnails):
            if thumbnail is not None and self.thumbnails[number] is None:
                self.thumbnails[number] = thumbnail
        if rows:
            self._update_disagreement()
            self.dataChanged.emit(self.index(min(rows), 0), self.index(max(rows), self.columnCount() - 1))

    def _changed_all(self, slot: str) -> None:
        self._update_disagreement()
        section = 1 + SLOTS.index(slot)
        self.headerDataChanged.emit(Qt.Horizontal, section, section)
        if self.paths:
            self.dataChanged.emit(self.index(0, 0), self.index(len(self.paths) - 1, self.columnCount() - 1))

    def _update_disagreement(self) -> None:
        """Compare top classes by name, so two models with their classes in different orders still compare."""
        self._disagree = np.zeros(len(self.paths), bool)
        if not all(slot in self.slots for slot in SLOTS):
            return
        a, b = (self.slots[slot] for slot in SLOTS)
        ids = {name: i for i, name in enumerate(dict.fromkeys(a.class_names + b.class_names))}
        a_ids = np.array([ids[name] for name in a.class_names] + [-1])[a.classes[:, 0]]
        b_ids = np.array([ids[name] for name in b.class_names] + [-2])[b.classes[:, 0]]
        self._disagree = (a.classes[:, 0] >= 0) & (b.classes[:, 0] >= 0) & (a_ids != b_ids)

    def _pixmap(self, number: int) -> QPixmap | None:
        """A row's thumbnail as a pixmap, made when the row is first painted and kept while painted often."""
        if number in self._pixmaps:
            self._pixmaps.move_to_end(number)
            return self._pixmaps[number]
        array = self.thumbnails[number]
        if array is None:
            return None
        height, width = array.shape[:2]
        pixels = np.ascontiguousarray(array).tobytes()
        image = QImage(pixels, width, height, 3 * width, QImage.Format_RGB888)
        pixmap = QPixmap.fromImage(image.scaled(THUMBNAIL, THUMBNAIL, Qt.KeepAspectRatio, Qt.SmoothTransformation))
        self._pixmaps[number] = pixmap
        if len(self._pixmaps) > PIXMAP_CACHE:
            self._pixmaps.popitem(last=False)
        return pixmap


def cell_text(prediction: Prediction | None, model_open: bool) -> str:
    """Two lines: the top class with its probability, then the rest of the top 5."""
    if prediction is None:
        return "…" if model_open else ""
    if prediction.error:
        return prediction.error
    pairs = [f"{name} {p:.1%}" for name, p in zip(prediction.labels, prediction.probabilities)]
    return pairs[0] + ("\n" + " · ".join(pairs[1:]) if len(pairs) > 1 else "")


class RunCombo(QComboBox):
    """The run store's runs; read again each time the list opens, so new runs appear."""

    def __init__(self, refresh, parent=None):
        super().__init__(parent)
        self._refresh = refresh
        # Sized by a few words, not by the longest run's name, which would widen the window past the screen.
        self.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(16)

    def showPopup(self) -> None:
        self._refresh(self)
        super().showPopup()


COMBO_CHARACTERS = 12  # a combo box is this many characters wide at least; the window fits 1366x768


class ModelSlot(QGroupBox):
    """One model's controls and description: A, or B beside it for a comparison."""

    def __init__(self, slot: str, parent=None):
        super().__init__(f"Model {slot}", parent)
        self.slot = slot
        self.setObjectName(f"model_{slot}")
        self.open_button = QPushButton("Open model file…")
        self.run_combo: RunCombo | None = None
        self.close_button = QPushButton("Close")
        self.close_button.setEnabled(False)
        self.info = QLabel("No model open. Open a .h5 or .keras file, drop one here, or choose a run.")
        self.info.setObjectName("model_info")
        self.info.setWordWrap(True)
        self.info.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.preprocessing = QComboBox()
        self.preprocessing.setObjectName("preprocessing")
        self.preprocessing.setEnabled(False)
        self.reason = QLabel()
        self.reason.setObjectName("hint")
        self.reason.setWordWrap(True)


class ClassifyTab(QWidget):
    """Classify pictures with one model (A) or two side by side (A and B).

    `status_changed` carries every message of the status line (errors
    included, never a traceback); `model_opened(slot, info)` a model's
    ModelInfo once it is open; `job_finished(outcome)` ends each job of
    classifying ("done", "cancelled" or "error"); `csv_written(path, rows)`
    a finished CSV.
    """

    status_changed = Signal(str)
    model_opened = Signal(str, object)
    job_finished = Signal(str)
    csv_written = Signal(str, int)

    def __init__(self, runner: TaskRunner, parent: QWidget | None = None):
        super().__init__(parent)
        self.runner = runner
        self.classifiers: dict[str, object] = {}  # slot -> engine.inference.Classifier, used only in tasks
        self.job: Task | None = None
        self.job_kind = ""
        self._job_rows = 0
        self._job_done = 0
        self._job_tallies: dict[str, BatchTally] = {}
        self._job_started = 0.0
        self._generation = {slot: 0 for slot in SLOTS}  # bumped when a slot's model changes
        self._rows_generation = 0  # bumped when the table is cleared
        self._more_pending = False
        self.setAcceptDrops(True)

        self.slots = {slot: ModelSlot(slot) for slot in SLOTS}
        for slot, box in self.slots.items():
            box.run_combo = RunCombo(self._fill_runs)
            box.run_combo.setObjectName(f"runs_{slot}")
            for combo in (box.run_combo, box.preprocessing):  # long run names must not widen the window
                combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
                combo.setMinimumContentsLength(COMBO_CHARACTERS)
            self._fill_runs(box.run_combo)
            box.open_button.clicked.connect(lambda _=False, s=slot: self.choose_model_file(s))
            box.run_combo.activated.connect(lambda index, s=slot: self._on_run_chosen(s, index))
            box.close_button.clicked.connect(lambda _=False, s=slot: self.close_model(s))
            box.preprocessing.activated.connect(lambda index, s=slot: self._on_preprocessing_chosen(s, index))
            buttons = QHBoxLayout()
            buttons.addWidget(box.open_button)
            buttons.addWidget(QLabel("or a run:"))
            buttons.addWidget(box.run_combo, 1)
            buttons.addWidget(box.close_button)
            scaling = QHBoxLayout()
            scaling.addWidget(QLabel("Preprocessing:"))
            scaling.addWidget(box.preprocessing, 1)
            layout = QVBoxLayout(box)
            layout.addLayout(buttons)
            layout.addWidget(box.info)
            layout.addLayout(scaling)
            layout.addWidget(box.reason)
            layout.addStretch(1)

        self.add_files_button = QPushButton("Add pictures…")
        self.add_folder_button = QPushButton("Add a folder…")
        self.csv_button = QPushButton("Folder to CSV…")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.clear_button = QPushButton("Clear")
        self.add_files_button.clicked.connect(self._on_add_files_clicked)
        self.add_folder_button.clicked.connect(self._on_add_folder_clicked)
        self.csv_button.clicked.connect(self._on_csv_clicked)
        self.cancel_button.clicked.connect(self.cancel)
        self.clear_button.clicked.connect(self.clear_images)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setValue(0)
        self.progress.setFormat("idle")
        self.speed = QLabel()
        self.speed.setObjectName("speed")
        self.disagreement = QLabel()
        self.disagreement.setObjectName("disagreement")
        self.status = QLabel("Drop pictures or folders here (or a model file), or use the buttons.")
        self.status.setObjectName("status")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextSelectableByMouse)

        self.pictures = PictureTable(self)
        self.table = QTableView()
        self.table.setObjectName("pictures")
        self.table.setModel(self.pictures)
        self.table.setIconSize(QSize(THUMBNAIL, THUMBNAIL))
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.setWordWrap(True)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.Fixed)  # no per-row measuring
        self.table.verticalHeader().setDefaultSectionSize(ROW_HEIGHT)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.Interactive)
        header.resizeSection(0, 240)
        for column in range(1, 1 + len(SLOTS)):
            header.setSectionResizeMode(column, QHeaderView.Stretch)
        self.table.setColumnHidden(1 + SLOTS.index("B"), True)

        models = QHBoxLayout()
        for box in self.slots.values():
            models.addWidget(box, 1)
        actions = QHBoxLayout()
        for button in (self.add_files_button, self.add_folder_button, self.csv_button, self.clear_button):
            actions.addWidget(button)
        actions.addWidget(self.progress, 1)
        actions.addWidget(self.speed)
        actions.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(models)
        layout.addLayout(actions)
        layout.addWidget(self.status)
        layout.addWidget(self.disagreement)
        layout.addWidget(self.table, 1)

    # --- models -------------------------------------------------------------

    def choose_model_file(self, slot: str = "A") -> None:
        """Ask for a model file (File > Open model… opens it as A), then open it."""
        path, _ = QFileDialog.getOpenFileName(self, f"Open model {slot}", "", MODEL_FILTER)
        if path:
            self.open_model(path, slot)

    def open_model(self, path: str | Path, slot: str = "A") -> None:
        """Open a .h5/.keras file as model `slot` off the GUI thread; the table is classified again with it.

        A file that cannot be opened leaves the slot's current model as it was
        and says why in the status line.
        """
        path = str(path)
        self._say(f"Opening {Path(path).name} as model {slot}…")
        self.runner.start(_open_classifier, path, lane=OPEN_LANE, key=f"classify-open-{slot}",
                          on_done=lambda classifier: self._on_model_opened(slot, classifier),
                          on_error=lambda exc: self._say(_message(exc, f"{Path(path).name} could not be opened")))

    def open_run(self, run_id: str, slot: str = "A") -> None:
        """Open the model a run of the store is evaluated from (its final model, else its checkpoint)."""
        from engine.runs import RunStore

        try:
            path = RunStore().evaluation_model(run_id)
        except EngineError as exc:
            self._say(str(exc))
            return
        self.open_model(path, slot)

    def close_model(self, slot: str) -> None:
        """Forget model `slot` and its answers."""
        if slot not in self.classifiers:
            return
        del self.classifiers[slot]
        self._generation[slot] += 1
        box = self.slots[slot]
        box.info.setText("No model open.")
        box.reason.setText("")
        box.preprocessing.clear()
        box.preprocessing.setEnabled(False)
        box.close_button.setEnabled(False)
        self.pictures.close_slot(slot)
        self._show_columns()
        self._schedule()

    def set_preprocessing(self, slot: str, preprocessing: str) -> None:
        """Feed model `slot` pixels scaled another way (a key of PREPROCESSING_CHOICES) and classify again."""
        classifier = self.classifiers.get(slot)
        if classifier is None or classifier.info.inside or preprocessing == classifier.preprocessing:
            return
        try:
            classifier = classifier.with_preprocessing(preprocessing)
        except EngineError as exc:
            self._say(str(exc))
            return
        self._install(slot, classifier, f"Model {slot} now gets pixels as {PREPROCESSING_LABELS[preprocessing]}.")

    def refresh_runs(self) -> None:
        """Read the run store's runs again into both run lists (the window calls this when a run ends)."""
        for box in self.slots.values():
            self._fill_runs(box.run_combo)

    def _fill_runs(self, combo: QComboBox) -> None:
        from engine.runs import RunStore

        try:
            runs = RunStore().list_runs()
        except EngineError as exc:
            runs = []
            self._say(str(exc))
        chosen = combo.currentData()
        combo.blockSignals(True)
        combo.clear()
        combo.addItem("choose a run…", None)
        for record in reversed(runs):
            accuracy = f"{record.test_accuracy:.1%}" if record.test_accuracy is not None else "not evaluated"
            combo.addItem(f"{record.name or record.run_id} · {record.model} · {record.status} · {accuracy}",
                          record.run_id)
        combo.setCurrentIndex(max(0, combo.findData(chosen)) if chosen else 0)
        combo.blockSignals(False)

    def _on_run_chosen(self, slot: str, index: int) -> None:
        run_id = self.slots[slot].run_combo.itemData(index)
        if run_id:
            self.open_run(run_id, slot)

    def _on_model_opened(self, slot: str, classifier) -> None:
        info = classifier.info
        box = self.slots[slot]
        box.info.setText("\n".join(info.lines()[:-1]))
        box.preprocessing.clear()
        if info.inside:
            box.preprocessing.addItem(PREPROCESSING_LABELS["inside"], "inside")
        else:
            for key in PREPROCESSING_CHOICES:
                default = " (default)" if key == info.preprocessing else ""
                box.preprocessing.addItem(PREPROCESSING_LABELS[key] + default, key)
        box.preprocessing.setEnabled(not info.inside)
        box.close_button.setEnabled(True)
        self._install(slot, classifier, f"Opened {Path(info.path).name} as model {slot}: {info.name}, "
                                        f"{info.num_classes} classes.")
        self.model_opened.emit(slot, info)

    def _install(self, slot: str, classifier, message: str) -> None:
        """Make `classifier` model `slot`: its column, its answers dropped, the table classified again."""
        self.classifiers[slot] = classifier
        self._generation[slot] += 1
        box = self.slots[slot]
        box.preprocessing.setCurrentIndex(max(0, box.preprocessing.findData(classifier.preprocessing)))
        box.reason.setText(_reason(classifier))
        title = f"{slot}: {classifier.info.name} ({Path(classifier.info.path).name})"
        self.pictures.open_slot(slot, classifier.class_names, title)
        self._show_columns()
        self._say(message)
        self._schedule()

    def _on_preprocessing_chosen(self, slot: str, index: int) -> None:
        key = self.slots[slot].preprocessing.itemData(index)
        if key:
            self.set_preprocessing(slot, key)

    def _show_columns(self) -> None:
        self.table.setColumnHidden(1 + SLOTS.index("B"), "B" not in self.classifiers)
        self._show_disagreement()

    # --- pictures -------------------------------------------------------

    def add_images(self, paths) -> None:
        """Add image files and folders (listed off the GUI thread); each becomes a row, then is classified."""
        paths = [str(p) for p in paths]
        if paths:
            self.runner.start(_list_images, paths, lane=FILES_LANE,
                              on_done=self._on_images_listed,
                              on_error=lambda exc: self._say(_message(exc, "The pictures could not be listed")))

    def drop_paths(self, paths, slot: str = "A") -> None:
        """What a drop does: model files open (the first as `slot`), pictures and folders are added."""
        paths = [str(p) for p in paths]
        models = [p for p in paths if is_model_file(p) and not Path(p).is_dir()]
        if models:
            self.open_model(models[0], slot)
            if len(models) > 1 and slot == "A" and "B" not in self.classifiers:
                self.open_model(models[1], "B")
        self.add_images([p for p in paths if p not in set(models)])

    def clear_images(self) -> None:
        """Remove every row; a job still running is asked to stop."""
        if self.job is not None:
            self.job.cancel()
        self._rows_generation += 1
        self.pictures.clear()
        self._show_disagreement()

    def classify_folder_to_csv(self, folder: str | Path, csv_path: str | Path) -> None:
        """Classify every image under `folder` with the open models, writing `csv_path` as results come.

        The path is checked before anything is classified; the folder's
        pictures also become rows of the table.
        """
        if not self.classifiers:
            self._say("Open a model first: the CSV holds a model's classes.")
            return
        if self.job is not None and self.job_kind == "csv":
            self._say("A CSV is being written; wait for it or cancel it first.")
            return
        try:
            target = check_csv_path(csv_path)
        except EngineError as exc:
            self._say(str(exc))
            return
        self._say(f"Listing the pictures of {folder}…")
        self.runner.start(_list_images, [str(folder)], lane=FILES_LANE,
                          on_done=lambda files: self._on_csv_listed(str(folder), str(target), files),
                          on_error=lambda exc: self._say(_message(exc, f"{folder} could not be listed")))

    def cancel(self) -> None:
        """Stop the running job after its current chunk; rows without results stay so."""
        self._more_pending = False
        if self.job is not None:
            self.job.cancel()
            self._say("Cancelling…")

    def _on_images_listed(self, files: list[str]) -> None:
        if not files:
            self._say("No image files there (looked for .jpg, .png, .bmp, .gif, .webp, .tif, .ppm, .pgm).")
            return
        self.pictures.append(files)
        self._show_disagreement()
        if not self.classifiers:
            self._say(f"{len(self.pictures.paths):,} pictures; open a model to classify them.")
        self._schedule()

    def _on_csv_listed(self, folder: str, target: str, files: list[str]) -> None:
        if not files:
            self._say(f"No image files in {folder}.")
            return
        if not self.classifiers:
            self._say("Open a model first: the CSV holds a model's classes.")
            return
        rows = list(self.pictures.append(files))
        self._show_disagreement()
        if self.job is not None and self.job_kind != "csv":
            self._more_pending = True  # the job it replaces had rows left: classified after the CSV
        self._start_job("csv", rows, target, [slot for slot in SLOTS if slot in self.classifiers])

    def _on_add_files_clicked(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Add pictures", "", IMAGE_FILTER)
        self.add_images(paths)

    def _on_add_folder_clicked(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add a folder of pictures")
        if folder:
            self.add_images([folder])

    def _on_csv_clicked(self) -> None:
        if not self.classifiers:
            self._say("Open a model first: the CSV holds a model's classes.")
            return
        folder = QFileDialog.getExistingDirectory(self, "Folder to classify")
        if not folder:
            return
        target, _ = QFileDialog.getSaveFileName(self, "Write the predictions to", str(Path(folder) / "predictions.csv"),
                                                "CSV files (*.csv)")
        if target:
            self.classify_folder_to_csv(folder, target)

    # --- drag and drop ----------------------------------------------------

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dragMoveEvent(self, event) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        paths = [url.toLocalFile() for url in event.mimeData().urls() if url.isLocalFile()]
        if not paths:
            return
        event.acceptProposedAction()
        box = self.slots["B"]
        over_b = box.rect().contains(box.mapFrom(self, event.position().toPoint()))
        self.drop_paths(paths, "B" if over_b else "A")

    # --- jobs -------------------------------------------------------------

    def _schedule(self) -> None:
        """Classify every row still without an answer from an open model.

        A running classify job is replaced (its rows done so far keep their
        answers; the new one covers the rest). A running CSV job goes on with
        the models it started with, so its file stays one consistent table;
        this is done again when it ends.
        """
        if not self.classifiers:
            return
        if self.job is not None and self.job_kind == "csv":
            self._more_pending = True
            return
        rows = self.pictures.pending(self.classifiers)
        if rows:
            lacking = [slot for slot in SLOTS if slot in self.classifiers and self.pictures.pending([slot])]
            self._start_job("classify", rows, None, lacking)

    def _start_job(self, kind: str, rows: list[int], csv_path: str | None, slots: list[str]) -> None:
        classifiers = {slot: self.classifiers[slot] for slot in slots}
        paths = [self.pictures.paths[number] for number in rows]
        token = (dict(self._generation), self._rows_generation)
        self.job_kind = kind
        self._job_rows, self._job_done = len(rows), 0
        self._job_tallies = {slot: BatchTally() for slot in slots}
        self._job_started = time.monotonic()
        self.progress.setValue(0)
        self.progress.setFormat(f"0 of {len(rows):,}")
        self.speed.setText("")
        self.cancel_button.setEnabled(True)
        task = self.runner.start(
            _classify_rows, classifiers, rows, paths, csv_path, lane=CLASSIFY_LANE, key=JOB_KEY,
            on_partial=lambda chunk: self._on_chunk(token, chunk),
            on_progress=self._on_progress,
            on_done=lambda written: self._on_job_ended(task, "done", csv_path, written),
            on_cancelled=lambda: self._on_job_ended(task, "cancelled", csv_path, None),
            on_error=lambda exc: self._on_job_failed(task, exc))
        self.job = task

    def _on_chunk(self, token, chunk: tuple[list[int], dict[str, list[Prediction]], list]) -> None:
        generations, rows_generation = token
        if rows_generation != self._rows_generation:
            return
        rows, results, thumbnails = chunk
        current = {slot: predictions for slot, predictions in results.items()
                   if generations.get(slot) == self._generation[slot]}
        self.pictures.set_results(rows, current, thumbnails)
        for slot, predictions in current.items():
            self._job_tallies[slot].add(predictions)
        self._job_done += len(rows)
        self._show_disagreement()

    def _on_progress(self, fraction: float | None, text: str) -> None:
        self.progress.setValue(int((fraction or 0) * 1000))
        self.progress.setFormat(f"{self._job_done:,} of {self._job_rows:,}")
        self.speed.setText(text)

    def _on_job_ended(self, task: Task, outcome: str, csv_path: str | None, written: int | None) -> None:
        if task is not self.job:
            return
        self.job = None
        self.cancel_button.setEnabled(False)
        seconds = max(time.monotonic() - self._job_started, 1e-6)
        done = self._job_done
        self.progress.setValue(1000 if outcome == "done" else self.progress.value())
        self.progress.setFormat(f"{done:,} of {self._job_rows:,}" + (" (cancelled)" if outcome == "cancelled" else ""))
        self.speed.setText(f"{done / seconds:,.0f} images/s")
        parts = []
        if outcome == "cancelled":
            parts.append(f"Stopped after {done:,} of {self._job_rows:,} images.")
            if csv_path:
                parts.append(f"{Path(csv_path).name} has the {done:,} rows done so far.")
        elif csv_path:
            parts.append(f"Wrote {written:,} rows to {csv_path} in {seconds:.1f} s.")
        else:
            parts.append(f"Classified {done:,} pictures with {self._models_text()} in {seconds:.1f} s.")
        parts.extend(self._job_notes())
        self._say(" ".join(parts))
        if outcome == "done" and csv_path:
            self.csv_written.emit(csv_path, written)
        self.job_finished.emit(outcome)
        if self._more_pending:
            self._more_pending = False
            self._schedule()

    def _on_job_failed(self, task: Task, exc: BaseException) -> None:
        if task is not self.job:
            return
        self.job = None
        self.cancel_button.setEnabled(False)
        self.progress.setFormat("failed")
        self._say(_message(exc, "Classifying failed"))
        self.job_finished.emit("error")

    def _job_notes(self) -> list[str]:
        """What the job's results call for beyond each row's own message: unreadable files, NaN, one class."""
        notes = []
        if self._job_tallies:
            first = next(iter(self._job_tallies.values()))
            if first.unreadable:
                notes.append(f"{first.unreadable:,} could not be read (first: {first.first_error}).")
        for slot, tally in self._job_tallies.items():
            classifier = self.classifiers.get(slot)
            if classifier is not None:
                notes.extend(f"{slot}: {warning}." for warning in tally.warnings(classifier))
        return notes

    def _models_text(self) -> str:
        """The models of the job that just ended: "A", "B" or "A and B"."""
        return " and ".join(slot for slot in SLOTS if slot in self._job_tallies)

    def _show_disagreement(self) -> None:
        compared = self.pictures.compared()
        count = len(self.pictures.disagreeing()) if compared else 0
        self.disagreement.setText(f"A and B disagree on {count:,} of {compared:,} images" if compared else "")

    def _say(self, text: str) -> None:
        self.status.setText(text)
        self.status_changed.emit(text)


def _message(exc: BaseException, context: str) -> str:
    """The engine's own message for bad input; anything else in one line, never a traceback."""
    if isinstance(exc, EngineError):
        return str(exc)
    return f"{context}: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"


def _reason(classifier) -> str:
    """How the model's input is scaled, and whether its answers average each picture with its mirror image."""
    if getattr(classifier, "tta", "none") == "flip":
        return (classifier.preprocessing_reason + "; each picture's answer is the mean of its own and its mirror "
                "image's (the run's test-time flip)")
    return classifier.preprocessing_reason


def _open_classifier(state: TaskState, path: str):
    from engine.inference import Classifier

    classifier = Classifier(path)
    classifier.predict_arrays(np.zeros((1, classifier.height, classifier.width, classifier.channels), np.uint8))
    return classifier  # warmed up (traced once) here, so the first chunk of a job is not the slow one


def _list_images(state: TaskState, paths: list[str]) -> list[str]:
    from engine.inference import image_files

    return [str(path) for path in image_files(paths)]


def _classify_rows(state: TaskState, classifiers: dict, rows: list[int], paths: list[str],
                   csv_path: str | None) -> int | None:
    """Classify `paths` chunk by chunk with every classifier, handing over each chunk (and writing the CSV).

    Returns how many were classified, or None when stopped (counted as cancelled).
    """
    from engine.inference import PredictionCsv, check_csv_path, classify_in_chunks

    slots = list(classifiers)
    table = None
    if csv_path:
        table = PredictionCsv(check_csv_path(csv_path, paths), top_k=TOP_K,
                              models=slots if len(slots) > 1 else ("",))
    started = time.monotonic()
    done = 0
    try:
        for chunk in classify_in_chunks([classifiers[s] for s in slots], paths, top_k=TOP_K,
                                        thumbnail_size=THUMBNAIL, should_stop=state.should_stop):
            if table is not None:
                table.write(chunk.paths, chunk.predictions)
            done += len(chunk.paths)
            numbers = rows[chunk.start:chunk.start + len(chunk.paths)]
            state.set_partial_result((numbers, dict(zip(slots, chunk.predictions)), chunk.thumbnails))
            rate = done / max(time.monotonic() - started, 1e-6)
            state.set_progress(done / len(paths), f"{rate:,.0f} images/s")
    finally:
        if table is not None:
            table.close()
    return None if state.should_stop() and done < len(paths) else done
