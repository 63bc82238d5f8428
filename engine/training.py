"""The Trainer: one configured run, start to end, reported through a listener.

The GUI runs it on a worker thread and the CLI on the main thread; both get
the same events (engine/events.py). Everything goes through Keras' own
machinery: `model.fit` with Keras callbacks (engine/callbacks.py: one per
concern, writing the history, the best and the last model through the run
store; Keras' EarlyStopping), Keras optimizers and learning-rate schedules,
and `model.stop_training` for a graceful stop. A stopped run is saved and
evaluated like a finished one, with its weights as they stood at the stop.

A stopped or interrupted run can be resumed (`Trainer.resume`): the same
run, from its last whole epoch (last.keras: the weights and the optimizer's
state, so its step count and with it the learning-rate schedule's position),
on the same batches an uninterrupted run would have trained (the input
stream skips those already trained; EpochSeeds seeds the random layers per
epoch), its history going on, to the planned number of epochs.
"""

from __future__ import annotations

import contextlib
import math
import re
import shutil
import socket
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field

import numpy as np

from engine import datasets as data_module
from engine.config import RunConfig, validate
from engine.errors import ConfigError, EngineError, ModelError, RunStoreError
from engine.evaluation import EVALUATION_BATCH, evaluate_model, evaluation_split
from engine.events import Listener, RunEnded, RunStarted, StageEvent
from engine.runs import RunStore, _pid_alive
from engine.text import printable


@dataclass
class SpeedSettings:
    """The Trainer's speed levers. All of them keep the math of plain
    `model.fit`; benchmarks/bench_train.py turns each off to measure it.

    `stream_input`: batches from engine/pipeline.py (uint8, every epoch
    exactly steps_per_epoch long) instead of the arrays themselves;
    `gather_in_step`: the stream feeds image indices and each training step
    gathers its batch (TensorFlow without a distribution strategy).
    `frozen_features`: engine/features.py's cache of a frozen base's
    output (also the same math, up to float16 rounding inside a fine-tuned
    base). `fused_batch_norm`: engine/train_step.py's fused kernel while training
    (TensorFlow only). `jit_compile`: Keras' own "auto" uses XLA on GPUs and
    not on CPUs, where it made SimCNN's epochs longer (the stop gate keeps
    its cond out of XLA: train_step.StepGate).
    """

    stream_input: bool = True
    gather_in_step: bool = True
    # A frozen base's output computed once and the head trained on it
    # (engine/features.py), where nothing before the head is random.
    frozen_features: bool = True
    fused_batch_norm: bool = True
    jit_compile: bool | str = "auto"
    # What `training.steps_per_execution = 0` (auto) means: on TensorFlow
    # without a distribution, several steps per graph call (one Python round
    # trip and one set of callbacks per call instead of per batch), as many
    # as make about CALL_WORK of work and at most this many; otherwise 1.
    # Stop is still honoured within one batch (train_step.StepGate).
    # Measured for SimCNN at batch 32 (50 steps a call): 10 steps a call took
    # 0.87 of one step's epoch time, 50 steps 0.92 of 10 steps'.
    auto_steps_per_execution: int = 50


# About half a second of a 2-core CPU's training work (SimCNN at batch 32:
# 0.44 G multiply-accumulates a step, 9 ms here): enough to make a call's own
# cost small, while progress still arrives a few times a second. A model
# whose single step is this big (ResNet50 at 224x224) trains one step a call
# and reports every batch.
CALL_WORK = 25e9


