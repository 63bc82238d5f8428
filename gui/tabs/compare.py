"""The Compare tab: runs side by side, and two runs head to head.

The runs table (every run of the store) on top; below it, for the selected
runs, their curves overlaid, their settings side by side with the
differences marked, and for two of them (A and B) what changed image by
image: the difference of their confusion matrices, per-class F1
differences with bootstrap intervals, and the images only one of them gets
right with McNemar's test on their counts. Every number comes from
engine.comparison (as `main.py compare` and the report do); the tab reads
the store and loads results in tasks on the runner and only draws.
The pages below the table are built the first time they are needed, so
they cost the window's start-up nothing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFont
from PySide6.QtWidgets import (
    QAbstractItemView, QButtonGroup, QCheckBox, QComboBox, QFileDialog, QHBoxLayout, QLabel, QPushButton,
    QSlider, QSplitter, QTableWidget, QTableWidgetItem, QTabWidget, QToolButton, QVBoxLayout, QWidget,
)

from engine.errors import EngineError
from gui.concurrent import TaskRunner, TaskState
from gui.widgets.runs_table import RESUMABLE, STORE_LANE, RunsTable

COMPARE_LANE = "compare"  # loading two runs' results never waits behind Keras' import or a model being built
DIFFERS_COLOR = "#fff1bf"
SMOOTHING_STEPS = 95  # the slider's steps: 0..0.95
GROUPS = {  # the head-to-head gallery's groups: (button, whose predictions the captions show)
    "only_a": ("Only A right", "b"),
    "only_b": ("Only B right", "a"),
    "into": ("Moved into the cell", "a"),
    "out_of": ("Moved out of it", "b"),
}


class CompareTab(QWidget):
    """The runs of the store compared; `message(str)` for the status bar.

    Asks the window for what it owns: `open_requested(run_id)` (show it in
    Results), `train_again_requested(run_id)`, `resume_requested(run_id)`
    and `queue_requested()` (the Queue… button).
    """

    message = Signal(str)
    open_requested = Signal(str)
    train_again_requested = Signal(str)
    resume_requested = Signal(str)
    queue_requested = Signal()

    def __init__(self, runner: TaskRunner, parent: QWidget | None = None):
        super().__init__(parent)
        self.runner = runner
        self.selection: list[dict] = []  # the selected runs' id, label, config, history, best epoch
        self.a = self.b = None  # RunResults of the two runs head to head
        self.head = None  # their HeadToHead, None when they cannot be compared
        self.moved: tuple[int, int, np.ndarray, np.ndarray] | None = None  # the clicked cell's images
        self._built = False

        self.runs_table = RunsTable(runner)
        self.runs_table.selection_changed.connect(self._on_selection_changed)
        self.runs_table.refreshed.connect(self._on_refreshed)
        self.runs_table.open_requested.connect(self.open_requested)
        self.runs_table.train_again_requested.connect(self.train_again_requested)
        self.runs_table.resume_requested.connect(self.resume_requested)
        self.runs_table.message.connect(self.message)

        self.open_button = QPushButton("Open in Results")
        self.open_button.setToolTip("Show the run's evaluation, image by image (or double-click it).")
        self.open_button.clicked.connect(lambda: self._with_one_run(self.open_requested.emit))
        self.train_again_button = QPushButton("Train again…")
        self.train_again_button.setToolTip("Load the run's settings into the panels, to change one thing and train.")
        self.train_again_button.clicked.connect(lambda: self._with_one_run(self.train_again_requested.emit))
        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip("Go on training a stopped or interrupted run from its last whole epoch.")
        self.resume_button.clicked.connect(lambda: self._with_one_run(self.resume_requested.emit))
        self.queue_button = QPushButton("Queue…")
        self.queue_button.setToolTip("Train a group of runs one after the other (the seeds' experiments).")
        self.queue_button.clicked.connect(self.queue_requested)
        self.csv_button = QPushButton("Export CSV…")
        self.csv_button.setToolTip("The table (the selected runs, or all) as a CSV file.")
        self.csv_button.clicked.connect(lambda: self.export_csv())
        self.report_button = QPushButton("Export report…")
        self.report_button.setToolTip("A report of the selected runs: HTML or PDF, by the file's suffix.")
        self.report_button.clicked.connect(lambda: self.export_report())
        buttons = QHBoxLayout()
        for button in (self.open_button, self.train_again_button, self.resume_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        for button in (self.queue_button, self.csv_button, self.report_button):
            buttons.addWidget(button)
        top = QWidget()
        top_layout = QVBoxLayout(top)
        top_layout.setContentsMargins(0, 0, 0, 0)
        top_layout.addWidget(self.runs_table, 1)
        top_layout.addLayout(buttons)

        self.pages = QTabWidget()
        self.body = QSplitter(Qt.Vertical)
        self.body.addWidget(top)
        self.body.addWidget(self.pages)
        self.body.setStretchFactor(0, 1)
        self.body.setStretchFactor(1, 3)
        layout = QVBoxLayout(self)
        layout.addWidget(self.body, 1)
        self._update_buttons()

    @property
    def confirm_delete(self) -> bool | None:
        """The runs table's answer to "delete these runs?" (None: ask)."""
        return self.runs_table.confirm_delete

    @confirm_delete.setter
    def confirm_delete(self, answer: bool | None) -> None:
        self.runs_table.confirm_delete = answer

    def refresh(self) -> None:
        """Read the store again (the window calls it when its own run ends)."""
        self.runs_table.refresh()

    def selected_ids(self) -> list[str]:
        return self.runs_table.selected_ids()

    def select(self, run_ids: list[str]) -> None:
        self.runs_table.select(run_ids)

    # --- building the pages (on first need) ---------------------------------------

    def showEvent(self, event) -> None:
        super().showEvent(event)
        self.ensure_built()

    def ensure_built(self) -> None:
        """Build the curves, settings and head-to-head pages if not yet."""
        if self._built:
            return
        self._built = True
        self.pages.addTab(self._build_curves(), "Curves")
        self.pages.addTab(self._build_settings(), "Settings")
        self.pages.addTab(self._build_head_to_head(), "Head to head")
        self.body.setSizes([240, 760])  # the table about a quarter of the height, the pages the rest
        self._show_selection()

    def _build_curves(self) -> QWidget:
        from gui.widgets.overlay_plot import OverlayPlot

        self.loss_plot = OverlayPlot()
        self.loss_plot.set_metric("loss")
        self.accuracy_plot = OverlayPlot()
        self.accuracy_plot.set_metric("accuracy")
        self.x_axis = QComboBox()
        self.x_axis.addItem("Epoch", "epoch")
        self.x_axis.addItem("Wall time (s)", "time")
        self.x_axis.setToolTip("Plot against the epoch, or against the seconds since the run started.")
        self.x_axis.currentIndexChanged.connect(self._on_curve_options)
        self.log_y = QCheckBox("Log scale")
        self.log_y.setToolTip("A logarithmic y axis: small late improvements in the loss become visible.")
        self.log_y.toggled.connect(self._on_curve_options)
        self.smoothing = QSlider(Qt.Horizontal)
        self.smoothing.setRange(0, SMOOTHING_STEPS)
        self.smoothing.setToolTip("TensorBoard's smoothing: an exponential moving average, 0 (none) to 0.95.")
        self.smoothing.valueChanged.connect(self._on_curve_options)
        self.smoothing_label = QLabel("0.00")
        controls = QHBoxLayout()
        controls.addWidget(QLabel("X axis"))
        controls.addWidget(self.x_axis)
        controls.addWidget(self.log_y)
        controls.addWidget(QLabel("Smoothing"))
        controls.addWidget(self.smoothing, 1)
        controls.addWidget(self.smoothing_label)
        plots = QSplitter(Qt.Horizontal)
        plots.addWidget(self.loss_plot)
        plots.addWidget(self.accuracy_plot)
        page = QWidget()
        layout = QVBoxLayout(page)
        layout.addLayout(controls)
        layout.addWidget(plots, 1)
        return page

    def _build_settings(self) -> QWidget:
        self.settings_table = QTableWidget(0, 0)
        self.settings_table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.settings_table.horizontalHeader().setStretchLastSection(True)
        self.settings_table.setToolTip("Every setting of the selected runs; the ones that differ are marked.")
        self.setting_rows: list = []
        self.only_differences = QCheckBox("Only differences")
        self.only_differences.setToolTip("Hide the settings all the selected runs share.")
        self.only_differences.toggled.connect(self._apply_only_differences)
        self.settings_note = QLabel("Select runs in the table to see their settings side by side.")
        page = QWidget()
        layout = QVBoxLayout(page)
        row = QHBoxLayout()
        row.addWidget(self.only_differences)
        row.addWidget(self.settings_note, 1)
        layout.addLayout(row)
        layout.addWidget(self.settings_table, 1)
        return page

    def _build_head_to_head(self) -> QWidget:
        from gui.widgets.confusion import ConfusionMatrixView
        from gui.widgets.gallery import ImageGallery
        from gui.widgets.interval_bars import IntervalBars

        self.combo_a = QComboBox()
        self.combo_b = QComboBox()
        for combo, which in ((self.combo_a, "A"), (self.combo_b, "B")):
            combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(20)
            combo.setToolTip(f"Run {which}, from the selected runs; differences are B minus A.")
            combo.activated.connect(self._on_pair_chosen)
        self.head_note = QLabel("Select two runs in the table to compare them image by image.")
        self.head_note.setWordWrap(True)
        self.head_note.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.counts_label = QLabel()
        self.counts_label.setWordWrap(True)
        self.counts_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.mcnemar_label = QLabel()
        self.mcnemar_label.setWordWrap(True)
        self.mcnemar_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.difference = ConfusionMatrixView()
        self.difference.setToolTip("B's share of each true class minus A's: click a cell to see the images "
                                   "that moved into or out of it.")
        self.difference.cell_clicked.connect(self._on_difference_cell_clicked)
        self.f1_bars = IntervalBars()
        self.group_buttons: dict[str, QToolButton] = {}
        self.group_box = QButtonGroup(self)
        self.group_box.setExclusive(True)
        groups = QHBoxLayout()
        for kind, (text, _) in GROUPS.items():
            button = QToolButton()
            button.setText(text)
            button.setCheckable(True)
            button.setEnabled(False)
            button.clicked.connect(lambda _checked, kind=kind: self.show_group(kind))
            self.group_box.addButton(button)
            self.group_buttons[kind] = button
            groups.addWidget(button)
        groups.addStretch(1)
        self.gallery = ImageGallery()

        pair = QHBoxLayout()
        pair.addWidget(QLabel("A"))
        pair.addWidget(self.combo_a, 1)
        pair.addWidget(QLabel("B"))
        pair.addWidget(self.combo_b, 1)
        gallery_box = QWidget()
        gallery_layout = QVBoxLayout(gallery_box)
        gallery_layout.setContentsMargins(0, 0, 0, 0)
        gallery_layout.addLayout(groups)
        gallery_layout.addWidget(self.gallery, 1)
        right = QSplitter(Qt.Vertical)
        right.addWidget(self.f1_bars)
        right.addWidget(gallery_box)
        split = QSplitter(Qt.Horizontal)  # the matrix keeps the page's whole height
        split.addWidget(self.difference)
        split.addWidget(right)
        split.setStretchFactor(0, 1)
        split.setStretchFactor(1, 1)
        split.setSizes([1000, 1000])  # halves, whatever the widgets' own size hints
        page = QWidget()
        layout = QVBoxLayout(page)
        layout.addLayout(pair)
        layout.addWidget(self.head_note)
        layout.addWidget(self.counts_label)
        layout.addWidget(self.mcnemar_label)
        layout.addWidget(split, 1)
        self.head_widgets = [self.counts_label, self.mcnemar_label, split]
        for widget in self.head_widgets:
            widget.hide()
        return page

    # --- the selection --------------------------------------------------------------

    def _on_selection_changed(self, run_ids: list[str]) -> None:
        self._update_buttons()
        self.ensure_built()
        self.runner.start(_read_runs, list(run_ids), lane=STORE_LANE, key="compare_selection",
                          on_done=self._on_runs_read,
                          on_error=lambda exc: self._say(f"Cannot read the selected runs: {exc}"))

    def _on_refreshed(self) -> None:
        """A run selected may have ended or been renamed since: read the selection again."""
        self._update_buttons()
        shown = {run["run_id"]: run["row"] for run in self.selection}
        current = {run_id: self.runs_table.row(run_id) for run_id in self.selected_ids()}
        if shown != current:
            self._on_selection_changed(self.selected_ids())

    def _on_runs_read(self, runs: list[dict]) -> None:
        wanted = self.selected_ids()
        runs = [run for run in runs if run["run_id"] in wanted]
        for run in runs:
            run["row"] = self.runs_table.row(run["run_id"])
        self.selection = runs
        self._show_selection()

    def _show_selection(self) -> None:
        if not self._built:
            return
        self._show_curves()
        self._show_settings()
        self._fill_pair()

    def _update_buttons(self) -> None:
        ids = self.selected_ids()
        one = self.runs_table.row(ids[-1]) if ids else None
        for button in (self.open_button, self.train_again_button):
            button.setEnabled(one is not None)
        self.resume_button.setEnabled(one is not None and one.status in RESUMABLE)
        self.report_button.setEnabled(bool(ids))

    def _with_one_run(self, act) -> None:
        """Act on the run selected last (the current one)."""
        ids = self.selected_ids()
        if ids:
            act(ids[-1])

    # --- curves -----------------------------------------------------------------------

    def _show_curves(self) -> None:
        runs = [(run["label"], run["history"], run["best_epoch"]) for run in self.selection]
        for plot in (self.loss_plot, self.accuracy_plot):
            plot.set_runs(runs)

    def _on_curve_options(self, *_) -> None:
        weight = self.smoothing.value() / 100
        self.smoothing_label.setText(f"{weight:.2f}")
        for plot in (self.loss_plot, self.accuracy_plot):
            plot.set_x_axis(self.x_axis.currentData())
            plot.set_log_y(self.log_y.isChecked())
            plot.set_smoothing(weight)

    # --- settings -----------------------------------------------------------------------

    def _show_settings(self) -> None:
        from engine.comparison import settings_rows

        table = self.settings_table
        configs = [run["config"] for run in self.selection]
        self.setting_rows = settings_rows(configs) if configs else []
        table.clear()
        table.setColumnCount(len(configs))
        table.setRowCount(len(self.setting_rows))
        table.setHorizontalHeaderLabels([run["label"] for run in self.selection])
        table.setVerticalHeaderLabels([row.label for row in self.setting_rows])
        bold = QFont(table.font())
        bold.setBold(True)
        for r, row in enumerate(self.setting_rows):
            header = table.verticalHeaderItem(r)
            header.setToolTip(row.key)
            for c, value in enumerate(row.values):
                item = QTableWidgetItem(value)
                item.setToolTip(f"{row.key} = {value}")
                if row.differs:
                    item.setBackground(QBrush(QColor(DIFFERS_COLOR)))
                    item.setFont(bold)
                table.setItem(r, c, item)
            if row.differs:
                header.setFont(bold)
        differing = sum(row.differs for row in self.setting_rows)
        if not configs:
            self.settings_note.setText("Select runs in the table to see their settings side by side.")
        elif len(configs) == 1:
            self.settings_note.setText("One run selected: select more to see where their settings differ.")
        else:
            self.settings_note.setText(f"{differing} of {len(self.setting_rows)} settings differ (marked).")
        table.resizeColumnsToContents()
        self._apply_only_differences()

    def _apply_only_differences(self, *_) -> None:
        only = self.only_differences.isChecked() and len(self.selection) > 1
        for r, row in enumerate(self.setting_rows):
            self.settings_table.setRowHidden(r, only and not row.differs)

    def flagged_settings(self) -> list[str]:
        """The keys of the settings marked as differing."""
        return [row.key for row in self.setting_rows if row.differs]

    def shown_settings(self) -> list[str]:
        """The keys of the settings' rows not hidden."""
        return [row.key for r, row in enumerate(self.setting_rows) if not self.settings_table.isRowHidden(r)]

    # --- head to head ---------------------------------------------------------------------

    def _fill_pair(self) -> None:
        """A and B from the selection: the first two selected unless the user chose others among them."""
        ids = [run["run_id"] for run in self.selection]
        a, b = self.combo_a.currentData(), self.combo_b.currentData()
        if a not in ids or b not in ids or a == b:
            a, b = (ids[0], ids[1]) if len(ids) >= 2 else (None, None)
        for combo, chosen in ((self.combo_a, a), (self.combo_b, b)):
            combo.blockSignals(True)
            combo.clear()
            for run in self.selection:
                combo.addItem(run["label"], run["run_id"])
            combo.setCurrentIndex(combo.findData(chosen) if chosen else -1)
            combo.blockSignals(False)
        self.compare_pair(a, b)

    def _on_pair_chosen(self, _index: int) -> None:
        self.compare_pair(self.combo_a.currentData(), self.combo_b.currentData())

    def compare_pair(self, a_id: str | None, b_id: str | None) -> None:
        """Load runs A and B (with their images) off the GUI thread and compare them."""
        if a_id and b_id and self.a is not None and self.b is not None and self.head is not None \
                and (self.a.record.run_id, self.b.record.run_id) == (a_id, b_id):
            return  # already shown
        self.a = self.b = self.head = None
        self.moved = None
        for widget in self.head_widgets:
            widget.hide()
        if not a_id or not b_id or a_id == b_id:
            self.runner.start(_nothing, lane=COMPARE_LANE, key="compare_head")  # drops a comparison still loading
            self.head_note.setText("A and B are the same run: choose two different runs." if a_id and a_id == b_id
                                   else "Select two runs in the table to compare them image by image.")
            return
        self.head_note.setText("Loading both runs' predictions and images…")
        self.runner.start(_compare_pair, a_id, b_id, lane=COMPARE_LANE, key="compare_head", on_partial=self._on_stage,
                          on_done=self._on_pair_compared,
                          on_error=lambda exc: self.head_note.setText(f"Cannot compare these runs: {exc}"))

    def _on_stage(self, event) -> None:
        self.head_note.setText(event.text)

    def _on_pair_compared(self, result) -> None:
        if result is None:
            return
        a, b, head, reason = result
        self.a, self.b, self.head = a, b, head
        if head is None:
            self.head_note.setText(reason)
            return
        names = list(head.class_names)
        self.head_note.setText(
            f"A: <b>{_html(head.a_name)}</b> ({head.accuracy_a:.2%}) against B: <b>{_html(head.b_name)}</b> "
            f"({head.accuracy_b:.2%}) on the same {head.images:,} {_html(a.split)} images." + (
                "" if a.images is not None else f" No images to show: {_html(a.images_note)}."))
        self.counts_label.setText(
            f"Only A right: {len(head.only_a):,} · only B right: {len(head.only_b):,} · both right: "
            f"{head.both_right:,} · both wrong: {head.both_wrong:,}")
        self.mcnemar_label.setText(mcnemar_sentence(head))
        self.difference.set_difference(head.difference, names, shares=True)
        boot = head.bootstrap
        if boot:
            self.f1_bars.set_values(names, boot["f1_diff"], boot["f1_low"], boot["f1_high"],
                                    "F1 of B minus A per class, with paired bootstrap 95% intervals")
        for widget in self.head_widgets:
            widget.show()
        for kind, button in self.group_buttons.items():
            button.setEnabled(kind in ("only_a", "only_b"))
        self.group_buttons["only_b"].setText(f"Only B right ({len(head.only_b):,})")
        self.group_buttons["only_a"].setText(f"Only A right ({len(head.only_a):,})")
        self.group_buttons["into"].setText(GROUPS["into"][0])
        self.group_buttons["out_of"].setText(GROUPS["out_of"][0])
        self.show_group("only_b")

    def _on_difference_cell_clicked(self, true_index: int, predicted_index: int) -> None:
        from engine.comparison import moved_rows

        if self.head is None:
            return
        into, out_of = moved_rows(self.head, self.a, self.b, true_index, predicted_index)
        self.moved = (true_index, predicted_index, np.asarray(into), np.asarray(out_of))
        self.group_buttons["into"].setText(f"Moved into the cell ({len(into):,})")
        self.group_buttons["out_of"].setText(f"Moved out of it ({len(out_of):,})")
        for kind in ("into", "out_of"):
            self.group_buttons[kind].setEnabled(True)
        self.show_group("into")

    def show_group(self, kind: str) -> np.ndarray:
        """Show one group of images in the gallery; returns its rows (positions in both runs' arrays)."""
        head, a, b = self.head, self.a, self.b
        if head is None:
            return np.zeros(0, dtype=np.int64)
        names = list(head.class_names)
        shown = a if GROUPS[kind][1] == "a" else b
        letter = GROUPS[kind][1].upper()
        if kind in ("only_a", "only_b"):
            rows = np.asarray(head.only_a if kind == "only_a" else head.only_b)
            title = (f"{GROUPS[kind][0]}: {len(rows):,} images (captions: {letter}'s wrong answer)")
        elif self.moved is None:
            return np.zeros(0, dtype=np.int64)
        else:
            true_index, predicted_index, into, out_of = self.moved
            rows = into if kind == "into" else out_of
            cell = f"true {names[true_index]}, predicted {names[predicted_index]}"
            if kind == "into":
                title = f"{cell}: {len(rows):,} images B puts here and A did not (captions: where A put them)"
            else:
                title = f"{cell}: {len(rows):,} images A put here and B does not (captions: where B puts them)"
        images = a.images if a.images is not None else b.images  # the same images: the fingerprints match
        self.gallery.set_data(images, shown.y_true, shown.y_pred, shown.top_k_probs[:, 0], names, files=a.files)
        self.gallery.show_rows(rows, title)
        self.group_buttons[kind].setChecked(True)
        return np.asarray(rows, dtype=np.int64)

    # --- export -----------------------------------------------------------------------------

    def export_csv(self, path: Path | None = None) -> bool:
        """The selected runs' rows (all runs when none is selected) as CSV."""
        from engine.comparison import write_table_csv

        ids = self.selected_ids()
        rows = [row for row in self.runs_table.rows() if not ids or row.run_id in ids]
        if path is None:
            chosen, _ = QFileDialog.getSaveFileName(self, "Export the runs table", "runs.csv", "*.csv")
            if not chosen:
                return False
            path = Path(chosen)
        try:
            write_table_csv(rows, path)
        except (EngineError, OSError, ValueError) as exc:
            self._say(f"Could not write {path}: {getattr(exc, 'strerror', None) or exc}")
            return False
        self._say(f"Saved {len(rows)} run(s) to {path}.")
        return True

    def export_report(self, path: Path | None = None) -> bool:
        """A report of the selected runs, HTML or PDF by the suffix; gathered off the GUI thread."""
        from gui.report import check_report_path

        ids = self.selected_ids()
        if not ids:
            self._say("Select the runs to report on in the table first.")
            return False
        if path is None:
            chosen, _ = QFileDialog.getSaveFileName(self, "Export a report of the selected runs", "report.html",
                                                    "HTML (*.html);;PDF (*.pdf)")
            if not chosen:
                return False
            path = Path(chosen)
        try:
            path = check_report_path(path)
        except (EngineError, OSError) as exc:  # the message names the file and what to do
            self._say(f"Cannot write the report: {exc}")
            return False
        self._say(f"Gathering the report of {len(ids)} run(s)…")
        self.runner.start(_compare_runs, ids, lane=COMPARE_LANE, key="compare_report", on_partial=self._say,
                          on_done=lambda comparison: self._write_report(comparison, path),
                          on_error=lambda exc: self._say(f"Cannot make the report: {exc}"))
        return True

    def _write_report(self, comparison, path: Path) -> None:
        from gui.report import write_report

        try:
            write_report(comparison, path)
        except (EngineError, OSError, ValueError) as exc:
            self._say(f"Could not write the report {path}: {getattr(exc, 'strerror', None) or exc}")
            return
        self._say(f"Saved the report {path}.")

    def _say(self, text: str) -> None:
        self.message.emit(str(text))


