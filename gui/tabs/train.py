"""The Train tab: Train and Stop, progress, live curves, log and summary.

Shows one run as its events arrive from the TrainingSession: Progress a few
times a second (the progress bar and the per-batch train trace), EpochEnded
once an epoch (the per-epoch points and the best-epoch marker), RunEnded
once. The tab's own signals say what the user asked for (train, stop); the
window decides.
"""

from __future__ import annotations

import time

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QHBoxLayout, QLabel, QPlainTextEdit, QProgressBar, QPushButton, QSplitter, QVBoxLayout, QWidget,
)

from engine.text import StageClock, format_seconds
from gui.training import TrainingSession
from gui.widgets.metric_plot import MetricPlot

LOG_LINES = 5000
# The per-batch trace is redrawn at most this often (the progress bar follows
# every report). Repainting the two plots is most of what the window does
# while a model trains, and on a machine whose cores all train, every
# millisecond of it is taken from training (benchmarks/bench_gui_vs_cli.py).
PLOT_INTERVAL = 1.0


class TrainTab(QWidget):
    """Shows the current run; `train_requested` and `stop_requested` when the user asks."""

    train_requested = Signal()
    stop_requested = Signal()

    def __init__(self, session: TrainingSession, parent: QWidget | None = None):
        super().__init__(parent)
        self.train_button = QPushButton("Train")
        self.train_button.setObjectName("train")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.train_button.clicked.connect(self.train_requested)
        self.stop_button.clicked.connect(self.stop_requested)
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
        self._running = self._evaluating = self._stop_pressed = self._skip_pressed = False
        self._last_stage = ""
        self._stage_clock = StageClock()
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

        session.stage.connect(self._on_stage)
        session.run_started.connect(self._on_run_started)
        session.progress.connect(self._on_progress)
        session.epoch_ended.connect(self._on_epoch_ended)
        session.run_ended.connect(self._on_run_ended)
        session.log.connect(self._on_log)

    def set_running(self, running: bool, reason: str = "") -> None:
        """Enable Train (unless `reason` says why not) or Stop."""
        self.train_button.setEnabled(not running and not reason)
        if running != self._running:
            self._running = running
            self._evaluating = self._stop_pressed = self._skip_pressed = False
        self._update_stop_button()
        self.reason.setText("" if running else reason)

    def blocked_reason(self) -> str:
        """Why Train is disabled, as shown beside it ("" when it is not)."""
        return self.reason.text()

    def summary_text(self) -> str:
        """The last run's one-paragraph summary."""
        return self.summary.text()

    def stopping(self) -> None:
        """Say that Stop (or Skip evaluation) was heard."""
        if self._evaluating:
            self._skip_pressed = True
            self.add_log("Skipping the evaluation; the run is kept and can be evaluated later.")
        else:
            self._stop_pressed = True
            self.add_log("Stopping after the current batch…")
        self._update_stop_button()

    def _update_stop_button(self) -> None:
        """Stop while training; Skip evaluation while the run is evaluated."""
        self.stop_button.setText("Skip evaluation" if self._running and self._evaluating else "Stop")
        self.stop_button.setEnabled(self._running and not self._skip_pressed
                                    and (self._evaluating or not self._stop_pressed))

    def start(self, description: str) -> None:
        """Clear the previous run's curves and say what is starting."""
        self.loss_plot.reset()
        self.accuracy_plot.reset()
        self.summary.clear()
        self.stats.clear()
        self._last_stage = ""
        self.progress.setRange(0, 0)
        self.progress.setFormat("starting")
        self.add_log(description)

    def add_log(self, text: str) -> None:
        self.log.appendPlainText(text)

    def _on_stage(self, event) -> None:
        if event.stage == "evaluate" and self._running:
            self._evaluating = True  # it may take a while (ResNet50 on 10,000 images): it can be skipped
            self._update_stop_button()
        if event.fraction is None:
            self.progress.setRange(0, 0)
        else:
            self.progress.setRange(0, 1000)
            self.progress.setValue(int(event.fraction * 1000))
        eta = self._stage_clock.remaining(event.text, event.fraction, time.monotonic())
        self.progress.setFormat(f"{event.text} · {eta}" if eta else event.text)
        if event.text != self._last_stage:  # a stage's progress reports repeat its text
            self._last_stage = event.text
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
            f"({params.get('trainable', 0):,} trainable); {event.epochs} epoch{'' if event.epochs == 1 else 's'} of "
            f"{event.steps_per_epoch} "
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
        if "accuracy" in metrics and event.evaluated_split == "validation":
            text += (f" Validation accuracy {metrics['accuracy']:.2%}, validation loss {metrics['loss']:.4f} "
                     "(the dataset has no test split).")
        elif "accuracy" in metrics:
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

