"""One image's top classes as horizontal bars: the Results tab's chosen image and Classify's pictures.

Painted with QPainter rather than a plot: five bars with a name and a
percentage each need no axes, no zoom and no scene, and Classify shows one
per picture. A model that outputs NaN gets "not a number", never "nan%".
"""

from __future__ import annotations

import math

import numpy as np
from PySide6.QtCore import QRectF, QSize, Qt
from PySide6.QtGui import QColor, QPainter
from PySide6.QtWidgets import QSizePolicy, QWidget

TOP_K = 5
BAR_COLOR = QColor("#4c78a8")
HIGHLIGHT_COLOR = QColor("#2e7d32")
TRACK_COLOR = QColor("#eeeeee")
NO_PREDICTION = "no prediction"
NOT_A_NUMBER = "not a number"
NAME_SHARE = 0.38  # of the width, for the class names
VALUE_WIDTH = 80  # pixels for the percentage ("not a number" fits)
ROW_PADDING = 6


def format_probability(probability: float) -> str:
    """A probability as a percentage with one decimal; "not a number" for NaN or infinity."""
    if probability is None or not math.isfinite(probability):
        return NOT_A_NUMBER
    return f"{100 * probability:.1f}%"


class ProbabilityBars(QWidget):
    """The top classes of one prediction, best first, as bars with names and percentages.

    `set_probabilities(names, probs)` takes any number of classes (the top-5,
    or the whole softmax) and shows the `top_k` largest; `highlight` names a
    class drawn in green, such as the image's true class.
    """

    def __init__(self, top_k: int = TOP_K, parent: QWidget | None = None):
        super().__init__(parent)
        self.top_k = top_k
        self._rows: list[tuple[str, float]] = []
        self._highlight: str | None = None
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
        self.setMinimumWidth(200)

    def set_probabilities(self, names: list[str] | None, probs, highlight: str | None = None) -> None:
        """Show these classes' probabilities; nothing (None or empty) shows "no prediction"."""
        names = list(names or [])
        probs = np.asarray([] if probs is None else probs, dtype=np.float64).ravel()
        if len(names) != len(probs):
            raise ValueError(f"{len(names)} class names for {len(probs)} probabilities")
        # Best first; NaN and infinities sort last, in the order given.
        order = np.argsort(-np.where(np.isfinite(probs), probs, -np.inf), kind="stable")[:self.top_k]
        self._rows = [(str(names[i]), float(probs[i])) for i in order]
        self._highlight = highlight
        self.setToolTip("\n".join(f"{name}: {format_probability(p)}" for name, p in self._rows))
        self.updateGeometry()
        self.update()

    def clear(self) -> None:
        self.set_probabilities(None, None)

    def texts(self) -> list[tuple[str, str]]:
        """What each bar says: (class name, percentage), best first."""
        return [(name, format_probability(p)) for name, p in self._rows]

    def message(self) -> str:
        """The text shown instead of bars: "no prediction", else ""."""
        return "" if self._rows else NO_PREDICTION

    def _row_height(self) -> int:
        return self.fontMetrics().height() + ROW_PADDING

    def sizeHint(self) -> QSize:
        return QSize(280, self._row_height() * self.top_k + 4)

    def minimumSizeHint(self) -> QSize:
        return QSize(200, self._row_height() * self.top_k + 4)

    def paintEvent(self, _event) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.Antialiasing)
        if not self._rows:
            painter.setPen(self.palette().placeholderText().color())
            painter.drawText(self.rect(), Qt.AlignCenter, NO_PREDICTION)
            return
        metrics = self.fontMetrics()
        height = self._row_height()
        name_width = int(self.width() * NAME_SHARE)
        bar_left = name_width + 6
        bar_width = max(10, self.width() - bar_left - VALUE_WIDTH - 6)
        for index, (name, probability) in enumerate(self._rows):
            top = 2 + index * height
            bar_rect = QRectF(bar_left, top + 3, bar_width, height - 6)
            painter.setPen(self.palette().text().color())
            painter.drawText(QRectF(0, top, name_width, height), Qt.AlignVCenter | Qt.AlignRight,
                             metrics.elidedText(name, Qt.ElideRight, name_width))
            painter.fillRect(bar_rect, TRACK_COLOR)
            if math.isfinite(probability):
                filled = QRectF(bar_rect)
                filled.setWidth(bar_width * min(max(probability, 0.0), 1.0))
                painter.fillRect(filled, HIGHLIGHT_COLOR if name == self._highlight else BAR_COLOR)
            painter.drawText(QRectF(bar_left + bar_width + 6, top, VALUE_WIDTH, height),
                             Qt.AlignVCenter | Qt.AlignLeft, format_probability(probability))
