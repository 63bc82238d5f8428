"""The bridge between the engine and the window: the only place with threads.

As Orange3's concurrent.py: the work is a plain engine call (load a dataset,
count a model's parameters, run a Trainer) that reports through a small
object (here an engine Listener), and every report becomes a Qt signal. The
signals belong to `Worker`, which lives on the GUI thread, so Qt queues each
emission from a worker thread to the GUI thread: views only ever see signals
and never call Keras or wait.

Two threads: training runs on one, short tasks (importing Keras to report the
backend, loading a dataset, counting parameters) on the other, so the
parameter counts keep updating while a model trains. Keras, engine.models
and engine.training are imported only inside these threads, which is what
lets the window appear before TensorFlow has finished importing.
"""

from __future__ import annotations

import copy
import os
import sys
import threading
import time
from typing import Callable

from PySide6.QtCore import QObject, Qt, QThread, Signal, Slot

from engine.config import DatasetConfig, ModelConfig, RunConfig
from engine.errors import EngineError
from engine.events import EpochEnded, Listener, Progress, RunEnded, RunStarted, StageEvent

BACKGROUND_NICE = 10  # how much nicer than the GUI the Keras backend's compute threads are (Linux)


class _Runner(QObject):
    """Lives on one worker thread and runs the jobs submitted to it, in order."""

    submitted = Signal(object)

    def __init__(self):
        super().__init__()
        self.submitted.connect(self._on_submitted)

    @Slot(object)
    def _on_submitted(self, job: Callable[[], None]) -> None:
        job()


class _Thread:
    """A QThread with a runner on it: `submit` queues a callable to run there."""

    def __init__(self, name: str):
        self.thread = QThread()
        self.thread.setObjectName(name)
        self.runner = _Runner()
        self.runner.moveToThread(self.thread)
        self.thread.finished.connect(_forget_python_thread, Qt.DirectConnection)
        self.thread.start()

    def submit(self, job: Callable[[], None]) -> None:
        self.runner.submitted.emit(job)

    def stop(self) -> None:
        self.thread.quit()
        self.thread.wait()


def _start_backend_threads_at_low_priority() -> None:
    """Let the Keras backend start its compute threads below the GUI thread.

    TensorFlow starts its thread pools when the first tensor is made, and on
    Linux a new thread inherits the niceness of the thread that starts it. So
    a short-lived thread BACKGROUND_NICE steps nicer makes the first tensor: when
    training keeps every core busy, the scheduler still runs the GUI thread
    at once. The threads that run Python (these workers) keep the normal
    priority: one that held the GIL while starved of CPU would stall the GUI.
    """
    if not sys.platform.startswith("linux"):
        return

    def start() -> None:
        try:
            thread_id = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, thread_id, os.getpriority(os.PRIO_PROCESS, thread_id) + BACKGROUND_NICE)
            import keras

            from engine.system import prepare_tensorflow

            prepare_tensorflow()
            keras.ops.convert_to_tensor(0.0)
        except Exception:  # a lower priority is a nicety, never a reason to fail
            pass

    starter = threading.Thread(target=start, name="cifar-studio-backend-start")
    starter.start()
    starter.join()


def _forget_python_thread() -> None:
    """Drop the record Python keeps of this Qt-started thread as it ends.

    Python registers a "dummy" Thread the first time code on a foreign thread
    asks for the current thread (logging does) and never removes it, so
    `threading.active_count()` would count a thread that has ended.
    """
    thread = threading.current_thread()
    if isinstance(thread, threading._DummyThread):
        threading._active.pop(threading.get_ident(), None)


class _SignalListener(Listener):
    """Turns a Trainer's events into the worker's signals."""

    def __init__(self, worker: "Worker"):
        self.worker = worker

    def on_stage(self, event: StageEvent) -> None:
        self.worker.stage.emit(event)

    def on_run_started(self, event: RunStarted) -> None:
        self.worker.run_started.emit(event)

    def on_progress(self, event: Progress) -> None:
        self.worker.progress.emit(event)

    def on_epoch_ended(self, event: EpochEnded) -> None:
        self.worker.epoch_ended.emit(event)

    def on_log(self, text: str) -> None:
        self.worker.log.emit(text)

    # on_run_ended: the worker emits the RunEnded that Trainer.run() returns,
    # after it has marked itself idle, so a handler sees is_training False.


