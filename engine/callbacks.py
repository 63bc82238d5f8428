"""The Trainer's Keras callbacks, one per concern.

Imported only when a run starts (it imports keras). Progress and stop,
the history, the best and the last model, and the per-epoch record; early
stopping is Keras' own EarlyStopping. What is written goes through the run
store (engine/runs.py), which writes every file atomically.

Only ProgressCallback has a per-batch hook (and a cheap one): the others
run once per epoch (TensorBoardLogs drops the batch hooks of Keras' own).
An epoch cut short by Stop is no epoch: Keras still validates and calls
on_epoch_end with the partial epoch's figures, so each callback here asks
ProgressCallback whether the epoch ran all its batches. Nor is an epoch
whose loss became NaN or infinite (DivergenceGuard): the callbacks after
the guard ask ProgressCallback's `epoch_is_whole`, so the history, the
checkpoints and the index keep the last good epoch.

A resumed run (Trainer.resume) goes on through the same callbacks, started
where the run's files left off: the epoch, the elapsed time and the best
value so far.
"""

from __future__ import annotations

import math
import time

import keras
import numpy as np

from engine.events import EpochEnded, Progress

PROGRESS_INTERVAL = 0.25  # seconds between Progress events: a few a second, never per batch


class ProgressCallback(keras.callbacks.Callback):
    """Reports progress at a bounded rate, honours a stop request and counts
    the batches of the epoch.

    `async_safe` lets Keras keep async dispatch although this overrides
    on_train_batch_end: the hook only reads a clock and, a few times a
    second, a couple of floats. The stop flag is read in
    on_train_batch_begin, so the batch in flight is the last one.
    `gated`: the Trainer's StepGate skips the steps of a multi-step call
    once Stop is pressed, so such a call that ends after Stop may not have
    trained all its batches.
    """

    async_safe = True
    # With steps_per_execution N, Keras calls the batch hooks once per N
    # steps with the index of the last one; counts are taken from that index.

    def __init__(self, trainer, steps: int, epochs: int, batch_size: int, started: float, gated: bool = False,
                 initial_epoch: int = 0):
        super().__init__()
        self.trainer = trainer
        self.steps = steps
        self.epochs = epochs
        self.initial_epoch = initial_epoch  # epochs trained before this fit (a resumed run): not in the speed
        self.batch_size = batch_size
        self.started = started
        self.gated = gated
        self.epoch = 0
        self.batches_done = 0
        self.all_batches_ran = False
        self.last_report = 0.0
        self.train_start = 0.0
        self.first_bad_batch = 0  # the first report of the epoch with a non-finite loss (0: none)
        self.divergence = ""  # DivergenceGuard's reason once the loss is NaN or infinite

    @property
    def epoch_cut_short(self) -> bool:
        """Stop ended the current epoch before all its batches trained."""
        return self.trainer.stop_requested and not self.all_batches_ran

    @property
    def epoch_is_whole(self) -> bool:
        """The epoch counts: it ran all its batches and its loss stayed finite."""
        return not self.epoch_cut_short and not self.divergence

    def on_train_begin(self, logs=None):
        self.train_start = time.monotonic()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.batches_done = 0
        self.all_batches_ran = False
        self.first_bad_batch = 0

    def on_train_batch_begin(self, batch, logs=None):
        if self.trainer.stop_requested:
            self.model.stop_training = True

    def on_train_batch_end(self, batch, logs=None):
        self.batches_done = batch + 1
        if self.batches_done == self.steps:
            self.all_batches_ran = not (self.gated and self.trainer.stop_requested)
        now = time.monotonic()
        if now - self.last_report < PROGRESS_INTERVAL and batch + 1 < self.steps:
            return
        self.last_report = now
        elapsed = now - self.train_start
        done = (self.epoch - self.initial_epoch) * self.steps + batch + 1
        total = (self.epochs - self.initial_epoch) * self.steps
        figures = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, (int, float))}
        if not math.isfinite(figures.get("loss", 0.0)) and not self.first_bad_batch:
            # Already converted for the report, so free to check: the epoch's
            # mean loss is NaN from here on, and training it further is waste.
            self.first_bad_batch = batch + 1
            self.model.stop_training = True
        self.trainer.listener.on_progress(Progress(
            epoch=self.epoch + 1, epochs=self.epochs, batch=batch + 1, steps=self.steps,
            images_per_second=done * self.batch_size / elapsed if elapsed > 0 else 0.0,
            elapsed=now - self.started,
            eta=elapsed / done * (total - done) if done else 0.0,
            logs=figures,
        ))


