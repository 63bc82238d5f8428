"""Test images with their true and predicted classes: the Results tab's gallery.

A QListView over a list model rather than a widget per image, so 10,000
images cost no more than the few dozen on screen: the view asks the model
only for the rows it paints (uniform item sizes, so it never measures the
others), and a thumbnail is made from the uint8 array the first time its row
is painted, then kept in a least-recently-used cache.

The gallery shows a selection of rows, as Orange's confusion matrix feeds
its output: `show_rows` takes positions into the arrays given to
`set_data`, and every signal and export speaks in those positions.
"""

from __future__ import annotations

import csv
from collections import OrderedDict
from pathlib import Path

import numpy as np
from PySide6.QtCore import QAbstractListModel, QModelIndex, QRect, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QImage, QPainter, QPen, QPixmap
from PySide6.QtWidgets import QLabel, QListView, QStyle, QStyledItemDelegate, QVBoxLayout, QWidget

from gui.widgets.bars import format_probability

THUMBNAIL_SIDE = 64
CACHE_SIZE = 2000  # thumbnails kept: a few screens' worth (64x64 RGB: 12 KB each)
RIGHT_COLOR = QColor("#2e7d32")
WRONG_COLOR = QColor("#c62828")
PLACEHOLDER_COLOR = QColor("#e0e0e0")
FRAME_WIDTH = 3
ROW_ROLE = Qt.UserRole + 1  # the position into the arrays
RIGHT_ROLE = Qt.UserRole + 2  # True when the prediction is right
CAPTION_ROLE = Qt.UserRole + 3  # (predicted class, its probability, true class)
NO_IMAGES_NOTICE = "The images are not available: captions only."


class GalleryModel(QAbstractListModel):
    """The shown rows of the test set, one list item each; data on demand.

    `thumbnails_made` counts the thumbnails made so far: a measure of how
    lazy the view is (it should be near the number of items ever on screen).
    """

    def __init__(self, thumbnail_side: int = THUMBNAIL_SIDE, parent=None):
        super().__init__(parent)
        self.thumbnail_side = thumbnail_side
        self.images: np.ndarray | None = None
        self.y_true = np.zeros(0, dtype=np.int64)
        self.y_pred = np.zeros(0, dtype=np.int64)
        self.top1_prob = np.zeros(0, dtype=np.float64)
        self.class_names: list[str] = []
        self.files: list[str] | None = None
        self.rows = np.zeros(0, dtype=np.int64)
        self.thumbnails_made = 0
        self._thumbnails: OrderedDict[int, QPixmap] = OrderedDict()

    def set_data(self, images, y_true, y_pred, top1_prob, class_names, files) -> None:
        self.beginResetModel()
        self.images = images
        self.y_true, self.y_pred, self.top1_prob = y_true, y_pred, top1_prob
        self.class_names = class_names
        self.files = files
        self.rows = np.arange(len(y_true), dtype=np.int64)
        self._thumbnails.clear()
        self.endResetModel()

    def set_rows(self, rows: np.ndarray) -> None:
        """Show these positions, in this order; thumbnails already made are kept."""
        self.beginResetModel()
        self.rows = rows
        self.endResetModel()

    def rowCount(self, parent: QModelIndex | None = None) -> int:
        return 0 if parent is not None and parent.isValid() else len(self.rows)

    def data(self, index: QModelIndex, role: int = Qt.DisplayRole):
        if not index.isValid() or index.row() >= len(self.rows):
            return None
        row = int(self.rows[index.row()])
        if role == Qt.DecorationRole:
            return self.thumbnail(row)
        if role == ROW_ROLE:
            return row
        if role == RIGHT_ROLE:
            return bool(self.y_true[row] == self.y_pred[row])
        if role == CAPTION_ROLE:
            return self.caption(row)
        if role == Qt.DisplayRole:
            predicted, probability, true = self.caption(row)
            return f"{predicted} {probability}\ntrue {true}"
        if role == Qt.ToolTipRole:
            return self.describe(row)
        return None

    def name(self, label) -> str:
        label = int(label)
        return self.class_names[label] if 0 <= label < len(self.class_names) else f"class {label}"

    def file(self, row: int) -> str:
        return self.files[row] if self.files is not None else ""

    def caption(self, row: int) -> tuple[str, str, str]:
        return (self.name(self.y_pred[row]), format_probability(float(self.top1_prob[row])),
                self.name(self.y_true[row]))

    def describe(self, row: int) -> str:
        verdict = "right" if self.y_true[row] == self.y_pred[row] else "wrong"
        probability = format_probability(float(self.top1_prob[row]))
        lines = [f"Image {row}" + (f": {self.file(row)}" if self.file(row) else ""),
                 f"true class: {self.name(self.y_true[row])}",
                 f"predicted: {self.name(self.y_pred[row])} ({probability}, {verdict})"]
        return "\n".join(lines)

    def thumbnail(self, row: int) -> QPixmap | None:
        """The row's thumbnail, made on first use; None without images."""
        if self.images is None:
            return None
        pixmap = self._thumbnails.get(row)
        if pixmap is not None:
            self._thumbnails.move_to_end(row)
            return pixmap
        pixmap = QPixmap.fromImage(array_to_qimage(self.images[row])).scaled(
            self.thumbnail_side, self.thumbnail_side, Qt.KeepAspectRatio, Qt.SmoothTransformation)
        self.thumbnails_made += 1
        self._thumbnails[row] = pixmap
        if len(self._thumbnails) > CACHE_SIZE:
            self._thumbnails.popitem(last=False)
        return pixmap


