"""The runs table: every run of the store, sortable, filterable and editable in place.

A QAbstractTableModel over engine.comparison.run_rows (the same rows `main.py
compare --csv` writes), behind a QSortFilterProxyModel: the text filter
matches any column as shown, sorting uses the raw numbers (the sort role), so
"1:05:00" sorts after "9:59". Reading the store, renaming and deleting run on
the runner's store lane; the table keeps its selection across refreshes and
polls the index (runs.db and its write-ahead log) every few seconds, so a run
that a CLI training ends shows up without a click.
"""

from __future__ import annotations

import os
import time

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QSortFilterProxyModel, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QBrush, QColor, QFont, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView, QHeaderView, QLineEdit, QMenu, QMessageBox, QTableView, QVBoxLayout, QWidget,
)

from engine.comparison import TABLE_COLUMNS
from engine.text import format_seconds
from gui.concurrent import TaskRunner, TaskState

STORE_LANE = "store"  # the index is read beside the Keras work of the tasks lane, never behind it
POLL_MS = 2000
SORT_ROLE = Qt.UserRole + 1
RUN_ID_ROLE = Qt.UserRole + 2
STATUS_COLORS = {"failed": "#c62828", "interrupted": "#b35900", "stopped": "#6d6d6d", "running": "#1565c0"}
RESUMABLE = ("stopped", "interrupted")
# Headers as the table shows them (the CSV keeps TABLE_COLUMNS' own, with their units).
SHOWN_HEADERS = {"train_seconds": "Training time", "model_size": "Model size (MB)"}
PERCENT = ("test_accuracy", "best_val_accuracy")
NUMBERS = ("epochs_done", "test_accuracy", "test_loss", "macro_f1", "best_val_accuracy", "best_epoch",
           "params_total", "train_seconds", "ms_per_image", "model_size")
NO_VALUE = "–"


def format_cell(field: str, row) -> str:
    """A RunRow's field as the table shows it."""
    value = getattr(row, field)
    if value is None:
        return NO_VALUE
    if field in PERCENT:
        return f"{value:.2%}"
    if field in ("test_loss", "macro_f1"):
        return f"{value:.4f}"
    if field == "params_total":
        return f"{value:,}"
    if field == "train_seconds":
        return format_seconds(value)
    if field == "ms_per_image":
        return f"{value:.2f}"
    if field == "model_size":
        return f"{value / 1e6:.1f}"
    if field == "created":
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(value)) if value else NO_VALUE
    if field == "epochs_done":
        return f"{value} of {row.epochs}" if row.epochs else str(value)
    if field == "best_epoch":
        return str(value) if value else NO_VALUE
    return str(value)


class RunsTableModel(QAbstractTableModel):
    """The store's runs, one row each, in TABLE_COLUMNS' order; the Name column is editable."""

    rename_requested = Signal(str, str)  # run id, new name

    def __init__(self, parent=None):
        super().__init__(parent)
        self.rows: list = []
        self.fields = [field for field, _ in TABLE_COLUMNS]
        self.headers = [SHOWN_HEADERS.get(field, header) for field, header in TABLE_COLUMNS]

    def set_rows(self, rows: list) -> None:
        self.beginResetModel()
        self.rows = list(rows)
        self.endResetModel()

    def row_of(self, run_id: str) -> int:
        return next((i for i, row in enumerate(self.rows) if row.run_id == run_id), -1)

    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: QModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.fields)

    def headerData(self, section: int, orientation, role: int = Qt.DisplayRole):
        if orientation == Qt.Horizontal and role == Qt.DisplayRole and 0 <= section < len(self.headers):
            return self.headers[section]
        return None

    def flags(self, index: QModelIndex):
        flags = super().flags(index)
        if index.isValid() and self.fields[index.column()] == "name":
            flags |= Qt.ItemIsEditable
        return flags

    def data(self, index: QModelIndex, role: int = Qt.DisplayRole):
        if not index.isValid() or index.row() >= len(self.rows):
            return None
        row, field = self.rows[index.row()], self.fields[index.column()]
        if role == Qt.DisplayRole:
            return format_cell(field, row)
        if role == Qt.EditRole:
            return row.name if field == "name" else format_cell(field, row)
        if role == SORT_ROLE:
            value = getattr(row, field)
            return (value is None, value if value is not None else 0)
        if role == RUN_ID_ROLE:
            return row.run_id
        if role == Qt.TextAlignmentRole and field in NUMBERS:
            return int(Qt.AlignRight | Qt.AlignVCenter)
        if field == "status" and row.status in STATUS_COLORS:
            if role == Qt.ForegroundRole:
                return QBrush(QColor(STATUS_COLORS[row.status]))
            if role == Qt.FontRole and row.status in ("failed", "interrupted"):
                font = QFont()
                font.setBold(True)
                return font
        if role == Qt.ToolTipRole:
            if field == "status" and row.reason:
                return f"{row.status}: {row.reason}"
            if field == "test_accuracy" and row.split and row.split != "test":
                return f"on the {row.split} split (the dataset has no test split)"
        return None

    def setData(self, index: QModelIndex, value, role: int = Qt.EditRole) -> bool:
        if role != Qt.EditRole or not index.isValid() or self.fields[index.column()] != "name":
            return False
        row = self.rows[index.row()]
        name = str(value).strip()
        if name and name != row.name:
            self.rename_requested.emit(row.run_id, name)  # the store renames; the refresh shows it
        return False