class DivergenceGuard(keras.callbacks.Callback):
    """Ends training when a loss of the epoch is NaN or infinite, with the
    reason the run fails with.

    Keras' TerminateOnNaN does the stopping but keeps no reason and checks
    every batch, which would make Keras sync with the device each batch.
    This reads the epoch's logs, which Keras has already fetched, and the
    batch ProgressCallback first reported a bad loss at (the mean loss so
    far: the loss went bad at or before it). Placed before the callbacks
    that record an epoch, so they see ProgressCallback's `epoch_is_whole`
    false and keep the last good epoch's history and models.
    """

    def __init__(self, progress: ProgressCallback):
        super().__init__()
        self.progress = progress
        self.reason = ""

    def on_epoch_end(self, epoch, logs=None):
        if self.progress.epoch_cut_short:
            return
        for name, value in (logs or {}).items():
            if name.endswith("loss") and isinstance(value, (int, float)) and not math.isfinite(value):
                where = f" (by batch {self.progress.first_bad_batch})" if self.progress.first_bad_batch else ""
                what = "validation loss" if name == "val_loss" else "loss" if name == "loss" else name
                kind = "NaN" if math.isnan(value) else "infinite"
                self.reason = f"the {what} became {kind} in epoch {epoch + 1}{where}; lower the learning rate"
                self.progress.divergence = self.reason
                self.model.stop_training = True
                return


class HistoryWriter(keras.callbacks.Callback):
    """history.csv after each whole epoch, through the store: CSVLogger's
    columns plus `elapsed`, the seconds since training started (Compare
    plots runs against wall time); a resumed run's go on from
    `elapsed_before`, its last row's."""

    def __init__(self, store, run_id: str, progress: ProgressCallback, elapsed_before: float = 0.0):
        super().__init__()
        self.store = store
        self.run_id = run_id
        self.progress = progress
        self.elapsed_before = elapsed_before
        self.train_start = 0.0

    def on_train_begin(self, logs=None):
        self.train_start = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        if self.progress.epoch_is_whole:
            elapsed = self.elapsed_before + time.monotonic() - self.train_start
            self.store.append_history(self.run_id, epoch, logs or {}, elapsed)


class BestCheckpoint(keras.callbacks.Callback):
    """best.h5 through the store whenever the monitored metric improves, as
    ModelCheckpoint(save_best_only=True, mode="max") would write it.
    `best`: the best value so far (a resumed run's, from its history)."""

    def __init__(self, store, run_id: str, monitor: str, class_names, progress: ProgressCallback,
                 best: float | None = None):
        super().__init__()
        self.store = store
        self.run_id = run_id
        self.monitor = monitor
        self.class_names = list(class_names)
        self.progress = progress
        self.best = -math.inf if best is None else best

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not self.progress.epoch_is_whole or not float(value) > self.best:
            return
        self.best = float(value)
        self.store.save_model(self.run_id, self.model, "best", self.class_names)


class LastCheckpoint(keras.callbacks.Callback):
    """last.keras through the store after each whole epoch: the weights and
    the optimizer's state, what resuming the run starts from."""

    def __init__(self, store, run_id: str, class_names, progress: ProgressCallback):
        super().__init__()
        self.store = store
        self.run_id = run_id
        self.class_names = list(class_names)
        self.progress = progress

    def on_epoch_end(self, epoch, logs=None):
        if self.progress.epoch_is_whole:
            self.store.save_model(self.run_id, self.model, "last", self.class_names)


class EpochRecorder(keras.callbacks.Callback):
    """After each whole epoch: the index row is updated and EpochEnded is
    sent with every metric (and the learning rate in use). An epoch cut
    short by Stop is only logged. A resumed run starts from its history's
    `epochs_done`, `best_epoch` and `best_value`."""

    def __init__(self, trainer, store, run_id: str, monitor: str, started: float, progress: ProgressCallback,
                 epochs_done: int = 0, best_epoch: int = 0, best_value: float | None = None):
        super().__init__()
        self.trainer = trainer
        self.store = store
        self.run_id = run_id
        self.monitor = monitor
        self.started = started
        self.progress = progress
        self.epochs_done = epochs_done
        self.best_epoch = best_epoch
        self.best_value = best_value
        self.epoch_start = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        if self.progress.divergence:
            self.trainer.listener.on_log(f"epoch {epoch + 1} is not recorded: {self.progress.divergence}")
            return
        if self.progress.epoch_cut_short:
            self.trainer.listener.on_log(
                f"epoch {epoch + 1} was cut short by Stop after {self.progress.batches_done} of "
                f"{self.progress.steps} batches; it is not recorded")
            return
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


