"""A metric over the epochs as a live plot: the Train tab's loss and accuracy.

Each curve is created once and fed with setData as data arrives, as
pyqtgraph's examples do; the per-batch trace is downsampled and clipped to
the view. It shows one run, live from its events or whole from a stored
history (`show_history`).
"""

from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtCore import Qt

SMOOTHING = 0.3  # weight of the newest interval in the per-batch trace's moving average
TRAIN_COLOR = "#1f77b4"
TRACE_COLOR = "#9ecae1"
VALIDATION_COLOR = "#ff7f0e"
BEST_COLOR = "#2ca02c"


class MetricPlot(pg.PlotWidget):
    """One metric over the epochs: train and validation per epoch, a smoothed
    per-batch train trace, and a marker at the best epoch.

    Progress reports carry Keras' running mean since the epoch began, which
    jumps at each epoch's start. Two consecutive means give the exact mean
    of the batches between them; the trace is a moving average of those, so
    it runs on smoothly across epochs, as TensorBoard's smoothing does.
    No grid: pyqtgraph redraws grid lines with the axes, which made each
    update half again as costly for the GUI thread.
    """

    def __init__(self, metric: str, title: str, legend_corner: tuple[int, int]):
        super().__init__()
        self.metric = metric
        self.setTitle(title)
        self.setLabel("bottom", "epoch")
        self.setMenuEnabled(False)
        self.legend = self.addLegend(offset=legend_corner, brush=pg.mkBrush(255, 255, 255, 210))
        self.batch_curve = self.plot(pen=pg.mkPen(TRACE_COLOR, width=1), name="train (per batch, smoothed)")
        self.batch_curve.setDownsampling(auto=True, method="mean")
        self.batch_curve.setClipToView(True)
        self.train_curve = self.plot(
            pen=pg.mkPen(TRAIN_COLOR, width=2), symbol="o", symbolSize=6, symbolBrush=TRAIN_COLOR,
            symbolPen=None, name="train",
        )
        self.validation_curve = self.plot(
            pen=pg.mkPen(VALIDATION_COLOR, width=2), symbol="s", symbolSize=6, symbolBrush=VALIDATION_COLOR,
            symbolPen=None, name="validation",
        )
        self.best_marker = self.plot(
            pen=None, symbol="star", symbolSize=16, symbolBrush=BEST_COLOR, symbolPen=None, name="best epoch",
        )
        self.best_line = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen(BEST_COLOR, width=1, style=Qt.DashLine))
        self.addItem(self.best_line)
        self.reset()

    def reset(self, validation_name: str = "validation", epochs: int = 0) -> None:
        """Clear the curves. With the run's epochs, the x axis spans the whole
        run from the start, which shows how far the run has come.

        The axes are set here and in _include rather than by pyqtgraph's
        auto-range: that refits on every update, and as the loss falls the
        y axis changed with nearly every point, redrawing the whole plot
        twice per update. A fixed x axis and a y axis that grows only when
        a value falls outside it cost a third of that."""
        self._batch_x: list[float] = []
        self._batch_y: list[float] = []
        self._batch_shown = 0  # how many of the points the curve shows
        self._last_report: tuple[int, int, float] | None = None  # epoch, batch, running mean
        self._epochs: list[int] = []
        self._train: list[float] = []
        self._validation: list[float] = []
        for curve in (self.batch_curve, self.train_curve, self.validation_curve, self.best_marker):
            curve.setData([], [])
        self.legend.removeItem(self.validation_curve)
        self.legend.removeItem(self.best_marker)
        self.legend.addItem(self.validation_curve, validation_name)
        self.legend.addItem(self.best_marker, "best epoch")
        self.best_line.hide()
        self.disableAutoRange()
        self.setXRange(0, max(epochs, 1), padding=0.02)
        self._low = self._high = None

    def add_batch(self, epoch: int, batch: int, steps: int, logs: dict, redraw: bool = True) -> None:
        """Add a progress report to the trace; `redraw` False only stores
        it (`redraw()` or the next epoch's point shows it)."""
        if self.metric not in logs:
            return
        mean = logs[self.metric]
        last = self._last_report
        if last is not None and last[0] == epoch:
            if batch <= last[1]:
                return
            interval = (mean * batch - last[2] * last[1]) / (batch - last[1])
        else:
            interval = mean  # an epoch's first report: the mean of its first batches
        self._last_report = (epoch, batch, mean)
        smoothed = interval if not self._batch_y else SMOOTHING * interval + (1 - SMOOTHING) * self._batch_y[-1]
        self._batch_x.append(epoch - 1 + batch / max(steps, 1))
        self._batch_y.append(smoothed)
        if redraw:
            self.redraw()

    def redraw(self) -> None:
        """Show the per-batch points stored since the last redraw."""
        new = self._batch_y[self._batch_shown:]
        if not new:
            return
        self._batch_shown = len(self._batch_y)
        self.batch_curve.setData(self._batch_x, self._batch_y)
        shown = [value for value in new if value == value]  # NaN has no place on the axis
        if shown:
            self._include(min(shown))
            self._include(max(shown))

    def _include(self, value: float) -> None:
        """Grow the y axis to show value, with room to spare, if it is outside."""
        if value != value:  # NaN: nothing to show
            return
        if self._low is not None and self._low <= value <= self._high:
            return
        low = value if self._low is None else min(value, self._low)
        high = value if self._high is None else max(value, self._high)
        margin = 0.1 * ((high - low) or abs(high) or 1.0)
        self._low, self._high = low - margin, high + margin
        self.setYRange(self._low, self._high, padding=0)

    def add_epoch(self, epoch: int, logs: dict, best_epoch: int, monitor: str) -> None:
        """Add an epoch's point; mark the best epoch (by `monitor`, e.g.
        val_accuracy) on the curve of the split it was judged on."""
        self.redraw()
        self._epochs.append(epoch)
        self._train.append(logs.get(self.metric, float("nan")))
        self._validation.append(logs.get("val_" + self.metric, float("nan")))
        self.train_curve.setData(self._epochs, self._train)
        self._include(self._train[-1])
        self._include(self._validation[-1])
        if any(value == value for value in self._validation):
            self.validation_curve.setData(self._epochs, self._validation)
        if best_epoch in self._epochs:
            values = self._validation if monitor.startswith("val_") else self._train
            self.best_marker.setData([best_epoch], [values[self._epochs.index(best_epoch)]])
            self.best_line.setValue(best_epoch)
            self.best_line.show()

    def show_history(self, history: dict[str, list[float]], best_epoch: int = 0, monitor: str = "val_accuracy",
                     validation_name: str = "validation") -> None:
        """Show a stored run whole: its history.csv as a dict of lists."""
        epochs = [int(e) + 1 for e in history.get("epoch", [])] or list(range(1, len(history.get(self.metric, [])) + 1))
        self.reset(validation_name, len(epochs))
        for index, epoch in enumerate(epochs):
            logs = {key: values[index] for key, values in history.items() if index < len(values)}
            self.add_epoch(epoch, logs, best_epoch, monitor)
