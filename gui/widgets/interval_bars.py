"""Per-class differences as bars around zero with 95% intervals: head to head's F1 differences.

A bar above zero (green) is a class where run B does better, below (red)
worse; the error bar is the paired bootstrap interval, so a bar whose
interval crosses zero reads at a glance as "could be chance". A BarGraphItem
and an ErrorBarItem in one plot, class names as the x axis' ticks.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from pyqtgraph.exporters import ImageExporter
from PySide6.QtCore import Qt
from PySide6.QtGui import QFontMetrics

POSITIVE_COLOR = "#2ca02c"
NEGATIVE_COLOR = "#d62728"
BAR_WIDTH = 0.6
LABEL_GAP = 10  # pixels between neighbouring class names
AXIS_ROOM = 90  # pixels of the plot that are not bars: the left axis and margins


class IntervalBars(pg.PlotWidget):
    """Signed values per class with their intervals. `set_values(names, values, low, high)`;
    the widget asks for enough width that every class name on the x axis can be read."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setMenuEnabled(False)
        self.setMouseEnabled(x=False, y=False)
        self.hideButtons()
        self.showGrid(x=False, y=True, alpha=0.2)
        self.bars = pg.BarGraphItem(x=[], height=[], width=BAR_WIDTH)
        self.intervals = pg.ErrorBarItem(x=np.zeros(0), y=np.zeros(0), beam=0.25, pen=pg.mkPen("k", width=1.5))
        self.zero_line = pg.InfiniteLine(pos=0, angle=0, movable=False, pen=pg.mkPen("#404040", width=1))
        self.addItem(self.bars)
        self.addItem(self.intervals)
        self.addItem(self.zero_line)
        self.names: list[str] = []
        self.values = np.zeros(0)
        self.low = np.zeros(0)
        self.high = np.zeros(0)

    def set_values(self, names: list[str], values, low, high, title: str = "") -> None:
        """One bar per class: its value, and the interval low..high drawn as an error bar."""
        values, low, high = (np.asarray(a, dtype=np.float64).ravel() for a in (values, low, high))
        if not len(names) == len(values) == len(low) == len(high):
            raise ValueError(f"{len(names)} class names for {len(values)} values, {len(low)} lows and "
                             f"{len(high)} highs")
        self.names = [str(name) for name in names]
        self.values, self.low, self.high = values, low, high
        x = np.arange(len(values), dtype=np.float64)
        shown = np.nan_to_num(values)
        brushes = [pg.mkBrush(POSITIVE_COLOR if v >= 0 else NEGATIVE_COLOR) for v in shown]
        self.bars.setOpts(x=x, height=shown, width=BAR_WIDTH, brushes=brushes, pens=[pg.mkPen(None)] * len(x))
        self.intervals.setData(x=x, y=shown, top=np.nan_to_num(high - values), bottom=np.nan_to_num(values - low))
        self.setTitle(html.escape(title) if title else None)
        self._set_ticks()
        self.setToolTip("\n".join(f"{name}: {v:+.3f} [{lo:+.3f}, {hi:+.3f}]"
                                  for name, v, lo, hi in zip(self.names, values, low, high)))
        ends = np.concatenate([shown, np.nan_to_num(low), np.nan_to_num(high), [0.0]])
        margin = 0.1 * ((ends.max() - ends.min()) or 1.0)
        self.setXRange(-0.5, max(len(x), 1) - 0.5, padding=0.02)
        self.setYRange(ends.min() - margin, ends.max() + margin, padding=0)

    def bar_data(self) -> tuple[np.ndarray, np.ndarray]:
        """(x, height) of the bars as drawn."""
        return np.asarray(self.bars.opts["x"], dtype=np.float64), np.asarray(self.bars.opts["height"],
                                                                            dtype=np.float64)

    def interval_ends(self) -> tuple[np.ndarray, np.ndarray]:
        """(bottom, top) of each error bar in the plot's units, as drawn."""
        opts = self.intervals.opts
        y = np.asarray(opts["y"], dtype=np.float64)
        return y - np.asarray(opts["bottom"], dtype=np.float64), y + np.asarray(opts["top"], dtype=np.float64)

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._set_ticks()

    def _set_ticks(self) -> None:
        """Every class name under its bar, cut short ("autom…") where the plot is narrower than
        readable_width, so the tab needs no minimum width and the labels never overlap."""
        names = list(getattr(self, "names", []))
        if not names or self.plotItem is None:  # nothing to label yet, or being closed
            return
        axis = self.getAxis("bottom")
        metrics = QFontMetrics(axis.style.get("tickFont") or self.font())
        room = max(1, (self.width() - AXIS_ROOM) // len(names) - LABEL_GAP)
        shown = [name if metrics.horizontalAdvance(name) <= room else metrics.elidedText(name, Qt.ElideRight, room)
                 for name in names]
        axis.setTicks([[(float(i), text) for i, text in enumerate(shown)], []])

    def readable_width(self) -> int:
        """Pixels wide enough for every class name to show under its bar."""
        axis = self.getAxis("bottom")
        metrics = QFontMetrics(axis.style.get("tickFont") or self.font())
        widest = max((metrics.horizontalAdvance(name) for name in self.names), default=0)
        return AXIS_ROOM + len(self.names) * (widest + LABEL_GAP)

    def export_png(self, path: str | Path) -> None:
        """Write the bars with their axes and title as a PNG."""
        ImageExporter(self.plotItem).export(str(path))