class EpochSeeds(keras.callbacks.Callback):
    """Seeds the model's random layers (augmentation, dropout) at the start
    of each epoch from (training seed, epoch, layer), so that epoch k draws
    the same numbers whether the run went on or was resumed before it.

    Keras saves no SeedGenerator state in a model file: a model opened from
    last.keras would otherwise draw its first epoch's numbers again. (The
    input stream needs nothing of this: engine/pipeline.py's order is a
    function of the seed and the position in the stream, and a resumed run
    skips the batches already trained.)
    """

    def __init__(self, seed: int):
        super().__init__()
        self.seed = seed

    def on_epoch_begin(self, epoch, logs=None):
        states = [v for v in self.model.variables if v.name == "seed_generator_state"]
        for index, state in enumerate(states):
            value = np.random.SeedSequence([self.seed, epoch, index]).generate_state(1)[0] >> 1  # fits int32
            state.assign(np.array([value, 0], dtype=state.dtype))


class TensorBoardLogs(keras.callbacks.TensorBoard):
    """Keras' own TensorBoard writer, once per whole epoch, into the run's
    tensorboard/ folder (train/ and validation/).

    Its batch hooks are Callback's own no-ops again. Keras' TensorBoard
    overrides on_train_batch_end (per-batch summaries, the graph, profiling:
    all off here with update_freq="epoch", write_graph=False, profile_batch=0),
    which turns off Keras' asynchronous dispatch of batch hooks where Keras
    has it (CallbackList._configure_async_dispatch: JAX and PyTorch; Keras
    3.15 never dispatches asynchronously on TensorFlow), and even then calls
    summary.scalar for every metric after every step call, which writes
    nothing without a per-batch writer, and raises without the tensorboard
    package. An epoch cut short by Stop, or whose loss diverged, is not
    written (as in history.csv), and the writers are flushed after each
    epoch, so a killed run keeps every whole epoch's events.
    """

    on_train_batch_begin = keras.callbacks.Callback.on_train_batch_begin
    on_train_batch_end = keras.callbacks.Callback.on_train_batch_end
    on_test_batch_begin = keras.callbacks.Callback.on_test_batch_begin

    def __init__(self, log_dir, progress: ProgressCallback):
        super().__init__(log_dir=str(log_dir), update_freq="epoch", write_graph=False, profile_batch=0,
                         histogram_freq=0)
        self.progress = progress

    @property
    def summary(self):
        """What Keras' TensorBoard writes through: tf.summary, whose `scalar`
        (TensorFlow 2.16 on) is the tensorboard package's, or without that
        package the same summary written with TensorFlow's own ops: viewing
        the logs needs tensorboard, writing them does not."""
        if self._summary_module is None:
            try:
                from tensorboard.summary.v2 import scalar  # noqa: F401  tf.summary.scalar's own
                import tensorflow.summary as summary
            except ImportError:
                summary = _ScalarSummaries()
            self._summary_module = summary
        return self._summary_module

    def on_epoch_end(self, epoch, logs=None):
        if not self.progress.epoch_is_whole:
            return
        super().on_epoch_end(epoch, logs)
        for writer in self._writers.values():  # Keras' writers, made when first written to
            writer.flush()


class _ScalarSummaries:
    """tf.summary where `scalar` writes what tensorboard's scalar summary
    writes (a float32 tensor tagged for the scalars plugin), through
    TensorFlow's core `tf.summary.write`."""

    def __init__(self):
        import tensorflow as tf

        self._tf = tf
        self._metadata = tf.compat.v1.SummaryMetadata()
        self._metadata.plugin_data.plugin_name = "scalars"  # tensorboard's scalars plugin, content version 0
        self._metadata.data_class = 1  # DATA_CLASS_SCALAR

    def __getattr__(self, name):
        return getattr(self._tf.summary, name)

    def scalar(self, name, data, step=None, description=None):
        tf = self._tf
        metadata = self._metadata
        if description:
            metadata = tf.compat.v1.SummaryMetadata.FromString(metadata.SerializeToString())
            metadata.summary_description = description
        return tf.summary.write(tag=name, tensor=tf.cast(data, tf.float32), step=step, metadata=metadata)
