"""The Trainer's Keras callbacks: progress and stop, and the per-epoch record.

Imported only when a run starts (it imports keras). History, checkpoints and
early stopping are Keras' own callbacks (CSVLogger, ModelCheckpoint,
EarlyStopping); these two only translate Keras' hooks into engine events.
"""

from __future__ import annotations

import time

import keras

from engine.events import EpochEnded, Progress

PROGRESS_INTERVAL = 0.25  # seconds between Progress events: a few a second, never per batch


class ProgressCallback(keras.callbacks.Callback):
    """Reports progress at a bounded rate and honours a stop request.

    `async_safe` lets Keras keep async dispatch although this overrides
    on_train_batch_end: the hook only reads a clock and, a few times a
    second, a couple of floats. The stop flag is read in
    on_train_batch_begin, so the batch in flight is the last one.
    """

    async_safe = True
    # With steps_per_execution N, Keras calls the batch hooks once per N
    # steps with the index of the last one; counts are taken from that index.

    def __init__(self, trainer, steps: int, epochs: int, batch_size: int, started: float):
        super().__init__()
        self.trainer = trainer
        self.steps = steps
        self.epochs = epochs
        self.batch_size = batch_size
        self.started = started
        self.epoch = 0
        self.last_report = 0.0
        self.train_start = 0.0

    def on_train_begin(self, logs=None):
        self.train_start = time.monotonic()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if self.trainer.stop_requested:
            self.model.stop_training = True

    def on_train_batch_end(self, batch, logs=None):
        now = time.monotonic()
        if now - self.last_report < PROGRESS_INTERVAL and batch + 1 < self.steps:
            return
        self.last_report = now
        elapsed = now - self.train_start
        done = self.epoch * self.steps + batch + 1
        total = self.epochs * self.steps
        self.trainer.listener.on_progress(Progress(
            epoch=self.epoch + 1, epochs=self.epochs, batch=batch + 1, steps=self.steps,
            images_per_second=done * self.batch_size / elapsed if elapsed > 0 else 0.0,
            elapsed=now - self.started,
            eta=elapsed / done * (total - done) if done else 0.0,
            logs={k: float(v) for k, v in (logs or {}).items() if isinstance(v, (int, float))},
        ))


class EpochRecorder(keras.callbacks.Callback):
    """After each epoch: the index row is updated and EpochEnded is sent
    with every metric (and the learning rate in use)."""

    def __init__(self, trainer, store, run_id: str, monitor: str, started: float):
        super().__init__()
        self.trainer = trainer
        self.store = store
        self.run_id = run_id
        self.monitor = monitor
        self.started = started
        self.epochs_done = 0
        self.best_epoch = 0
        self.best_value: float | None = None
        self.epoch_start = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        logs = {k: float(v) for k, v in (logs or {}).items()}
        logs.setdefault("learning_rate", float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))
        self.epochs_done = epoch + 1
        value = logs.get(self.monitor)
        if value is not None and (self.best_value is None or value > self.best_value):
            self.best_value, self.best_epoch = value, epoch + 1
        self.store.update(
            self.run_id, epochs_done=self.epochs_done, best_epoch=self.best_epoch,
            best_val_accuracy=self.best_value if self.monitor == "val_accuracy" else None,
            final_accuracy=logs.get("accuracy"), final_val_accuracy=logs.get("val_accuracy"),
        )
        now = time.monotonic()
        self.trainer.listener.on_epoch_ended(EpochEnded(
            epoch=epoch + 1, epochs=self.params.get("epochs", 0), logs=logs,
            elapsed=now - self.started, epoch_seconds=now - self.epoch_start,
            best_epoch=self.best_epoch, best_value=self.best_value, monitor=self.monitor,
        ))