class Worker(QObject):
    """Runs engine work off the GUI thread and reports it as signals."""

    backend_ready = Signal(dict)
    dataset_stage = Signal(object)  # StageEvent
    dataset_loaded = Signal(object, object)  # Dataset, the DatasetConfig it was loaded with
    dataset_failed = Signal(str)
    params_counted = Signal(object, object)  # (ModelConfig, input shape, classes), counts
    params_failed = Signal(object, str)

    stage = Signal(object)  # StageEvent
    run_started = Signal(object)  # RunStarted
    progress = Signal(object)  # Progress
    epoch_ended = Signal(object)  # EpochEnded
    run_ended = Signal(object)  # RunEnded, exactly once per train()
    log = Signal(str)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._stop_requested = threading.Event()
        self._trainer = None
        self._training = False
        self._params_request = None
        self._dataset_request = None
        self._tasks = _Thread("cifar-studio-tasks")
        self._trainer_thread = _Thread("cifar-studio-training")

    @property
    def is_training(self) -> bool:
        return self._training

    def threads(self) -> list[QThread]:
        return [self._tasks.thread, self._trainer_thread.thread]

    # --- short tasks --------------------------------------------------------

    def report_backend(self) -> None:
        """Import Keras on the tasks thread; emit backend_ready with its info."""
        self._tasks.submit(self._report_backend)

    def load_dataset(self, config: DatasetConfig) -> None:
        """Load a dataset; only the latest request is served if several queue up."""
        with self._lock:
            self._dataset_request = copy.deepcopy(config)
        self._tasks.submit(self._load_latest_dataset)

    def count_params(self, model: ModelConfig, input_shape: tuple, num_classes: int) -> None:
        """Count a model's parameters; only the latest request is served."""
        with self._lock:
            self._params_request = (copy.deepcopy(model), tuple(input_shape), int(num_classes))
        self._tasks.submit(self._count_latest_params)

    def _report_backend(self) -> None:
        try:
            from engine.system import backend_info

            info = dict(backend_info())
            _start_backend_threads_at_low_priority()
        except Exception as exc:  # the window must still work without this line
            info = {"keras_version": "unknown", "backend": "unknown", "device": "unknown", "error": str(exc)}
        self.backend_ready.emit(info)

    def _load_latest_dataset(self) -> None:
        with self._lock:
            config, self._dataset_request = self._dataset_request, None
        if config is None or self._closing.is_set():
            return
        from engine.data import load_dataset

        try:
            dataset = load_dataset(config, report=self.dataset_stage.emit, should_stop=self._closing.is_set)
        except EngineError as exc:
            self.dataset_failed.emit(str(exc))
            return
        except Exception as exc:  # an unreadable file can raise anything; say so plainly
            self.dataset_failed.emit(f"Could not load the dataset: {exc}")
            return
        self.dataset_loaded.emit(dataset, config)

    def _count_latest_params(self) -> None:
        with self._lock:
            request, self._params_request = self._params_request, None
        if request is None or self._closing.is_set():
            return
        try:
            from engine.models import estimate_param_counts

            counts = estimate_param_counts(*request)
        except EngineError as exc:
            self.params_failed.emit(request, str(exc))
            return
        except Exception as exc:
            self.params_failed.emit(request, f"Could not build this model: {exc}")
            return
        self.params_counted.emit(request, dict(counts))

    # --- training -----------------------------------------------------------

    def train(self, config: RunConfig, dataset=None) -> bool:
        """Start a run on the training thread; False if one is already running."""
        if self._training:
            return False
        self._training = True
        self._stop_requested.clear()
        config = copy.deepcopy(config)
        self._trainer_thread.submit(lambda: self._train(config, dataset))
        return True

    def stop(self) -> None:
        """Ask the running Trainer to stop; it ends within one batch."""
        with self._lock:
            self._stop_requested.set()
            trainer = self._trainer
        if trainer is not None:
            trainer.request_stop()

    def _train(self, config: RunConfig, dataset) -> None:
        started = time.monotonic()
        result = None
        try:
            from engine.training import Trainer

            trainer = Trainer(config, listener=_SignalListener(self), dataset=dataset)
            with self._lock:
                self._trainer = trainer
                stop_now = self._stop_requested.is_set()
            if stop_now:
                trainer.request_stop()
            result = trainer.run()
        except Exception as exc:  # Trainer reports EngineErrors itself; this is a bug, still end visibly
            result = RunEnded(
                run_id="", status="failed", reason=f"{type(exc).__name__}: {exc}",
                elapsed=time.monotonic() - started,
            )
        finally:
            with self._lock:
                self._trainer = None
            self._training = False
            self.run_ended.emit(result)

    # --- shutting down ------------------------------------------------------

    def shutdown(self) -> None:
        """Stop the run and any loading, then wait for both threads to end.

        A run asked to stop saves itself as "stopped" before its job returns,
        so after this the run store is complete and no thread is left.
        """
        self._closing.set()
        self.stop()
        self._tasks.stop()
        self._trainer_thread.stop()

