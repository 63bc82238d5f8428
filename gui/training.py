"""The window's side of a training run: a thin listener over the task runner.

The Trainer runs on the runner's training lane and reports through an engine
Listener; this one hands every event over as a partial result, which the
runner delivers on the GUI thread, and `TrainingSession` re-emits it as the
signal of its kind. The CLI runs the same Trainer with a console listener.
Keras and engine.training are imported on the training lane only. A stopped
or interrupted run is resumed the same way (`TrainingSession.resume`).
"""

from __future__ import annotations

import copy
import time

from PySide6.QtCore import QObject, Signal

from engine.config import RunConfig
from engine.errors import EngineError
from engine.events import EpochEnded, Listener, Progress, RunEnded, RunStarted, StageEvent
from gui.concurrent import TRAINING, Task, TaskRunner, TaskState


class _LogLine(str):
    """A log line among the other events (a str of its own type, so it cannot be mistaken)."""


class _DatasetLoaded(tuple):
    """(Dataset, DatasetConfig): the data a run loaded itself, for the Dataset panel to show and keep."""


class _PartialResults(Listener):
    """Hands each Trainer event to the task's state, from the training thread."""

    def __init__(self, state: TaskState):
        self.state = state
        self.loaded = None  # a function giving the _DatasetLoaded to hand over with RunStarted, where there is one

    def on_stage(self, event: StageEvent) -> None:
        self.state.set_partial_result(event)

    def on_run_started(self, event: RunStarted) -> None:
        if self.loaded is not None:
            self.state.set_partial_result(self.loaded())
            self.loaded = None
        self.state.set_partial_result(event)

    def on_progress(self, event: Progress) -> None:
        self.state.set_partial_result(event)

    def on_epoch_ended(self, event: EpochEnded) -> None:
        self.state.set_partial_result(event)

    def on_log(self, text: str) -> None:
        self.state.set_partial_result(_LogLine(text))

    # on_run_ended: the RunEnded that Trainer.run() returns is the task's result.


def _train(state: TaskState, config: RunConfig, dataset) -> RunEnded:
    from engine.training import Trainer

    listener = _PartialResults(state)
    trainer = Trainer(config, listener=listener, dataset=dataset)
    if dataset is None:  # the run loads it: the Dataset panel shows it and the next run reuses it
        listener.loaded = lambda: _DatasetLoaded((trainer.dataset, copy.deepcopy(config.dataset)))
    # The first Stop ends training after the batch and the stopped run is
    # evaluated; a second one (or closing the window) cuts that evaluation
    # short: the run keeps its model and can be evaluated later.
    state.on_stop(lambda requests: trainer.request_stop())
    return trainer.run()


def _resume(state: TaskState, run_id: str) -> RunEnded:
    from engine.training import Trainer

    try:
        trainer = Trainer.resume(run_id, listener=_PartialResults(state))
    except EngineError as exc:  # it cannot be resumed (finished, still training, no last.keras...): left as it was
        return RunEnded(run_id="", status="failed", reason=str(exc), elapsed=0.0)
    state.on_stop(lambda requests: trainer.request_stop())  # as in _train
    return trainer.run()


class TrainingSession(QObject):
    """One run at a time; its events as signals, on the GUI thread."""

    stage = Signal(object)  # StageEvent
    run_started = Signal(object)  # RunStarted
    progress = Signal(object)  # Progress
    epoch_ended = Signal(object)  # EpochEnded
    log = Signal(str)
    dataset_loaded = Signal(object)  # (Dataset, DatasetConfig) when the run loaded the data itself
    run_ended = Signal(object)  # RunEnded, exactly once per train() or resume()

    def __init__(self, runner: TaskRunner, parent: QObject | None = None):
        super().__init__(parent)
        self.runner = runner
        self._task: Task | None = None
        self._started = 0.0

    @property
    def is_training(self) -> bool:
        return self._task is not None

    def train(self, config: RunConfig, dataset=None) -> bool:
        """Start a run; False if one is already running."""
        if self._task is not None:
            return False
        self._start(_train, copy.deepcopy(config), dataset)
        return True

    def resume(self, run_id: str) -> bool:
        """Continue a stopped or interrupted run of the store from its last
        whole epoch, with the same signals as train() (run_started names the
        same run; epoch_ended comes for the new epochs only: the earlier ones
        are in the store's history). False if a run is already going. A run
        that cannot be resumed ends at once: run_ended with status "failed",
        the one-line reason and an empty run_id (nothing was trained; the run
        is as it was)."""
        if self._task is not None:
            return False
        self._start(_resume, run_id)
        return True

    def _start(self, function, *args) -> None:
        self._started = time.monotonic()
        self._task = self.runner.start(
            function, *args, lane=TRAINING,
            on_partial=self._on_partial, on_done=self._on_done, on_error=self._on_error,
            on_cancelled=self._on_cancelled,
        )

    def stop(self, evaluate: bool = True) -> None:
        """Ask the run to stop; it ends within one batch and is saved as
        stopped, then evaluated unless `evaluate` is False (the window is
        closing) or Stop is asked again."""
        if self._task is not None:
            self._task.cancel()
            if not evaluate:
                self._task.cancel()

    def _on_partial(self, event) -> None:
        if isinstance(event, _LogLine):
            self.log.emit(str(event))
        elif isinstance(event, _DatasetLoaded):
            self.dataset_loaded.emit(tuple(event))
        elif isinstance(event, StageEvent):
            self.stage.emit(event)
        elif isinstance(event, RunStarted):
            self.run_started.emit(event)
        elif isinstance(event, Progress):
            self.progress.emit(event)
        elif isinstance(event, EpochEnded):
            self.epoch_ended.emit(event)

    def _on_done(self, result: RunEnded) -> None:
        self._end(result)

    def _on_error(self, exc: BaseException) -> None:
        # Trainer.run reports the user's mistakes itself; this is a bug, still end visibly.
        self._end(RunEnded(run_id="", status="failed", reason=f"{type(exc).__name__}: {exc}",
                           elapsed=time.monotonic() - self._started))

    def _on_cancelled(self) -> None:
        self._end(RunEnded(run_id="", status="stopped", reason="stopped before training started",
                           elapsed=time.monotonic() - self._started))

    def _end(self, result: RunEnded) -> None:
        self._task = None  # idle before anyone hears of the end
        self.run_ended.emit(result)