class _SortProxy(QSortFilterProxyModel):
    """Sorts by the raw values (None last); filters on the text shown, any column."""

    def lessThan(self, left: QModelIndex, right: QModelIndex) -> bool:
        a, b = left.data(SORT_ROLE), right.data(SORT_ROLE)
        try:
            return a < b
        except TypeError:
            return str(a) < str(b)


class RunsTable(QWidget):
    """The filter box and the table of runs.

    Signals: `selection_changed(list)` with the selected run ids in the order
    they were selected (the first is run A), `open_requested(run_id)` on a
    double-click, `train_again_requested(run_id)`, `resume_requested(run_id)`,
    `refreshed()` after each reading of the store, `message(str)` for the
    status bar. `confirm_delete` answers the deletion question without a
    dialog when True or False (tests); None asks.
    """

    selection_changed = Signal(list)
    open_requested = Signal(str)
    train_again_requested = Signal(str)
    resume_requested = Signal(str)
    refreshed = Signal()
    message = Signal(str)

    def __init__(self, runner: TaskRunner, parent: QWidget | None = None):
        super().__init__(parent)
        self.runner = runner
        self.confirm_delete: bool | None = None
        self.index_path = None
        self._signature = None
        self._order: list[str] = []
        self._restoring = False

        self.filter = QLineEdit()
        self.filter.setPlaceholderText("Filter runs…")
        self.filter.setClearButtonEnabled(True)
        self.filter.setToolTip("Show only the runs with this text in any column.")
        self.model = RunsTableModel(self)
        self.proxy = _SortProxy(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setSortRole(SORT_ROLE)
        self.proxy.setFilterKeyColumn(-1)
        self.proxy.setFilterCaseSensitivity(Qt.CaseInsensitive)
        self.filter.textChanged.connect(self.proxy.setFilterFixedString)
        self.view = QTableView()
        self.view.setModel(self.proxy)
        self.view.setSortingEnabled(True)
        self.view.sortByColumn(self.model.fields.index("created"), Qt.DescendingOrder)
        self.view.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.view.setSelectionMode(QAbstractItemView.ExtendedSelection)
        self.view.setEditTriggers(QAbstractItemView.EditKeyPressed)
        self.view.setAlternatingRowColors(True)
        self.view.verticalHeader().hide()
        self.view.horizontalHeader().setSectionResizeMode(QHeaderView.Interactive)
        self.view.horizontalHeader().setStretchLastSection(True)
        self.view.setWordWrap(False)
        self.view.setContextMenuPolicy(Qt.CustomContextMenu)
        self.view.customContextMenuRequested.connect(self._on_context_menu)
        self.view.doubleClicked.connect(self._on_double_clicked)
        self.view.selectionModel().selectionChanged.connect(self._on_selection_changed)
        self.model.rename_requested.connect(self.rename)

        self.rename_action = QAction("Rename", self)
        self.rename_action.setShortcut(QKeySequence(Qt.Key_F2))
        self.rename_action.setShortcutContext(Qt.WidgetWithChildrenShortcut)
        self.rename_action.triggered.connect(self.edit_name)
        self.delete_action = QAction("Delete…", self)
        self.delete_action.setShortcut(QKeySequence(QKeySequence.Delete))
        self.delete_action.setShortcutContext(Qt.WidgetWithChildrenShortcut)
        self.delete_action.triggered.connect(lambda: self.delete(self.selected_ids()))
        self.view.addAction(self.rename_action)
        self.view.addAction(self.delete_action)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.filter)
        layout.addWidget(self.view, 1)

        self.poll_timer = QTimer(self)
        self.poll_timer.setInterval(POLL_MS)
        self.poll_timer.timeout.connect(self.poll)
        self.poll_timer.start()
        self.refresh()

    # --- reading the store ----------------------------------------------------

    def refresh(self) -> None:
        """Read the store again (off the GUI thread); the selection is kept."""
        self.runner.start(_read_rows, lane=STORE_LANE, key="runs_table", on_done=self._on_rows,
                          on_error=lambda exc: self.message.emit(f"Cannot read the run store: {exc}"))

    def poll(self) -> None:
        """Refresh when the index changed since it was last read (a run made or ended elsewhere)."""
        if self.index_path is not None and _signature(self.index_path) != self._signature:
            self._signature = _signature(self.index_path)  # one refresh per change, however slow it is
            self.refresh()

    def _on_rows(self, result) -> None:
        rows, index_path, signature, notices = result
        self.index_path, self._signature = index_path, signature
        order = list(self._order)
        self._restoring = True
        try:
            self.model.set_rows(rows)
            self._order = []
            self.select(order)
        finally:
            self._restoring = False
        for notice in notices:
            self.message.emit(notice)
        if self._order != order:
            self.selection_changed.emit(list(self._order))
        self.refreshed.emit()

    # --- selection ------------------------------------------------------------

    def rows(self) -> list:
        """Every run's RunRow, as last read."""
        return list(self.model.rows)

    def row(self, run_id: str):
        index = self.model.row_of(run_id)
        return self.model.rows[index] if index >= 0 else None

    def selected_ids(self) -> list[str]:
        """The selected runs, in the order they were selected."""
        return list(self._order)

    def select(self, run_ids: list[str]) -> None:
        """Select these runs (in this order), and only them."""
        selection = self.view.selectionModel()
        selection.clearSelection()
        for run_id in run_ids:
            source = self.model.row_of(run_id)
            if source < 0:
                continue
            index = self.proxy.mapFromSource(self.model.index(source, 0))
            if index.isValid():
                selection.select(index, selection.SelectionFlag.Select | selection.SelectionFlag.Rows)

    def visible_ids(self) -> list[str]:
        """The runs the filter lets through, in the order shown."""
        return [self.proxy.index(r, 0).data(RUN_ID_ROLE) for r in range(self.proxy.rowCount())]

    def _on_selection_changed(self, selected, deselected) -> None:
        removed = {index.data(RUN_ID_ROLE) for index in deselected.indexes()}
        still = {index.data(RUN_ID_ROLE) for index in self.view.selectionModel().selectedRows()}
        order = [run_id for run_id in self._order if run_id not in removed and run_id in still]
        for index in selected.indexes():
            run_id = index.data(RUN_ID_ROLE)
            if run_id not in order:
                order.append(run_id)
        order += sorted(still - set(order))  # a model reset can select without telling what
        self._order = order
        if not self._restoring:
            self.selection_changed.emit(list(order))

    def _on_double_clicked(self, index: QModelIndex) -> None:
        self.open_requested.emit(index.data(RUN_ID_ROLE))  # names are edited with F2, so every cell opens

    def _on_context_menu(self, point) -> None:
        index = self.view.indexAt(point)
        if not index.isValid():
            return
        run_id = index.data(RUN_ID_ROLE)
        if run_id not in self._order:
            self.select([run_id])
        row = self.row(run_id)
        menu = QMenu(self)
        menu.addAction("Open in Results", lambda: self.open_requested.emit(run_id))
        menu.addAction("Train again with its settings", lambda: self.train_again_requested.emit(run_id))
        resume = menu.addAction("Resume", lambda: self.resume_requested.emit(run_id))
        resume.setEnabled(row is not None and row.status in RESUMABLE)
        menu.addSeparator()
        menu.addAction(self.rename_action)
        menu.addAction(self.delete_action)
        menu.exec(self.view.viewport().mapToGlobal(point))

    # --- editing --------------------------------------------------------------

    def edit_name(self) -> None:
        """Start editing the current run's name in place (F2)."""
        current = self.view.currentIndex()
        if not current.isValid() and self._order:
            source = self.model.row_of(self._order[-1])
            current = self.proxy.mapFromSource(self.model.index(source, 0))
        if current.isValid():
            self.view.edit(current.siblingAtColumn(self.model.fields.index("name")))

    def rename(self, run_id: str, name: str) -> None:
        """Rename a run in the store, then show it."""
        self.runner.start(_rename, run_id, name, lane=STORE_LANE,
                          on_done=lambda _: self._after_edit(f"Run {run_id} renamed to {name}."),
                          on_error=lambda exc: self._after_edit(f"Cannot rename run {run_id}: {exc}"))

    def delete(self, run_ids: list[str]) -> bool:
        """Delete runs and their folders after a confirmation; False when not asked to."""
        rows = [self.row(run_id) for run_id in run_ids]
        rows = [row for row in rows if row is not None]
        if not rows or not self._confirm_delete(rows):
            return False
        self.runner.start(_delete, [row.run_id for row in rows], lane=STORE_LANE, on_done=self._on_deleted,
                          on_error=lambda exc: self._after_edit(f"Cannot delete: {exc}"))
        return True

    def _confirm_delete(self, rows: list) -> bool:
        if self.confirm_delete is not None:
            return self.confirm_delete
        names = "\n".join(f"• {row.name} ({row.run_id})" for row in rows[:10])
        more = f"\n… and {len(rows) - 10} more" if len(rows) > 10 else ""
        answer = QMessageBox.question(
            self, "Delete runs?",
            f"Delete {len(rows)} run(s)?\n\n{names}{more}\n\nDeleting removes the run's folder: its models, "
            "history and predictions. This cannot be undone.",
            QMessageBox.Yes | QMessageBox.No, QMessageBox.No)
        return answer == QMessageBox.Yes

    def _on_deleted(self, outcome) -> None:
        deleted, refused = outcome
        parts = [f"Deleted {len(deleted)} run(s)."] if deleted else []
        parts += refused
        self._after_edit(" ".join(parts))

    def _after_edit(self, text: str) -> None:
        self.message.emit(text)
        self.refresh()


def _signature(path) -> tuple:
    """What changes when the index is written: runs.db's and its write-ahead log's time and size."""
    stamps = []
    for name in (str(path), str(path) + "-wal"):
        try:
            info = os.stat(name)
            stamps.append((info.st_mtime_ns, info.st_size))
        except OSError:
            stamps.append(None)
    return tuple(stamps)


def _read_rows(state: TaskState):
    from engine.comparison import run_rows
    from engine.runs import RunStore

    store = RunStore()
    rows = run_rows(store)
    return rows, store.index_path, _signature(store.index_path), list(store.notices)


def _rename(state: TaskState, run_id: str, name: str) -> None:
    from engine.runs import RunStore

    RunStore().rename(run_id, name)


def _delete(state: TaskState, run_ids: list[str]) -> tuple[list[str], list[str]]:
    """Delete each run; a refusal (a run still training) is kept as its message, the others go on."""
    from engine.errors import EngineError
    from engine.runs import RunStore

    store = RunStore()
    deleted, refused = [], []
    for run_id in run_ids:
        try:
            store.delete(run_id)
            deleted.append(run_id)
        except EngineError as exc:
            refused.append(f"Not deleted: {exc}.")
    return deleted, refused