def mcnemar_sentence(head) -> str:
    """McNemar's exact test on the images only one run gets right, in words."""
    n = len(head.only_a) + len(head.only_b)
    if n == 0:
        return "McNemar's exact test: the runs get exactly the same images right, so there is no difference to test."
    verdict = ("the difference is more than chance (significant at 0.05)" if head.significant
               else "the difference could be chance (not significant at 0.05)")
    return f"McNemar's exact test on the {n:,} images only one run gets right: p = {head.mcnemar_p:.3g}, {verdict}."


def _label(run_id: str, name: str, names: list[str]) -> str:
    """A run's name, with its id's tail where another selected run has the same name."""
    return name if names.count(name) == 1 else f"{name} ({run_id[-6:]})"


def _read_runs(state: TaskState, run_ids: list[str]) -> list[dict]:
    from engine.runs import RunStore

    store = RunStore()
    records = [store.get(run_id) for run_id in run_ids]
    names = [record.name for record in records]
    return [{"run_id": record.run_id, "label": _label(record.run_id, record.name, names),
             "config": store.config(record.run_id), "history": store.history(record.run_id),
             "best_epoch": record.best_epoch} for record in records]


def _nothing(state: TaskState) -> None:
    return None


def _compare_pair(state: TaskState, a_id: str, b_id: str):
    """Both runs' RunResults (with images) and their HeadToHead, or the reason they cannot be paired."""
    from engine.comparison import comparable, head_to_head
    from engine.evaluation import load_results
    from engine.runs import RunStore

    store = RunStore()
    dataset = None
    config_a, config_b = store.config(a_id), store.config(b_id)
    if config_a.dataset == config_b.dataset:  # load it once for both
        from engine.datasets import load_dataset

        try:
            dataset = load_dataset(config_a.dataset, report=state.set_partial_result, should_stop=state.should_stop)
        except (EngineError, OSError, ValueError):
            dataset = None  # load_results tries again and says why there are no images
    loaded = []
    for run_id in (a_id, b_id):
        results = load_results(store, run_id, dataset=dataset, report=state.set_partial_result,
                               should_stop=state.should_stop)
        if results is None or state.should_stop():
            return None
        loaded.append(results)
    a, b = loaded
    for results in (a, b):
        if results.needs_evaluation:
            return a, b, None, (f"Run {results.record.name} has no test predictions yet: evaluate it in Results "
                                "(Evaluate now), then compare.")
    reason = comparable(a, b)
    if reason:
        return a, b, None, reason
    return a, b, head_to_head(a, b), ""


def _compare_runs(state: TaskState, run_ids: list[str]):
    from engine.comparison import compare_runs
    from engine.runs import RunStore

    return compare_runs(RunStore(), run_ids, report=state.set_partial_result)


def _html(text: str) -> str:
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
