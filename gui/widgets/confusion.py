"""A confusion matrix as a labelled heatmap: the Results tab's, and the Compare tab's difference.

Drawn as pyqtgraph's MatrixDisplayExample draws a matrix: an ImageItem per
layer in a plot with class names as ticks, and a ColorBarItem per scale.
Rows are the true class, columns the predicted class, as in scikit-learn.

The diagonal and the mistakes are on scales of their own, as Orange's
confusion matrix keeps the mistakes visible: the diagonal is one ImageItem
in greens scaled 0..its largest value, the off-diagonal cells another in reds
scaled 0..the largest mistake. A model that is right 90% of the time would
otherwise paint every mistake in the palest shade of one scale. Each scale
has its own colour bar, so neither can be read as the other.

Clicks map back to classes: a cell gives (true, predicted), a row label the
true class, a column label the predicted class; the Results tab turns these
into the gallery's selection.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from pyqtgraph.exporters import ImageExporter
from PySide6.QtCore import QPoint, QPointF, Qt, Signal
from PySide6.QtGui import QColor, QFont, QFontMetrics, QTransform
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QVBoxLayout, QWidget

MODES = {
    "counts": "Counts",
    "true": "Share of the true class (recall)",
    "pred": "Share of the predicted class (precision)",
}
CORRECT_MAP = pg.ColorMap([0.0, 0.5, 1.0], ["#f7fcf5", "#74c476", "#00441b"])  # greens
MISTAKE_MAP = pg.ColorMap([0.0, 0.5, 1.0], ["#fff5f0", "#fb6a4a", "#67000d"])  # reds
DIFFERENCE_MAP = pg.colormap.get("CET-D1")  # diverging, white at its centre
MAX_TEXT_CLASSES = 30  # above this many classes no cell is big enough to hold its number
TEXT_MARGIN = 4  # pixels a cell needs around its number
MIN_LABEL_CHARS = 4  # a column label shorter than this says nothing: label every k-th column instead
ROW_LABEL_WIDTH = 110  # pixels: longer true-class names are shortened with an ellipsis
DARK_TEXT_FROM = 0.55  # above this fraction of its scale a cell is dark enough for white text


class ConfusionMatrixView(QWidget):
    """A confusion matrix with a mode switch: counts, share of the true class
    (normalize="true": rows sum to 1) or share of the predicted class
    (normalize="pred": columns sum to 1).

    `set_matrix` shows counts; `set_difference` shows a signed matrix (run B
    minus run A) on one diverging scale centred at zero. Signals:
    `cell_clicked(true, predicted)`, `true_class_clicked(index)` for a row
    label, `predicted_class_clicked(index)` for a column label.
    """

    cell_clicked = Signal(int, int)
    true_class_clicked = Signal(int)
    predicted_class_clicked = Signal(int)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.counts = np.zeros((0, 0), dtype=np.int64)
        self.class_names: list[str] = []
        self.difference: np.ndarray | None = None
        self._difference_shares = False
        self._texts: list[list[pg.TextItem]] = []
        self._layout_key: tuple | None = None  # what the ticks and texts were last laid out for
        self._ticks: dict[str, list[tuple[int, str]]] = {"true": [], "predicted": []}

        self.mode_box = QComboBox()
        for mode, label in MODES.items():
            self.mode_box.addItem(label, mode)
        self.mode_box.setToolTip("Counts, or each cell as a share of its row (recall) or of its column (precision).")
        self.mode_box.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.mode_box.setMinimumContentsLength(16)
        self.mode_box.currentIndexChanged.connect(self._on_mode_changed)

        self.graphics = pg.GraphicsLayoutWidget()
        self.plot = self.graphics.addPlot(row=0, col=0)
        self.plot.invertY(True)
        self.plot.setDefaultPadding(0.0)
        self.plot.setMouseEnabled(False, False)
        self.plot.setMenuEnabled(False)
        self.plot.hideButtons()
        self.plot.showAxes(True, showValues=(True, False, False, True))
        self.plot.setLabel("left", "true class")
        self.plot.setLabel("bottom", "predicted class")
        self.row_axis = self.plot.getAxis("left")
        self.column_axis = self.plot.getAxis("bottom")
        self.row_axis.setWidth(ROW_LABEL_WIDTH + 24)

        # Pixel (r, c) of each image is the cell (true r, predicted c), centred on the view's (c, r).
        centred = QTransform().translate(-0.5, -0.5)
        self.correct_image = pg.ImageItem(axisOrder="row-major")
        self.mistake_image = pg.ImageItem(axisOrder="row-major")
        for image in (self.correct_image, self.mistake_image):
            image.setTransform(centred)
            self.plot.addItem(image)
        self.correct_bar = pg.ColorBarItem(values=(0, 1), colorMap=CORRECT_MAP, label="right (diagonal)",
                                           interactive=False, width=15)
        self.correct_bar.setImageItem(self.correct_image)
        self.mistake_bar = pg.ColorBarItem(values=(0, 1), colorMap=MISTAKE_MAP, label="mistakes (off-diagonal)",
                                           interactive=False, width=15)
        self.mistake_bar.setImageItem(self.mistake_image)
        self.graphics.addItem(self.correct_bar, row=0, col=1)
        self.graphics.addItem(self.mistake_bar, row=0, col=2)

        scene = self.graphics.scene()
        scene.sigMouseClicked.connect(self._on_scene_clicked)
        scene.sigMouseMoved.connect(self._on_mouse_moved)
        self.plot.getViewBox().sigTransformChanged.connect(self._on_view_changed)

        header = QHBoxLayout()
        self.mode_label = QLabel("Show")
        header.addWidget(self.mode_label)
        header.addWidget(self.mode_box)
        header.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(header)
        layout.addWidget(self.graphics, 1)

    # --- data ---------------------------------------------------------------

    def set_matrix(self, counts: np.ndarray, class_names: list[str]) -> None:
        """Show a confusion matrix of counts (rows true, columns predicted)."""
        counts = np.asarray(counts)
        _check_square(counts, class_names)
        self.counts = counts.astype(np.int64)
        self.class_names = [str(name) for name in class_names]
        self.difference = None
        self.mode_label.show()
        self.mode_box.show()
        self.correct_bar.show()
        self.mistake_bar.setColorMap(MISTAKE_MAP)
        self._redraw()

    def set_difference(self, matrix: np.ndarray, class_names: list[str], shares: bool = False) -> None:
        """Show a signed matrix, such as run B's confusion matrix minus run A's,
        on one diverging scale symmetric around zero (white: no change).
        `shares` says the values are shares (shown as percentage points)."""
        matrix = np.asarray(matrix, dtype=np.float64)
        _check_square(matrix, class_names)
        self.counts = np.zeros(matrix.shape, dtype=np.int64)
        self.class_names = [str(name) for name in class_names]
        self.difference = matrix
        self._difference_shares = shares
        self.mode_label.hide()
        self.mode_box.hide()
        self.correct_bar.hide()
        self.mistake_bar.setColorMap(DIFFERENCE_MAP)
        self._redraw()

    def mode(self) -> str:
        """The shown mode: "counts", "true" or "pred"."""
        return self.mode_box.currentData()

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}: one of {', '.join(MODES)}")
        self.mode_box.setCurrentIndex(list(MODES).index(mode))

    def values(self, mode: str | None = None) -> np.ndarray:
        """The matrix as a mode shows it: counts, or shares in 0..1. A share of
        a class with no images (a zero row or column sum) is NaN: undefined,
        not 0. In difference view, the difference."""
        if self.difference is not None:
            return self.difference.copy()
        mode = mode or self.mode()
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}: one of {', '.join(MODES)}")
        if mode == "counts":
            return self.counts.copy()
        axis = 1 if mode == "true" else 0
        sums = self.counts.sum(axis=axis, keepdims=True).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(sums > 0, self.counts / sums, np.nan)

    # --- export -------------------------------------------------------------

    def export_csv(self, path: str | Path, mode: str | None = None) -> None:
        """Write the matrix with the class names as header and first column.
        Shares are written as fractions (0..1), an undefined share empty."""
        values = self.values(mode)
        with open(path, "w", newline="", encoding="utf-8") as file:
            writer = csv.writer(file)
            writer.writerow(["true \\ predicted", *self.class_names])
            for name, row in zip(self.class_names, values):
                writer.writerow([name, *(_csv_value(value) for value in row)])

    def export_png(self, path: str | Path) -> None:
        """Write the heatmap with its labels and colour bars as a PNG."""
        ImageExporter(self.graphics.ci).export(str(path))

    # --- geometry -----------------------------------------------------------

    def cell_point(self, true_index: int, predicted_index: int) -> QPoint:
        """Where the centre of a cell is on the view's viewport (for clicks in tests)."""
        scene = self.correct_image.mapToScene(QPointF(predicted_index + 0.5, true_index + 0.5))
        return self.graphics.mapFromScene(scene)

    def label_point(self, axis: str, index: int) -> QPoint:
        """Where a class's label is on the viewport: axis "true" (the rows' labels) or "predicted"."""
        cell = self.cell_point(index, index)
        if axis == "true":
            rect = self.row_axis.sceneBoundingRect()
            return QPoint(self.graphics.mapFromScene(rect.center()).x(), cell.y())
        rect = self.column_axis.sceneBoundingRect()
        return QPoint(cell.x(), self.graphics.mapFromScene(QPointF(rect.center().x(), rect.top() + 8)).y())

    def _cell_at(self, scene_pos: QPointF) -> tuple[int, int] | None:
        """The (row, column) of the cell under a scene position, or None off the matrix."""
        point = self.plot.getViewBox().mapSceneToView(scene_pos)
        row, column = math.floor(point.y() + 0.5), math.floor(point.x() + 0.5)
        size = len(self.class_names)
        return (row, column) if 0 <= row < size and 0 <= column < size else None

    def _cell_pixels(self) -> tuple[float, float]:
        """How many screen pixels wide and high a cell is."""
        view = self.plot.getViewBox()
        origin, corner = view.mapViewToScene(QPointF(0, 0)), view.mapViewToScene(QPointF(1, 1))
        return abs(corner.x() - origin.x()), abs(corner.y() - origin.y())

    # --- drawing ------------------------------------------------------------

    def _redraw(self) -> None:
        """Draw the matrix in the mode shown. Shares are drawn as percentages,
        so the colour bars read as the cells do."""
        size = len(self.class_names)
        values = self.values()
        shares = self._difference_shares if self.difference is not None else self.mode() != "counts"
        shown = values * 100 if shares else values
        if self.difference is not None:
            limit = float(np.nanmax(np.abs(shown))) if np.isfinite(shown).any() else 0.0
            limit = limit or 1.0
            self.mistake_image.setImage(shown, autoLevels=False)
            self.mistake_bar.setLevels((-limit, limit))
            self.mistake_bar.getAxis("left").setLabel("difference" + (" (percentage points)" if shares else ""))
            self.correct_image.clear()
        else:
            diagonal = np.eye(size, dtype=bool)
            correct = np.where(diagonal, shown, np.nan)
            mistakes = np.where(diagonal, np.nan, shown)
            self.correct_image.setImage(correct, autoLevels=False)
            self.mistake_image.setImage(mistakes, autoLevels=False)
            self.correct_bar.setLevels((0, _largest(correct)))
            self.mistake_bar.setLevels((0, _largest(mistakes)))
            unit = " (%)" if shares else ""
            self.correct_bar.getAxis("left").setLabel("right (diagonal)" + unit)
            self.mistake_bar.getAxis("left").setLabel("mistakes (off-diagonal)" + unit)
        self.plot.getViewBox().setRange(xRange=(-0.5, size - 0.5), yRange=(-0.5, size - 0.5), padding=0)
        self._make_texts(values, shown)
        self._layout_key = None
        self._on_view_changed()

    def _make_texts(self, values: np.ndarray, shown: np.ndarray) -> None:
        """A TextItem per cell, only while the matrix is small enough that its
        cells can hold a number (100 classes would mean 10,000 items); white
        text on the dark end of a scale."""
        size = len(self.class_names)
        wanted = size if size <= MAX_TEXT_CLASSES else 0
        if len(self._texts) != wanted:
            for row in self._texts:
                for item in row:
                    self.plot.removeItem(item)
            self._texts = [[self._new_text(r, c) for c in range(wanted)] for r in range(wanted)]
        for r in range(wanted):
            for c in range(wanted):
                item = self._texts[r][c]
                item.setText(self._cell_text(values[r, c]))
                if self.difference is not None:
                    top = self.mistake_bar.levels()[1]
                    depth = abs(shown[r, c]) / max(top, 1e-12)
                else:
                    top = (self.correct_bar if r == c else self.mistake_bar).levels()[1]
                    depth = shown[r, c] / max(top, 1e-12)
                dark = bool(depth > DARK_TEXT_FROM)  # False for NaN
                item.setColor(QColor("white") if dark else QColor("#202020"))

    def _new_text(self, row: int, column: int) -> pg.TextItem:
        item = pg.TextItem(anchor=(0.5, 0.5))
        item.setFont(QFont(self.font().family(), 8))
        item.setPos(column, row)
        self.plot.addItem(item)
        return item

    def _cell_text(self, value: float) -> str:
        if math.isnan(value):
            return ""
        if self.difference is not None:
            if self._difference_shares:
                return _signed_percent(value)
            return f"{value:+.0f}" if round(value) != 0 else "0"
        if self.mode() == "counts":
            return str(int(value))
        return _percent(value)

    def _on_view_changed(self, *_) -> None:
        """Lay out the labels and the cells' numbers for the cells' size on screen."""
        size = len(self.class_names)
        width, height = self._cell_pixels() if size else (0.0, 0.0)
        key = (size, round(width, 1), round(height, 1))
        if key == self._layout_key:
            return
        self._layout_key = key
        metrics = QFontMetrics(self.row_axis.style.get("tickFont") or self.font())
        row_stride = max(1, math.ceil(metrics.height() / max(height, 1e-6)))
        row_ticks = [(index, metrics.elidedText(name, Qt.ElideRight, ROW_LABEL_WIDTH))
                     for index, name in enumerate(self.class_names) if index % row_stride == 0]
        self.row_axis.setTicks([row_ticks, []])
        column_stride = max(1, math.ceil(metrics.horizontalAdvance("W" * MIN_LABEL_CHARS) / max(width, 1e-6)))
        room = int(column_stride * width) - 4
        column_ticks = [(index, metrics.elidedText(name, Qt.ElideRight, room))
                        for index, name in enumerate(self.class_names) if index % column_stride == 0]
        self.column_axis.setTicks([column_ticks, []])
        self._ticks = {"true": row_ticks, "predicted": column_ticks}
        if self._texts:
            text_metrics = QFontMetrics(self._texts[0][0].textItem.font())
            widest = max(text_metrics.horizontalAdvance(item.toPlainText()) for row in self._texts for item in row)
            fits = width >= widest + TEXT_MARGIN and height >= text_metrics.height() + TEXT_MARGIN / 2
            for row in self._texts:
                for item in row:
                    item.setVisible(fits)

    def text_shown(self, true_index: int, predicted_index: int) -> str:
        """The number written in a cell, "" where none is shown (too many or too small cells)."""
        if not self._texts or not self._texts[true_index][predicted_index].isVisible():
            return ""
        return self._texts[true_index][predicted_index].toPlainText()

    def tick_labels(self, axis: str) -> list[tuple[int, str]]:
        """The labels shown on an axis ("true" or "predicted"): (class index, text)."""
        return list(self._ticks[axis])

    # --- handlers -----------------------------------------------------------

    def _on_mode_changed(self, _index: int) -> None:
        if self.difference is None and self.class_names:
            self._redraw()

    def _on_scene_clicked(self, event) -> None:
        if event.button() != Qt.LeftButton or not self.class_names:
            return
        pos = event.scenePos()
        if self.plot.getViewBox().sceneBoundingRect().contains(pos):
            cell = self._cell_at(pos)
            if cell is not None:
                self.cell_clicked.emit(*cell)
        elif self.row_axis.sceneBoundingRect().contains(pos):
            cell = self._cell_at(QPointF(self.plot.getViewBox().sceneBoundingRect().center().x(), pos.y()))
            if cell is not None:
                self.true_class_clicked.emit(cell[0])
        elif self.column_axis.sceneBoundingRect().contains(pos):
            cell = self._cell_at(QPointF(pos.x(), self.plot.getViewBox().sceneBoundingRect().center().y()))
            if cell is not None:
                self.predicted_class_clicked.emit(cell[1])

    def _on_mouse_moved(self, scene_pos: QPointF) -> None:
        """The cell under the mouse in words: with 100 classes, the only place its names and number fit."""
        cell = self._cell_at(scene_pos) if self.plot.getViewBox().sceneBoundingRect().contains(scene_pos) else None
        self.graphics.setToolTip(self._describe(*cell) if cell else "")

    def _describe(self, row: int, column: int) -> str:
        true, predicted = self.class_names[row], self.class_names[column]
        if self.difference is not None:
            return f"true {true}, predicted {predicted}: {self._cell_text(self.difference[row, column])}"
        recall, precision = self.values("true")[row, column], self.values("pred")[row, column]
        return (f"true {true}, predicted {predicted}: {self.counts[row, column]} images\n"
                f"{_percent(recall) or 'no images'} of true {true}, "
                f"{_percent(precision) or 'no images'} of predicted {predicted}")


def _check_square(matrix: np.ndarray, class_names: list[str]) -> None:
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] != len(class_names):
        raise ValueError(f"a confusion matrix must be square with a row per class: got shape {matrix.shape} "
                         f"for {len(class_names)} class names")


def _largest(values: np.ndarray) -> float:
    """The top of a colour scale: the largest value, or 1 when there is none (no mistakes at all)."""
    finite = values[np.isfinite(values)]
    top = float(finite.max()) if finite.size else 0.0
    return top if top > 0 else 1.0


def _percent(share: float) -> str:
    """A share as a percentage short enough for a cell: 1 decimal below 10%."""
    if math.isnan(share):
        return ""
    if share == 0:
        return "0"
    percent = 100 * share
    return f"{percent:.1f}%" if percent < 9.95 else f"{percent:.0f}%"


def _signed_percent(share: float) -> str:
    if share == 0:
        return "0"
    return ("+" if share > 0 else "-") + _percent(abs(share))


def _csv_value(value) -> str:
    if isinstance(value, (np.integer, int)):
        return str(int(value))
    return "" if math.isnan(value) else f"{float(value):.6g}"
