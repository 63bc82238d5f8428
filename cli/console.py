"""The console listener: what `main.py train` prints while the Trainer runs."""

from __future__ import annotations

import sys
import time

from engine.events import Listener
from engine.text import StageClock, format_seconds, printable

STAGE_PRINT_EVERY_S = 5  # a download's progress, at most this often when it is not done
BAR_WIDTH = 24


class ConsoleListener(Listener):
    """A progress bar for the current epoch and a line per finished epoch."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout
        self.interactive = self.stream.isatty()
        self.partial = False
        self.last_stage_print = 0.0
        self.stage_clock = StageClock()

    def _line(self, text: str) -> None:
        if self.partial:
            self.stream.write("\n")
            self.partial = False
        self.stream.write("\n".join(printable(line) for line in text.split("\n")) + "\n")  # names in it escaped
        self.stream.flush()

    def on_stage(self, event):
        now = time.monotonic()
        eta = self.stage_clock.remaining(event.text, event.fraction, now)
        if event.fraction is None or event.fraction >= 1 or now - self.last_stage_print > STAGE_PRINT_EVERY_S:
            self.last_stage_print = now
            if event.fraction is not None and event.fraction >= 1:
                done = f" (done in {format_seconds(now - self.stage_clock.started)})"  # not the same line again
            else:
                done = f" ({event.fraction:.0%}, {eta})" if eta else ""
            self._line(event.text + done)

    def on_run_started(self, event):
        validation = "validation: "
        validation += ("partial estimate (validation steps set)" if event.validation_partial
                       else f"{event.val_size} images")
        self._line(f"run {event.run_id}: {event.train_size} training images, {event.steps_per_epoch} steps "
                   f"of {event.batch_size} per epoch, {event.epochs} epochs; {validation}; "
                   f"{event.params['total']:,} parameters ({event.params['trainable']:,} trainable)")

    def on_progress(self, event):
        if not self.interactive:
            return
        filled = int(BAR_WIDTH * event.batch / max(event.steps, 1))
        bar = "=" * filled + (">" if filled < BAR_WIDTH else "") + " " * (BAR_WIDTH - filled - 1)
        metrics = "  ".join(f"{k} {v:.4f}" for k, v in event.logs.items() if k in ("loss", "accuracy"))
        self.stream.write(f"\rEpoch {event.epoch}/{event.epochs} [{bar}] {event.batch}/{event.steps}  {metrics}  "
                          f"{event.images_per_second:,.0f} img/s  ETA {format_seconds(event.eta)} ")
        self.stream.flush()
        self.partial = True

    def on_epoch_ended(self, event):
        shown = ("loss", "accuracy", "val_loss", "val_accuracy")
        metrics = "  ".join(f"{k} {event.logs[k]:.4f}" for k in shown if k in event.logs)
        self._line(f"Epoch {event.epoch}/{event.epochs}  {metrics}  ({event.epoch_seconds:.1f} s)")

    def on_run_ended(self, event):
        if self.partial:
            self._line("")

    def on_log(self, text):
        self._line(text)