def array_to_qimage(image: np.ndarray) -> QImage:
    """A QImage that owns a copy of a (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) uint8 array."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    image = np.ascontiguousarray(image)
    height, width = image.shape[:2]
    if image.ndim == 2:
        qimage = QImage(image.data, width, height, width, QImage.Format_Grayscale8)
    elif image.shape[2] == 4:
        qimage = QImage(image.data, width, height, 4 * width, QImage.Format_RGBA8888)
    else:
        qimage = QImage(image.data, width, height, 3 * width, QImage.Format_RGB888)
    return qimage.copy()


class GalleryDelegate(QStyledItemDelegate):
    """Paints an item: the thumbnail (or a placeholder) in a green frame when
    right and a red one when wrong, a ✓ or ✗ for anyone who cannot tell the colours
    apart, the predicted class with its probability, and the true class."""

    def __init__(self, thumbnail_side: int = THUMBNAIL_SIDE, parent=None):
        super().__init__(parent)
        self.thumbnail_side = thumbnail_side

    def sizeHint(self, option, index) -> QSize:
        line = option.fontMetrics.height()
        return QSize(max(self.thumbnail_side + 2 * FRAME_WIDTH + 8, 110),
                     self.thumbnail_side + 2 * FRAME_WIDTH + 6 + 2 * line)

    def paint(self, painter: QPainter, option, index) -> None:
        painter.save()
        rect = option.rect
        if option.state & QStyle.State_Selected:
            painter.fillRect(rect, option.palette.highlight().color().lighter(160))
        right = index.data(RIGHT_ROLE)
        color = RIGHT_COLOR if right else WRONG_COLOR
        side = self.thumbnail_side
        frame = QRect(rect.x() + (rect.width() - side) // 2 - FRAME_WIDTH, rect.y() + 3,
                      side + 2 * FRAME_WIDTH, side + 2 * FRAME_WIDTH)
        painter.fillRect(frame, color)
        inner = frame.adjusted(FRAME_WIDTH, FRAME_WIDTH, -FRAME_WIDTH, -FRAME_WIDTH)
        pixmap = index.data(Qt.DecorationRole)
        if pixmap is None:
            painter.fillRect(inner, PLACEHOLDER_COLOR)
            painter.setPen(QColor("#757575"))
            painter.drawText(inner, Qt.AlignCenter, "no image")
        else:
            target = QRect(0, 0, pixmap.width(), pixmap.height())
            target.moveCenter(inner.center())
            painter.drawPixmap(target, pixmap)
        mark = QRect(frame.right() - 14, frame.top(), 15, 15)
        painter.fillRect(mark, color)
        painter.setPen(QPen(Qt.white))
        bold = QFont(option.font)
        bold.setBold(True)
        painter.setFont(bold)
        painter.drawText(mark, Qt.AlignCenter, "✓" if right else "✗")
        predicted, probability, true = index.data(CAPTION_ROLE)
        metrics = option.fontMetrics
        line = metrics.height()
        text_rect = QRect(rect.x() + 2, frame.bottom() + 3, rect.width() - 4, line)
        room = text_rect.width() - metrics.horizontalAdvance(" " + probability)  # the probability is never cut
        painter.setFont(option.font)
        painter.setPen(option.palette.text().color() if right else WRONG_COLOR)
        painter.drawText(text_rect, Qt.AlignHCenter,
                         metrics.elidedText(predicted, Qt.ElideRight, room) + " " + probability)
        painter.setPen(QColor("#666666"))
        painter.drawText(text_rect.translated(0, line), Qt.AlignHCenter,
                         metrics.elidedText("true " + true, Qt.ElideRight, text_rect.width()))
        painter.restore()


class ImageGallery(QWidget):
    """A title, and the shown images as thumbnails with their classes.

    `set_data` gives the whole split (images may be None: captions only);
    `show_rows(rows, title)` chooses which positions are shown and in what
    order. `image_selected(row)` is emitted with the position into the
    arrays when an item becomes the current one (a click, or the arrow keys).
    """

    image_selected = Signal(int)

    def __init__(self, thumbnail_side: int = THUMBNAIL_SIDE, parent: QWidget | None = None):
        super().__init__(parent)
        self.title = QLabel("No images.")
        self.title.setObjectName("params")
        self.title.setWordWrap(True)  # a long selection title must not widen the tab
        self.notice = QLabel(NO_IMAGES_NOTICE)
        self.notice.setObjectName("hint")
        self.notice.hide()
        self.model = GalleryModel(thumbnail_side, self)
        self.view = QListView()
        self.view.setViewMode(QListView.IconMode)
        self.view.setMovement(QListView.Static)
        self.view.setResizeMode(QListView.Adjust)
        self.view.setUniformItemSizes(True)
        self.view.setSpacing(2)
        self.view.setSelectionMode(QListView.ExtendedSelection)
        self.view.setWordWrap(False)
        self.view.setItemDelegate(GalleryDelegate(thumbnail_side, self.view))
        self.view.setModel(self.model)
        self.view.selectionModel().currentChanged.connect(self._on_current_changed)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.title)
        layout.addWidget(self.notice)
        layout.addWidget(self.view, 1)

    def set_data(self, images: np.ndarray | None, y_true, y_pred, top1_prob, class_names: list[str],
                 files: list[str] | None = None) -> None:
        """Give the gallery a split: images (N, H, W, C) uint8 or None, true
        and predicted labels, the top class's probability, the class names
        and, when known, each image's file. All images are shown."""
        y_true = np.asarray(y_true).astype(np.int64).ravel()
        y_pred = np.asarray(y_pred).astype(np.int64).ravel()
        top1_prob = np.asarray(top1_prob, dtype=np.float64).ravel()
        count = len(y_true)
        lengths = {"predicted labels": len(y_pred), "probabilities": len(top1_prob)}
        if images is not None:
            lengths["images"] = len(images)
        if files is not None:
            lengths["files"] = len(files)
        wrong = {what: length for what, length in lengths.items() if length != count}
        if wrong:
            raise ValueError(f"{count} true labels, but " + ", ".join(f"{n} {w}" for w, n in wrong.items()))
        self.model.set_data(images, y_true, y_pred, top1_prob, [str(n) for n in class_names],
                            None if files is None else [str(f) for f in files])
        self.notice.setVisible(images is None and count > 0)
        self.title.setText(f"All images: {count:,}" if count else "No images.")
        self.view.scrollToTop()

    def show_rows(self, rows, title: str) -> None:
        """Show these positions into the arrays, in the order given, under a title."""
        rows = np.asarray(rows, dtype=np.int64).ravel()
        count = len(self.model.y_true)
        if rows.size and (rows.min() < 0 or rows.max() >= count):
            raise ValueError(f"rows must be positions into the {count} images given to set_data")
        self.model.set_rows(rows.copy())
        self.title.setText(title)
        self.view.scrollToTop()

    def current_rows(self) -> np.ndarray:
        """The shown positions, in their order."""
        return self.model.rows.copy()

    def selected_rows(self) -> np.ndarray:
        """The positions of the selected items, in the order shown."""
        items = sorted(index.row() for index in self.view.selectionModel().selectedIndexes())
        return self.model.rows[items].copy() if items else np.zeros(0, dtype=np.int64)

    def export_csv(self, path: str | Path, rows=None) -> None:
        """Write the shown images (or these rows) as CSV: index (the position
        into the arrays), file (empty when unknown), true class, predicted
        class, probability of the predicted class."""
        model = self.model
        rows = model.rows if rows is None else np.asarray(rows, dtype=np.int64).ravel()
        with open(path, "w", newline="", encoding="utf-8") as file:
            writer = csv.writer(file)
            writer.writerow(["index", "file", "true class", "predicted class", "probability"])
            for row in rows:
                row = int(row)
                probability = float(model.top1_prob[row])
                writer.writerow([row, model.file(row), model.name(model.y_true[row]), model.name(model.y_pred[row]),
                                 f"{probability:.6g}"])

    def _on_current_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        if current.isValid():
            self.image_selected.emit(int(current.data(ROW_ROLE)))