def auto_steps_per_execution(multiply_accumulates_per_image: int, batch_size: int, most: int) -> int:
    """Steps per call for a step of this size: forward and backward are
    about three times the forward pass."""
    step = 3 * multiply_accumulates_per_image * batch_size
    return max(1, min(most, int(CALL_WORK // max(step, 1))))


def steps_per_call(steps_per_epoch: int, requested: int) -> int:
    """The largest count of steps at most `requested` that divides an epoch.

    Keras runs `steps_per_execution` steps per call and does not shorten the
    last call of an epoch when the input never ends, so a count that does not
    divide the epoch would make every epoch longer than asked.
    """
    for count in range(min(requested, steps_per_epoch), 0, -1):
        if steps_per_epoch % count == 0:
            return count
    return 1


@dataclass
class ResumePoint:
    """Where a resumed run goes on from, as its folder says."""

    run_id: str
    label: str  # "run 'name' (id)", for messages
    epochs_done: int  # whole epochs in history.csv, which last.keras has trained
    train_seconds: float  # the index's training time before this resumption
    history: dict[str, list[float]] = field(default_factory=dict)

    @property
    def elapsed(self) -> float:
        """The last whole epoch's `elapsed`: the new rows' go on from it."""
        values = [v for v in self.history.get("elapsed", [])[:self.epochs_done] if math.isfinite(v)]
        return values[-1] if values else 0.0

    def best(self, monitor: str) -> tuple[int, float | None]:
        """The best epoch (1-based) and value of `monitor` so far; (0, None) if none."""
        values = self.history.get(monitor, [])[:self.epochs_done]
        finite = [(v, i + 1) for i, v in enumerate(values) if math.isfinite(v)]
        if not finite:
            return 0, None
        value, epoch = max(finite, key=lambda pair: (pair[0], -pair[1]))
        return epoch, value


def resume_point(store: RunStore, run: str) -> tuple[RunConfig, ResumePoint]:
    """The settings of a run to resume and where it goes on from. Raises
    RunStoreError, one line naming the run and why, for a run that cannot be
    resumed. Opening last.keras needs Keras, so that check is the Trainer's."""
    record = store.get(run)
    label = f"run '{printable(record.name)}' ({record.run_id})"
    if record.status == "finished":
        raise RunStoreError(f"{label} is finished; there is nothing to resume (train a new run to train longer)")
    if record.status == "running":
        if record.host != socket.gethostname():
            raise RunStoreError(f"{label} is marked running on {printable(record.host)}; resume it there once it "
                                "has ended")
        if _pid_alive(record.pid, record.pid_started):  # the same process, not another that got its pid
            raise RunStoreError(f"{label} is still training (process {record.pid}); stop it first")
    try:
        config = store.config(record.run_id)
    except EngineError as exc:
        raise RunStoreError(f"{label} cannot be resumed: its config.json cannot be read ({exc})") from None
    problems = validate(config)
    if problems:
        raise RunStoreError(f"{label} cannot be resumed: its config.json has settings this version refuses "
                            f"({'; '.join(problems.values())})")
    if not store.model_path(record.run_id, "last").exists():
        raise RunStoreError(f"{label} has no last.keras: it ended before its first whole epoch; train it again")
    try:
        history = store.history(record.run_id)
    except RunStoreError as exc:
        raise RunStoreError(f"{label} cannot be resumed: {exc}") from None
    done = len(history.get("epoch", []))
    if done >= config.training.epochs:
        raise RunStoreError(f"{label} has trained all its {config.training.epochs} epochs; there is nothing to "
                            f"resume (`main.py evaluate {record.run_id}` evaluates it)")
    return config, ResumePoint(run_id=record.run_id, label=label, epochs_done=done,
                               train_seconds=record.train_seconds, history=history)


def _lost_worker(exc: Exception) -> str:
    """What to say when a collective operation failed because another worker
    stopped or cannot be reached ("" for any other error). TensorFlow's own
    message is a page of graph nodes; its cause is one line of it."""
    kinds = ("UnavailableError", "CancelledError", "AbortedError", "DeadlineExceededError", "InternalError")
    text = str(exc)
    if type(exc).__name__ not in kinds or "ollective" not in text:
        return ""
    found = re.search(r"(Collective ops is aborted by:[^\n\[]*)", text)
    cause = found.group(1).strip().rstrip(":") if found else type(exc).__name__
    return (f"another worker stopped or cannot be reached ({cause[:160]}); the workers train in step, so the run "
            "ends on every one (the chief's run keeps its last epoch's checkpoint)")


def _synchronize_batch_norm(model) -> None:
    """Batch normalization over the whole global batch on several machines
    (Keras' `synchronized`, an all-reduce of the batch's moments): without
    it each worker normalizes by its own share and keeps its own moving
    statistics, so the workers' saved models would differ and differ from
    one machine's run on the same global batch."""
    import keras

    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = True


def _skip_batches(feed, count: int):
    """The training stream from its `count`th batch on: a resumed run trains
    the batches an uninterrupted one would have trained next. A tf.data
    stream skips them (with the in-step gather it streams index batches, so
    no image is gathered for them); the PyDataset of JAX and PyTorch serves
    batches in order whatever the index asked, so they are drawn and dropped."""
    if not count:
        return feed
    if hasattr(feed, "skip"):
        return feed.skip(count)
    for _ in range(count):
        feed[0]  # noqa: B018  draws the next batch
    return feed


def _keras():
    """Keras is imported when a run starts, not when the engine is imported,
    so the window can appear before TensorFlow has loaded."""
    import keras

    from engine.system import prepare_tensorflow

    prepare_tensorflow()
    return keras


class Trainer:
    """Runs one training described by a RunConfig, or goes on with a run
    of the store (`Trainer.resume`).

    `run()` blocks until the run has finished, stopped or failed, and never
    raises for a user's mistake: a bad setting or dataset ends the run as
    "failed" with the reason (also returned); a resumption that fails
    before training starts leaves the run as it was. `request_stop()` and
    `cancel()` may be called from any thread.
    """

    def __init__(self, config: RunConfig, listener: Listener | None = None, store: RunStore | None = None,
                 dataset=None, speed: SpeedSettings | None = None):
        self.config = config.copy()
        self.speed = speed or SpeedSettings()
        self.listener = listener or Listener()
        self.store = store
        self.dataset = dataset
        self.run_id = ""
        self.model = None
        self.recorder = None
        self._stop = threading.Event()
        self._cancel = threading.Event()  # the evaluation after training ends too
        self._training_over = False
        self._gate = None  # train_step.StepGate while a multi-step fit runs
        self._fitted = None  # the model fit trains: the whole model, or its head on cached features
        self.resuming: ResumePoint | None = None
        self.features = None  # features.FeatureUse when the head trained on a frozen base's cached output
        self.cluster = None  # distribute.Cluster when this process is one worker of several machines
        self._scratch = None  # a worker's throw-away store: only the chief writes the run

    @classmethod
    def resume(cls, run: str, listener: Listener | None = None, store: RunStore | None = None, dataset=None,
               speed: SpeedSettings | None = None) -> "Trainer":
        """A Trainer whose run() continues the stopped or interrupted `run`
        (an id, a unique prefix or a name) from its last whole epoch to its
        planned epochs. Raises RunStoreError (one line) when it cannot be
        resumed; `dataset` is the run's own, loaded from its settings if None."""
        store = store or RunStore()
        config, point = resume_point(store, run)
        trainer = cls(config, listener, store, dataset, speed)
        trainer.resuming = point
        return trainer

    def request_stop(self) -> None:
        """Stop training after the batch in flight; the run is then saved and
        evaluated. Asked again, or once training is over, it cancels the
        evaluation (the run keeps its model and can be evaluated later)."""
        if self._stop.is_set() or self._training_over:
            self._cancel.set()
        self._stop.set()
        self._close_gate()

    def cancel(self) -> None:
        """End the run as soon as possible: stop training and skip or cut
        short its evaluation (closing the window never waits for one)."""
        self._cancel.set()
        self._stop.set()
        self._close_gate()

    def _close_gate(self) -> None:
        gate = self._gate
        if gate is not None:  # fit is running: end the call in flight and the fit loop
            gate.close()
            (self._fitted or self.model).stop_training = True

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def run(self) -> RunEnded:
        started = time.monotonic()
        try:
            try:
                result = self._run(started)
            except EngineError as exc:
                if self._stop.is_set() and not self.run_id:  # Stop pressed while the data was loading
                    result = self._ended("stopped", "stopped before training started", started)
                else:
                    result = self._ended("failed", str(exc), started)
            except MemoryError:
                result = self._ended("failed", "out of memory: use a smaller batch size, input size or subset", started)
            except Exception as exc:  # an unexpected bug: keep what was saved and say what happened
                lost = _lost_worker(exc) if self.cluster is not None else ""
                if not lost:
                    self.listener.on_log(traceback.format_exc())
                result = self._ended("failed", lost or f"{type(exc).__name__}: {exc}", started)
        finally:
            if self._scratch is not None:
                shutil.rmtree(self._scratch, ignore_errors=True)
        self.listener.on_run_ended(result)
        return result

    # -- the stages --------------------------------------------------------

    def _run(self, started: float) -> RunEnded:
        cfg = self.config
        problems = validate(cfg)
        if problems:
            raise ConfigError("; ".join(problems.values()))
        if cfg.training.distribution == "multiworker":
            from engine.distribute import multiworker_cluster

            self.cluster = multiworker_cluster()
            if not self.cluster.chief:  # it trains in step with the chief, which alone writes the run
                self._scratch = tempfile.mkdtemp(prefix="cifar-studio-worker-")
                self.store = RunStore(self._scratch)
        if self.store is not None:  # before the data loads and the model builds, not after
            self.store.require_writable("train a run")

        if self.dataset is None:
            self.listener.on_stage(StageEvent("data", "Loading the dataset"))
            self.dataset = data_module.load_dataset(cfg.dataset, report=self.listener.on_stage,
                                                    should_stop=self._stop.is_set)
        ds = self.dataset
        problems = validate(cfg, train_size=len(ds.y_train), val_size=len(ds.y_val))
        if problems:
            raise ConfigError("; ".join(problems.values()))
        if self._stop.is_set():
            return self._ended("stopped", "stopped before training started", started, 0)

        if not self.resuming:  # _reopen says what it opens
            self.listener.on_stage(StageEvent("model", f"Building {cfg.model.architecture}"))
        keras = _keras()
        from engine import models
        from engine.distribute import placement, precision_policy

        with placement(cfg.training.distribution) as where:
            with models.making_layers(cfg.training.seed), precision_policy(cfg.training.precision):
                model = self._reopen(models, keras) if self.resuming else self._build(models, keras)
            self.model = model
            if where.cluster is not None:
                _synchronize_batch_norm(model)
            params = models.param_counts(model)
            if where.kind != "none":
                self.listener.on_log(f"Training on {where.text}")
            return self._train(model, params, started)

    def _train(self, model, params: dict[str, int], started: float) -> RunEnded:
        cfg = self.config
        ds = self.dataset
        keras = _keras()
        from engine.callbacks import (
            BestCheckpoint, DivergenceGuard, EpochRecorder, EpochSeeds, HistoryWriter, LastCheckpoint,
            ProgressCallback,
        )
        from engine.pipeline import batch_from_feed, training_stream
        from engine.train_step import StepGate, fused_batch_norm

        if self.store is None:
            self.store = RunStore()
        store = self.store
        t = cfg.training
        steps = t.steps_per_epoch or math.ceil(len(ds.y_train) / t.batch_size)
        has_val = len(ds.y_val) > 0
        point = self.resuming
        features_began = time.monotonic()
        split = self._plan_features(keras, model)
        features = None
        if split is not None:
            features = self._features(split)
            if features is None:
                return self._ended("stopped", "stopped while computing the frozen base's features, before training "
                                   "started", started, 0)
        fitted = self._fitted = split.head if split is not None else model
        if point:
            record = self._reopen_record(model, steps)
            done = point.epochs_done
        else:
            record = store.create_run(
                cfg, params_total=params["total"], params_trainable=params["trainable"],
                params_non_trainable=params["non_trainable"],
            )
            done = 0
        self.run_id = record.run_id
        run_dir = store.run_dir(record.run_id)
        self.listener.on_run_started(RunStarted(
            run_id=record.run_id, run_dir=str(run_dir), name=record.name, epochs=t.epochs,
            steps_per_epoch=steps, batch_size=t.batch_size, train_size=len(ds.y_train),
            val_size=len(ds.y_val), test_size=len(ds.y_test), class_names=list(ds.class_names),
            params=params, validation_partial=bool(t.validation_steps) and has_val, config=cfg.to_dict(),
        ))

        monitor = "val_accuracy" if has_val else "accuracy"
        gated = fitted.steps_per_execution > 1 and keras.backend.backend() == "tensorflow" \
            and t.distribution == "none"
        elapsed_before = point.elapsed if point else 0.0
        best_epoch, best_value = point.best(monitor) if point else (0, None)
        # `started` as the run's clock: a resumed run's elapsed time goes on from its history's
        progress = ProgressCallback(self, steps, t.epochs, t.batch_size, started - elapsed_before, gated=gated,
                                    initial_epoch=done)
        recorder = self.recorder = EpochRecorder(self, store, record.run_id, monitor, started - elapsed_before,
                                                 progress, epochs_done=done, best_epoch=best_epoch,
                                                 best_value=best_value)
        guard = DivergenceGuard(progress)
        callbacks = [
            progress,
            EpochSeeds(t.seed),
            guard,  # before the callbacks that record an epoch: they skip one whose loss is not finite
        ]
        if t.ema:  # the average in the model while validating and saving, the raw weights back for training
            callbacks.append(keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
        callbacks += [
            HistoryWriter(store, record.run_id, progress, elapsed_before=elapsed_before),
            self._saving(model, LastCheckpoint(store, record.run_id, ds.class_names, progress)),
            self._saving(model, BestCheckpoint(store, record.run_id, monitor, ds.class_names, progress,
                                               best=best_value)),
            recorder,
        ]
        tensorboard = self._tensorboard(keras, store.tensorboard_dir(record.run_id), progress)
        if tensorboard is not None:
            callbacks.append(tensorboard)
        if t.early_stopping:
            callbacks.append(keras.callbacks.EarlyStopping(monitor=monitor, mode="max", patience=t.early_stopping,
                                                           restore_best_weights=True, verbose=0))

        self.listener.on_stage(StageEvent("train", "Training"))
        train_start = time.monotonic()
        y_train = self._targets(keras, ds.y_train)
        x_train = features["train"] if features else ds.x_train
        to_batch = None
        if self.speed.stream_input:
            stream = training_stream(x_train, y_train, t.batch_size, steps, t.seed,
                                     gather_in_step=self.speed.gather_in_step and t.distribution == "none")
            inputs, to_batch = {"x": _skip_batches(stream.feed, done * steps), "shuffle": False}, stream.to_batch
        else:
            inputs = {"x": x_train, "y": y_train, "batch_size": t.batch_size, "shuffle": True}
        if gated:
            self._gate = StepGate()
            if self._stop.is_set():
                self._gate.close()
        try:
            with fused_batch_norm(fitted, self.speed.fused_batch_norm), batch_from_feed(fitted, to_batch), \
                    (self._gate.guarding(fitted) if gated else contextlib.nullcontext()):
                fitted.fit(
                    **inputs,
                    epochs=t.epochs,
                    steps_per_epoch=steps,
                    validation_data=self._validation_data(keras, features) if has_val else None,
                    validation_batch_size=t.batch_size,
                    callbacks=callbacks,
                    verbose=0,
                    initial_epoch=done,
                )
        finally:
            self._gate = None
            self._training_over = True
        train_seconds = time.monotonic() - (features_began if features else train_start)
        train_seconds += max(point.train_seconds, elapsed_before) if point else 0.0
        epochs_done = recorder.epochs_done
        stopped = self._stop.is_set()
        if guard.reason:
            return self._diverged(guard.reason, started, train_seconds, epochs_done)

        self.listener.on_stage(StageEvent("save", "Saving the model"))
        store.save_model(record.run_id, model, "final", ds.class_names)
        if self.cluster is not None:
            from engine.distribute import weights_digest

            self.listener.on_log(f"Final weights of worker {self.cluster.index}: digest {weights_digest(model)} "
                                 "(every worker's should be the same)")

        status = "stopped" if stopped else "finished"
        reason = "stopped by the user" if stopped else "completed"
        if not stopped and epochs_done < t.epochs:
            reason = f"early stopping after epoch {epochs_done}"
        if point:
            reason += f" (resumed after epoch {done})"
        test_metrics: dict[str, float] = {}
        split, x_eval, y_eval = evaluation_split(ds)
        if len(y_eval):
            evaluation = self._evaluate(model, split, x_eval, y_eval, features)
            if evaluation is None:
                reason += "; its evaluation was cancelled (evaluate the run to get its metrics)"
            else:
                store.write_evaluation(record.run_id, evaluation, "model.h5")
                test_metrics = {"loss": evaluation.loss, "accuracy": evaluation.accuracy,
                                "top5_accuracy": evaluation.top5_accuracy, **{
                                    f"macro_{k}": v for k, v in evaluation.macro.items()}}
        store.update(record.run_id, status=status, reason=reason, finished=time.time(),
                     train_seconds=train_seconds, epochs_done=epochs_done)
        return self._ended(status, reason, started, epochs_done, test_metrics, split if test_metrics else "")

    def _diverged(self, reason: str, started: float, train_seconds: float, epochs_done: int) -> RunEnded:
        """A run whose loss became NaN or infinite fails. Its weights are NaN
        now, so no final model is saved and nothing is evaluated: what stays
        is best.h5 and last.keras of the good epochs, which evaluating the
        run uses (RunStore.evaluation_model)."""
        recorder = self.recorder
        if epochs_done:
            reason += f"; the models saved up to epoch {epochs_done} are kept (best: epoch {recorder.best_epoch})"
        else:
            reason += "; no epoch finished before, so no model was kept"
        self.store.update(self.run_id, train_seconds=train_seconds)
        return self._ended("failed", reason, started, epochs_done)

    def _build(self, models, keras):
        cfg = self.config
        ds = self.dataset
        t = cfg.training
        model = models.build_model(cfg.model, ds.image_shape, ds.num_classes, augmentation=t.augmentation,
                                   seed=t.seed)
        self._compile(models, keras, model)
        return model

    def _reopen(self, models, keras):
        """The model of the run being resumed: last.keras opened in Keras'
        safe mode (engine.inference's loader), compiled as the run was, and
        its optimizer's variables loaded from the same file. No pretrained
        weights are fetched again: the file has the architecture and weights."""
        from engine.inference import load_model_safely

        point = self.resuming
        path = self.store.model_path(point.run_id, "last")
        self.listener.on_stage(StageEvent("model", f"Opening {path.name} of {point.label}"))
        try:
            model = load_model_safely(path)
        except ModelError as exc:
            raise ModelError(f"{point.label} cannot be resumed: {exc}") from None
        self._compile(models, keras, model)
        model.optimizer.build(model.trainable_variables)
        try:
            model.load_weights(path)  # the weights again, and the optimizer's state, which load_model_safely skips
        except Exception as exc:  # Keras raises many kinds for a file that does not fit the model
            first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise ModelError(f"{point.label} cannot be resumed: the optimizer state in {path.name} cannot be "
                             f"loaded ({first_line})") from None
        return model

    def _reopen_record(self, model, steps: int):
        """The resumed run's row back to "running" with this process; the
        history reconciled with last.keras and what the log says."""
        keras = _keras()
        point = self.resuming
        iterations = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
        done = point.epochs_done
        if done and iterations == (done - 1) * steps:
            # Killed after history.csv got the epoch's row but before last.keras was replaced:
            # the model is one epoch behind its history, so that row goes.
            self.store.truncate_history(point.run_id, done - 1)
            self.listener.on_log(f"epoch {done} is in history.csv but not in last.keras; it is trained again")
            point.epochs_done = done = done - 1
        record = self.store.reopen_run(point.run_id)
        line = (f"Resuming {point.label} after epoch {done} of {self.config.training.epochs} "
                f"(optimizer step {iterations})")
        if self.config.training.early_stopping:
            line += "; early stopping's patience counts again from here"
        self.listener.on_log(line)
        return record

    def _tensorboard(self, keras, folder, progress):
        """Keras' TensorBoard writer for the run, or None (with a log line)
        where it cannot write: it writes with TensorFlow's summary ops, which
        on JAX or PyTorch would import TensorFlow beside them. The
        tensorboard package is not needed to write (TensorBoardLogs.summary)."""
        from engine.callbacks import TensorBoardLogs

        backend = keras.backend.backend()
        if backend != "tensorflow":
            self.listener.on_log(f"No TensorBoard logs for this run: they need the TensorFlow backend, not {backend}")
            return None
        return TensorBoardLogs(folder, progress)

    # -- a frozen base's output computed once (engine/features.py) ----------

    def _plan_features(self, keras, model):
        """The whole model cut before its first trainable layer, with its
        head compiled to train on cached features; or None, with the reason
        in the log, where the frozen part's output is not fixed or does not
        fit the budget (training.feature_cache_gb)."""
        from engine import models
        from engine.features import NotSplittable, frozen_key, split_model
        from engine.registry import ARCHITECTURES

        cfg = self.config
        t, m = cfg.training, cfg.model
        if not ARCHITECTURES[m.architecture].pretrained:
            return None
        why = ""
        if not self.speed.frozen_features:
            why = "the Trainer's SpeedSettings turn it off"
        elif t.augmentation != "none":
            why = (f"augmentation '{t.augmentation}' changes the images every epoch (training.augmentation = none "
                   "computes it once)")
        elif m.trainable_layers < 0:
            why = "the whole base trains (model.trainable_layers = all)"
        elif t.distribution != "none":
            why = f"training.distribution = {t.distribution} splits the batches across devices"
        elif t.feature_cache_gb <= 0:
            why = "the feature cache is off (training.feature_cache_gb = 0)"
        split = None
        if not why:
            try:
                split = split_model(model)
            except NotSplittable as exc:
                why = str(exc)
        if split is not None:
            ds = self.dataset
            count = len(ds.y_train) + len(ds.y_val) + len(ds.y_test)
            budget = t.feature_cache_gb * 1e9
            if not split.inside_base and split.bytes_for(count, "float32") <= budget:
                dtype = "float32"
            elif split.bytes_for(count, "float16") <= budget:
                dtype = "float16"
            else:
                dtype = ""
                why = (f"its output at {split.cut} would take {split.bytes_for(count, 'float16') / 1e9:.1f} GB for "
                       f"{count} images in float16, over training.feature_cache_gb = {t.feature_cache_gb:g}")
                split = None
            if dtype == "float16":
                split = split_model(model, "float16")
        if split is None:
            self.listener.on_log(f"The base's output is not cached; every image goes through it in every epoch: {why}")
            return None
        split.key = frozen_key(split.frozen, split.dtype)
        self._compile(models, keras, split.head, optimizer=model.optimizer)
        return split

    def _features(self, split):
        """Every split's features (cached or computed now), or None when Stop ended the pass."""
        from engine.features import features_for_splits

        ds = self.dataset
        arrays = {name: images for name, images in (("train", ds.x_train), ("val", ds.x_val), ("test", ds.x_test))
                  if len(images)}
        got = features_for_splits(split, arrays, self._stop.is_set, self.listener.on_stage)
        if got is None:
            return None
        features, use = got
        self.features = use
        where = f"{split.cut}, {split.floats_per_image:,} {split.dtype} values an image"
        if use.computed:
            count = sum(use.computed.values())
            speed = f" ({1000 * use.seconds_per_image:.1f} ms an image)" if use.seconds_per_image else ""
            line = (f"The frozen base's features were computed once for {count} images in {use.seconds:.1f} s{speed} "
                    f"and the head trains on them ({where})")
        else:
            line = f"The head trains on the frozen base's cached features ({where})"
        if use.reused:
            line += "; reused from the cache: " + ", ".join(f"{name} ({n} images)" for name, n in use.reused.items())
        self.listener.on_log(line)
        return features

    @staticmethod
    def _saving(model, checkpoint):
        """A checkpoint callback that saves `model` (the whole model) while fit may train its head."""
        from engine.features import OnWholeModel

        return OnWholeModel(checkpoint, model)

    def _evaluate(self, model, split: str, x, y, features):
        """The run's evaluation: through the head on float32 features where
        the test split's are cached (the whole model's numbers; the frozen
        part's time per image counted in), else the whole model on the images."""
        t = self.config.training
        key = {"test": "test", "validation": "val"}[split]
        batch = max(t.batch_size, EVALUATION_BATCH)
        if not features or key not in features or self.features.dtype != "float32" or t.tta != "none":
            # (a mirrored image's features are not cached: test-time flip runs the whole model)
            return evaluate_model(model, x, y, self.dataset.class_names, split=split, batch_size=batch,
                                  should_stop=self._cancel.is_set, report=self.listener.on_stage, tta=t.tta)
        from engine.evaluation import images_fingerprint

        evaluation = evaluate_model(self._fitted, features[key], y, self.dataset.class_names, split=split,
                                    batch_size=batch, should_stop=self._cancel.is_set, report=self.listener.on_stage)
        if evaluation is not None:
            evaluation.fingerprint = images_fingerprint(x, y)
            frozen = self.features.seconds_per_image
            evaluation.ms_per_image = (evaluation.ms_per_image + 1000 * frozen
                                       if frozen is not None and evaluation.ms_per_image is not None else None)
        return evaluation

    def _compile(self, models, keras, model, optimizer=None) -> None:
        ds = self.dataset
        t = self.config.training
        # Label smoothing needs one-hot targets (Keras' sparse loss has no
        # label_smoothing); the labels are one-hot encoded in _targets().
        loss = (keras.losses.CategoricalCrossentropy(label_smoothing=t.label_smoothing)
                if t.label_smoothing else keras.losses.SparseCategoricalCrossentropy())
        steps = t.steps_per_epoch or math.ceil(len(ds.y_train) / t.batch_size)
        requested = t.steps_per_execution
        if not requested:
            multi_step = keras.backend.backend() == "tensorflow" and t.distribution == "none"
            requested = auto_steps_per_execution(models.multiply_accumulates(model), t.batch_size,
                                                 self.speed.auto_steps_per_execution) if multi_step else 1
        model.compile(
            optimizer=optimizer or self._optimizer(keras, len(ds.y_train)),
            loss=loss,
            metrics=["accuracy"],
            steps_per_execution=steps_per_call(steps, requested),
            jit_compile=self.speed.jit_compile,
        )

    def _validation_data(self, keras, features=None):
        """The images validated after each epoch: the whole validation split,
        or with `validation_steps` N a fixed random sample of N batches of it
        (the same images every epoch, so the epochs' estimates compare).

        Chosen here rather than through fit's `validation_steps`, which
        Keras rounds up to whole multi-step calls when `steps_per_execution`
        is above 1, and which walks on through the split from epoch to epoch.
        With `features`, the validation images' cached features instead.
        """
        ds = self.dataset
        t = self.config.training
        x, y = (features["val"] if features else ds.x_val), ds.y_val
        count = t.validation_steps * t.batch_size
        if t.validation_steps and count < len(y):
            chosen = np.sort(np.random.default_rng(t.seed).choice(len(y), count, replace=False))
            x, y = x[chosen], y[chosen]
        return x, self._targets(keras, y)

    def _targets(self, keras, y):
        if self.config.training.label_smoothing:
            return keras.utils.to_categorical(y, self.dataset.num_classes)
        return y

    def _optimizer(self, keras, train_size: int):
        t = self.config.training
        steps = t.steps_per_epoch or math.ceil(train_size / t.batch_size)
        total_steps = max(1, steps * t.epochs)
        lr = t.learning_rate
        if t.schedule == "cosine":
            warmup = steps * t.warmup_epochs
            schedule = keras.optimizers.schedules.CosineDecay(
                initial_learning_rate=lr * 0.1 if warmup else lr,
                decay_steps=max(1, total_steps - warmup),
                warmup_target=lr if warmup else None,
                warmup_steps=warmup,
            )
        elif t.schedule == "step":
            boundaries = [steps * t.step_every * i for i in range(1, t.epochs // t.step_every + 1)]
            boundaries = [b for b in boundaries if b < total_steps] or [total_steps]
            values = [lr * (t.step_factor ** i) for i in range(len(boundaries) + 1)]
            schedule = keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
        else:
            schedule = lr
        # Keras' own weight averaging: the optimizer keeps the average, fit()
        # copies it into the model at the end (so the final model is the
        # average) and SwapEMAWeights (_train) validates and saves it each epoch.
        ema = {"use_ema": True, "ema_momentum": t.ema} if t.ema else {}
        if t.optimizer == "sgd":
            return keras.optimizers.SGD(learning_rate=schedule, momentum=t.momentum,
                                        weight_decay=t.weight_decay or None, **ema)
        if t.optimizer == "adam":
            return keras.optimizers.Adam(learning_rate=schedule, weight_decay=t.weight_decay or None, **ema)
        if t.optimizer == "adamw":
            return keras.optimizers.AdamW(learning_rate=schedule, weight_decay=t.weight_decay, **ema)
        return keras.optimizers.RMSprop(learning_rate=schedule, momentum=t.momentum,
                                        weight_decay=t.weight_decay or None, **ema)

    def _ended(self, status, reason, started, epochs_done=None, test_metrics=None, split="") -> RunEnded:
        if epochs_done is None:
            epochs_done = self.recorder.epochs_done if self.recorder else 0
        if status == "failed" and self.run_id:
            self.store.update(self.run_id, status="failed", reason=reason, finished=time.time(),
                              epochs_done=epochs_done)
        return RunEnded(run_id=self.run_id, status=status, reason=reason, elapsed=time.monotonic() - started,
                        test_metrics=test_metrics or {}, epochs_done=epochs_done, evaluated_split=split)
