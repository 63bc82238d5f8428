"""Several runs' curves of one metric overlaid: the Compare tab's and the report's curves.

One colour per run from a fixed palette, so a run keeps its colour between
the loss and the accuracy plot; train solid, validation dashed, a star at
each run's best epoch. The numbers come from engine.comparison (curve,
smooth, best_point), the same functions the CLI and the report use.
Curves are created once per run slot and fed with setData, as pyqtgraph's
examples do.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from pyqtgraph.exporters import ImageExporter
from PySide6.QtCore import Qt

from engine.comparison import CURVE_AXES, best_point, curve, smooth

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
           "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]  # matplotlib's tab10
METRICS = {"loss": "Loss", "accuracy": "Accuracy"}
X_LABELS = {"epoch": "epoch", "time": "training time (s)"}
STYLE_COLOR = "#505050"  # the legend's key to the line styles


def run_color(index: int) -> str:
    """The colour of the index-th run, the same in every plot."""
    return PALETTE[index % len(PALETTE)]


class _RunCurves:
    """The items one run slot draws: train, validation and the best-epoch star."""

    def __init__(self, plot: pg.PlotWidget, color: str):
        self.train = plot.plot(pen=pg.mkPen(color, width=2))
        self.validation = plot.plot(pen=pg.mkPen(color, width=2, style=Qt.DashLine))
        self.best = plot.plot(pen=None, symbol="star", symbolSize=14, symbolBrush=color,
                              symbolPen=pg.mkPen("k", width=0.5))
        for item in (self.train, self.validation):
            item.setDownsampling(auto=True, method="mean")
            item.setClipToView(True)

    def items(self) -> tuple:
        return self.train, self.validation, self.best


class OverlayPlot(pg.PlotWidget):
    """One metric ("loss" or "accuracy") of several runs over epochs or wall time.

    `set_runs` takes (label, history, best_epoch) per run, the history a
    dict of lists as history.csv holds it. `curve_data()` gives what is
    drawn, in the metric's units (before any log axis), for tests.
    """

    def __init__(self, metric: str = "loss", parent=None):
        super().__init__(parent)
        self.setMenuEnabled(False)
        self.showGrid(x=False, y=True, alpha=0.2)
        self.legend = self.addLegend(offset=(-10, 10), brush=pg.mkBrush(255, 255, 255, 210))
        for axis in ("left", "bottom"):  # accuracy as 0.4-0.8, not "(x0.001)" 400-800
            self.getAxis(axis).enableAutoSIPrefix(False)
        self._slots: list[_RunCurves] = []
        self._runs: list[tuple[str, dict[str, list[float]], int]] = []
        self._metric = "loss"
        self._x = "epoch"
        self._log_y = False
        self._weight = 0.0
        self._data: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
        self._stars: dict[str, tuple[float, float]] = {}
        # Line styles explained once, not per run: they draw nothing.
        self._train_key = pg.PlotDataItem(pen=pg.mkPen(STYLE_COLOR, width=2))
        self._validation_key = pg.PlotDataItem(pen=pg.mkPen(STYLE_COLOR, width=2, style=Qt.DashLine))
        self._best_key = pg.PlotDataItem(pen=None, symbol="star", symbolSize=12, symbolBrush=STYLE_COLOR,
                                         symbolPen=None)
        self.setLabel("bottom", X_LABELS[self._x])
        self.set_metric(metric)

    # --- settings -----------------------------------------------------------

    def set_runs(self, runs: list[tuple[str, dict[str, list[float]], int]]) -> None:
        """Show these runs, in this order (the first gets the palette's first colour)."""
        self._runs = [(str(label), history, int(best_epoch or 0)) for label, history, best_epoch in runs]
        while len(self._slots) < len(self._runs):
            self._slots.append(_RunCurves(self, run_color(len(self._slots))))
        self._redraw()

    def set_metric(self, metric: str) -> None:
        """"loss" or "accuracy": draws the metric (train) and val_<metric> (validation)."""
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}: one of {', '.join(METRICS)}")
        self._metric = metric
        # Loss falls and accuracy rises: the legend goes where the curves are not, as on the Train tab.
        self.legend.anchor(itemPos=(1, 0 if metric == "loss" else 1), parentPos=(1, 0 if metric == "loss" else 1),
                           offset=(-10, 10 if metric == "loss" else -40))
        self.setTitle(METRICS[metric])
        self.setLabel("left", metric)
        self._redraw()

    def set_x_axis(self, x: str) -> None:
        """"epoch" or "time" (the history's elapsed seconds)."""
        if x not in CURVE_AXES:
            raise ValueError(f"unknown x axis {x!r}: one of {', '.join(CURVE_AXES)}")
        self._x = x
        self.setLabel("bottom", X_LABELS[x])
        self._redraw()

    def set_log_y(self, log: bool) -> None:
        self._log_y = bool(log)
        self.setLogMode(x=False, y=self._log_y)
        self._redraw()

    def set_smoothing(self, weight: float) -> None:
        """TensorBoard's smoothing weight, 0 (none) to below 1."""
        weight = float(weight)
        if not 0.0 <= weight < 1.0:
            raise ValueError(f"smoothing weight {weight} must be at least 0 and below 1")
        self._weight = weight
        self._redraw()

    def shown_metric(self) -> str:
        """The metric shown (not `metric`: that is QPaintDevice's, which painting calls)."""
        return self._metric

    def shown_x_axis(self) -> str:
        return self._x

    # --- results ------------------------------------------------------------

    def curve_data(self) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
        """(label, history column) -> (x, y) as drawn (smoothed, before a log axis); curves with no points left out."""
        return {key: (x.copy(), y.copy()) for key, (x, y) in self._data.items()}

    def best_points(self) -> dict[str, tuple[float, float]]:
        """label -> (x, y) of the star marking the run's best epoch."""
        return dict(self._stars)

    def export_png(self, path: str | Path) -> None:
        """Write the plot with its legend and axes as a PNG."""
        ImageExporter(self.plotItem).export(str(path))

    # --- drawing ------------------------------------------------------------

    def _redraw(self) -> None:
        self._data = {}
        self._stars = {}
        self.legend.clear()
        shown = []
        for index, slot in enumerate(self._slots):
            if index >= len(self._runs):
                for item in slot.items():
                    item.setData([], [])
                continue
            label, history, best_epoch = self._runs[index]
            drawn = {}
            for item, column in ((slot.train, self._metric), (slot.validation, "val_" + self._metric)):
                x, y = self._points(history, column)
                item.setData(x, y)
                if len(x):
                    self._data[(label, column)] = (x, y)
                    drawn[column] = (x, y)
            star = self._best(history, best_epoch, drawn)
            slot.best.setData(*([[star[0]], [star[1]]] if star else [[], []]))
            if star:
                self._stars[label] = star
            if drawn:
                self.legend.addItem(slot.train, html.escape(label))  # legend labels are rich text
                shown.append(label)
        if shown:
            self.legend.addItem(self._train_key, "train")
            self.legend.addItem(self._validation_key, "validation")
            self.legend.addItem(self._best_key, "best epoch")
        self.enableAutoRange()

    def _points(self, history: dict[str, list[float]], column: str) -> tuple[np.ndarray, np.ndarray]:
        """A column's curve, smoothed; points a log axis cannot show (y <= 0) left out there."""
        x, y = curve(history, column, self._x)
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        if len(y) and self._weight > 0:
            y = np.asarray(smooth(y, self._weight), dtype=np.float64)
        if self._log_y:
            keep = y > 0
            x, y = x[keep], y[keep]
        return x, y

    def _best(self, history, best_epoch: int, drawn: dict) -> tuple[float, float] | None:
        """The star: on the validation curve where there is one, else on the train curve; at the
        drawn (smoothed) value, so it sits on its line."""
        for column in ("val_" + self._metric, self._metric):
            if column not in drawn or best_epoch <= 0:
                continue
            point = best_point(history, best_epoch, column, self._x)
            if point is None:
                continue
            x, y = drawn[column]
            at = np.flatnonzero(np.isclose(x, point[0]))
            return float(point[0]), float(y[at[0]]) if len(at) else float(point[1])
        return None
