"""The Train tab: Train and Stop, progress, live curves, log and summary.

Shows one run as its events arrive from the worker: Progress a few times a
second (the progress bar and the per-batch train trace), EpochEnded once an
epoch (the per-epoch points and the best-epoch marker), RunEnded once. Each
curve is created once and fed with setData, as pyqtgraph's examples do.
"""

from __future__ import annotations

import time

import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QHBoxLayout, QLabel, QPlainTextEdit, QProgressBar, QPushButton, QSplitter, QVBoxLayout, QWidget,
)

from gui.worker import Worker

SMOOTHING = 0.3  # weight of the newest interval in the per-batch trace's moving average
TRAIN_COLOR = "#1f77b4"
TRACE_COLOR = "#9ecae1"
VALIDATION_COLOR = "#ff7f0e"
BEST_COLOR = "#2ca02c"
LOG_LINES = 5000
# The per-batch trace is redrawn at most this often (the progress bar follows
# every report). Repainting the two plots is most of what the window does
# while a model trains, and on a machine whose cores all train, every
# millisecond of it is taken from training (benchmarks/bench_gui_vs_cli.py).
PLOT_INTERVAL = 1.0


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


class TrainTab(QWidget):
    """Starts and stops runs (through the window) and shows the current one."""

    def __init__(self, worker: Worker, parent: QWidget | None = None):
        super().__init__(parent)
        self.train_button = QPushButton("Train")
        self.train_button.setObjectName("train")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.reason = QLabel()
        self.reason.setObjectName("reason")
        self.reason.setWordWrap(True)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("idle")
        self.stats = QLabel()
        self.summary = QLabel()
        self.summary.setObjectName("summary")
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.loss_plot = MetricPlot("loss", "Loss", legend_corner=(-10, 10))
        self.accuracy_plot = MetricPlot("accuracy", "Accuracy", legend_corner=(-10, -10))
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(LOG_LINES)
        self.log.setFont(QFont("monospace", 9))
        self.log.setPlaceholderText("The run's log appears here.")
        self.epochs = 0
        self._last_plot = 0.0  # time.monotonic() of the last redraw of the per-batch traces

        buttons = QHBoxLayout()
        buttons.addWidget(self.train_button)
        buttons.addWidget(self.stop_button)
        buttons.addWidget(self.reason, 1)
        plots = QSplitter(Qt.Horizontal)
        plots.addWidget(self.loss_plot)
        plots.addWidget(self.accuracy_plot)
        lower = QSplitter(Qt.Vertical)
        lower.addWidget(plots)
        lower.addWidget(self.log)
        lower.setStretchFactor(0, 3)
        lower.setStretchFactor(1, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.stats)
        layout.addWidget(self.summary)
        layout.addWidget(lower, 1)

        worker.stage.connect(self._on_stage)
        worker.run_started.connect(self._on_run_started)
        worker.progress.connect(self._on_progress)
        worker.epoch_ended.connect(self._on_epoch_ended)
        worker.run_ended.connect(self._on_run_ended)
        worker.log.connect(self._on_log)

    def set_running(self, running: bool, reason: str = "") -> None:
        """Enable Train (unless `reason` says why not) or Stop."""
        self.train_button.setEnabled(not running and not reason)
        self.stop_button.setEnabled(running)
        self.reason.setText("" if running else reason)

    def start(self, description: str) -> None:
        """Clear the previous run's curves and say what is starting."""
        self.loss_plot.reset()
        self.accuracy_plot.reset()
        self.summary.clear()
        self.stats.clear()
        self.progress.setRange(0, 0)
        self.progress.setFormat("starting")
        self.add_log(description)

    def add_log(self, text: str) -> None:
        self.log.appendPlainText(text)

    def _on_stage(self, event) -> None:
        if event.fraction is None:
            self.progress.setRange(0, 0)
        else:
            self.progress.setRange(0, 1000)
            self.progress.setValue(int(event.fraction * 1000))
        self.progress.setFormat(event.text)
        self.add_log(event.text)

    def _on_run_started(self, event) -> None:
        self.epochs = event.epochs
        partial = event.validation_partial
        name = "validation (partial estimate)" if partial else "validation"
        self.loss_plot.reset(name, event.epochs)
        self.accuracy_plot.reset(name, event.epochs)
        self.progress.setRange(0, event.steps_per_epoch)
        self.progress.setValue(0)
        self.progress.setFormat(f"epoch 1 of {event.epochs} · batch 0 of {event.steps_per_epoch}")
        params = event.params
        self.add_log(
            f"Run {event.name} ({event.run_id}): {event.train_size:,} train, {event.val_size:,} validation, "
            f"{event.test_size:,} test images; {params.get('total', 0):,} parameters "
            f"({params.get('trainable', 0):,} trainable); {event.epochs} epochs of {event.steps_per_epoch} "
            f"steps at batch {event.batch_size}."
        )
        if partial:
            self.add_log(
                "Validation uses only some batches each epoch (validation steps is set): "
                "its curve is a partial, noisy estimate. The test split is evaluated in full at the end."
            )

    def _on_progress(self, event) -> None:
        self.progress.setRange(0, event.steps)
        self.progress.setValue(event.batch)
        self.progress.setFormat(f"epoch {event.epoch} of {event.epochs} · batch {event.batch} of {event.steps}")
        self.stats.setText(
            f"elapsed {format_seconds(event.elapsed)} · ETA {format_seconds(event.eta)} · "
            f"{event.images_per_second:,.0f} images/s"
        )
        now = time.monotonic()
        redraw = now - self._last_plot >= PLOT_INTERVAL
        if redraw:
            self._last_plot = now
        for plot in (self.loss_plot, self.accuracy_plot):
            plot.add_batch(event.epoch, event.batch, event.steps, event.logs, redraw=redraw)

    def _on_epoch_ended(self, event) -> None:
        for plot in (self.loss_plot, self.accuracy_plot):
            plot.add_epoch(event.epoch, event.logs, event.best_epoch, event.monitor)
        shown = ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate")
        values = " · ".join(f"{key} {event.logs[key]:.4g}" for key in shown if key in event.logs)
        self.add_log(f"Epoch {event.epoch}/{event.epochs}: {values} ({event.epoch_seconds:.1f} s)")

    def _on_run_ended(self, event) -> None:
        for plot in (self.loss_plot, self.accuracy_plot):
            plot.redraw()  # a stopped run's last reports came after its last epoch
        took = format_seconds(event.elapsed)
        metrics = event.test_metrics
        if event.status == "failed":
            text = f"Failed: {event.reason}"
        elif event.status == "stopped":
            text = (f"Stopped after {event.epochs_done} of {self.epochs} epochs, in {took}; "
                    f"the run is saved as stopped.")
        else:
            text = f"Finished in {took} ({event.reason})."
        if "accuracy" in metrics:
            text += f" Test accuracy {metrics['accuracy']:.2%}, test loss {metrics['loss']:.4f}."
        if event.run_id:
            text += f" Run {event.run_id}."
        self.summary.setText(text)
        self.summary.setProperty("error", event.status == "failed")
        self.summary.style().unpolish(self.summary)
        self.summary.style().polish(self.summary)
        self.progress.setRange(0, 1)
        self.progress.setValue(1 if event.status == "finished" else 0)
        self.progress.setFormat(event.status)
        self.add_log(text)

    def _on_log(self, text: str) -> None:
        self.add_log(text.rstrip())


def format_seconds(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"
