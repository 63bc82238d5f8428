"""Work off the GUI thread: plain functions on long-lived Python threads,
their reports delivered to the GUI thread as queued Qt signals.

As Orange3's `Orange/widgets/utils/concurrent.py`: the work is a plain
function that receives a small `TaskState` (report progress, hand over a
partial result, ask "was I asked to stop?"), and the view gets on_progress /
on_partial / on_done / on_error calls on its own thread. This module is the
only place in the window that starts threads.

Why Python threads and not QThread: TensorFlow keeps per-thread state, and
PySide tears down a Qt-started thread's Python thread state between two slot
calls on it. Two Keras jobs queued one after the other to one QThread (the
backend report, then building ResNet50 to count its parameters) killed the
window with a segmentation fault inside TensorFlow. A `ThreadPoolExecutor`
with one worker per lane keeps one Python thread alive for the lane's whole
life, so every job of a lane runs on the same, intact thread.

Lanes: jobs of one lane run one after the other, in order; lanes run side by
side (the window trains on one lane while another counts parameters). A
`key` makes "the latest request wins": a newer task with the same key drops
an older one that has not started and asks a running one to stop, and the
older one's reports are no longer delivered.
"""

from __future__ import annotations

import threading
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from PySide6.QtCore import QObject, Qt, Signal, Slot

TRAINING = "training"
TASKS = "tasks"


class TaskState:
    """What a running function sees of its task; safe to use from any thread."""

    def __init__(self, task: "Task"):
        self._task = task
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._stop_requests = 0
        self._on_stop: list[Callable[[int], None]] = []

    def should_stop(self) -> bool:
        """True once the window asked this task to stop (or a newer one replaced it)."""
        return self._stop.is_set()

    @property
    def stop_requests(self) -> int:
        """How often stopping was asked for: a second request may mean "now"."""
        return self._stop_requests

    def on_stop(self, callback: Callable[[int], None]) -> None:
        """Call `callback(requests)` on each stop request, from the requesting
        thread (a Trainer's request_stop, for example). Called at once if a
        request came before."""
        with self._lock:
            self._on_stop.append(callback)
            requests = self._stop_requests
        if requests:
            callback(requests)

    def set_progress(self, fraction: float | None, text: str = "") -> None:
        """Report how far the work is (0..1, or None when unknown)."""
        self._task._post("progress", (fraction, text))

    def set_partial_result(self, value: Any) -> None:
        """Hand a result over before the end (an epoch's metrics, an image's class)."""
        self._task._post("partial", value)

    def request_stop(self) -> None:
        with self._lock:
            self._stop_requests += 1
            requests = self._stop_requests
            callbacks = list(self._on_stop)
        self._stop.set()
        for callback in callbacks:
            callback(requests)


class Task(QObject):
    """A handle on one submitted function; its signals arrive on the GUI thread.

    Exactly one of done, error or cancelled is emitted, then finished, unless a
    newer task with the same key replaced this one (then nothing more comes).
    """

    progress = Signal(object, str)  # fraction (or None), text
    partial_result = Signal(object)
    done = Signal(object)
    error = Signal(object)  # the exception; its traceback text is in `traceback_text`
    cancelled = Signal()
    finished = Signal()

    def __init__(self, runner: "TaskRunner", lane: str, key: str | None):
        super().__init__(runner)
        self.lane = lane
        self.key = key
        self.state = TaskState(self)
        self.traceback_text = ""
        self._runner = runner
        self._superseded = False
        self._finished = False

    @property
    def is_finished(self) -> bool:
        return self._finished

    def cancel(self) -> None:
        """Ask the function to stop; it decides how (the Trainer stops after the batch)."""
        self.state.request_stop()

    def _post(self, kind: str, value: Any) -> None:
        self._runner._relay.event.emit(self, kind, value)

    def _deliver(self, kind: str, value: Any) -> None:
        if self._finished:
            return
        if self._superseded:
            if kind in ("done", "error", "cancelled"):
                self._finished = True
                self._runner._forget(self)
                self.deleteLater()
            return
        if kind == "progress":
            self.progress.emit(*value)
        elif kind == "partial":
            self.partial_result.emit(value)
        else:
            self._finished = True
            self._runner._forget(self)
            if kind == "done":
                self.done.emit(value)
            elif kind == "error":
                self.error.emit(value)
            else:
                self.cancelled.emit()
            self.finished.emit()
            self.deleteLater()  # Qt frees it on the GUI thread; Python attributes stay readable


class _Relay(QObject):
    """Lives on the GUI thread; worker threads emit on it, Qt queues the call."""

    event = Signal(object, str, object)

    def __init__(self, parent: QObject):
        super().__init__(parent)
        self.event.connect(self._on_event, Qt.QueuedConnection)

    @Slot(object, str, object)
    def _on_event(self, task: Task, kind: str, value: Any) -> None:
        task._deliver(kind, value)


class TaskRunner(QObject):
    """Starts plain functions on named lanes; create it on the GUI thread."""

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._relay = _Relay(self)
        self._lanes: dict[str, ThreadPoolExecutor] = {}
        self._latest: dict[str, Task] = {}
        self._running: set[Task] = set()
        self._closed = False

    def start(self, function: Callable[..., Any], *args, lane: str = TASKS, key: str | None = None,
              on_done: Callable[[Any], None] | None = None, on_error: Callable[[BaseException], None] | None = None,
              on_progress: Callable[[float | None, str], None] | None = None,
              on_partial: Callable[[Any], None] | None = None,
              on_cancelled: Callable[[], None] | None = None) -> Task:
        """Run `function(state, *args)` on `lane`; the callbacks run on the GUI thread.

        With a `key`, an earlier task of that key is replaced: it never starts
        if it has not yet, is asked to stop if it has, and reports nothing more.
        A function that returns None after `state.should_stop()` became true
        counts as cancelled. After `shutdown` (the window is closing) nothing
        starts any more: the task is dropped and reports nothing.
        """
        task = Task(self, lane, key)
        if self._closed:
            task._finished = True
            task.deleteLater()
            return task
        for signal, callback in ((task.done, on_done), (task.error, on_error), (task.progress, on_progress),
                                 (task.partial_result, on_partial), (task.cancelled, on_cancelled)):
            if callback is not None:
                signal.connect(callback)
        if key is not None:
            previous = self._latest.get(key)
            if previous is not None:
                previous._superseded = True
                previous.cancel()
            self._latest[key] = task
        self._running.add(task)
        self._lane(lane).submit(self._call, task, function, args)
        return task

    def busy(self, lane: str | None = None) -> bool:
        """True while a task (of `lane`, or of any lane) has not finished."""
        return any(lane is None or task.lane == lane for task in self._running)

    def cancel_all(self) -> None:
        for task in list(self._running):
            task.cancel()

    def threads(self) -> list[threading.Thread]:
        """The lanes' worker threads that are alive (for tests and shutdown checks)."""
        return [thread for executor in self._lanes.values() for thread in executor._threads if thread.is_alive()]

    def shutdown(self, wait: bool = True) -> None:
        """Ask every task to stop, drop those not started, and wait for the rest.

        A Trainer asked to stop saves its run as "stopped" before its function
        returns, so after this the run store is complete and no thread is left.
        """
        self._closed = True
        self.cancel_all()
        for executor in self._lanes.values():
            executor.shutdown(wait=wait, cancel_futures=True)
        if wait:  # every function has returned; what they posted is no longer awaited
            self._running.clear()
            self._latest.clear()

    def _lane(self, name: str) -> ThreadPoolExecutor:
        if name not in self._lanes:
            self._lanes[name] = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"cifar-studio-{name}")
        return self._lanes[name]

    def _forget(self, task: Task) -> None:
        self._running.discard(task)
        if task.key is not None and self._latest.get(task.key) is task:
            del self._latest[task.key]

    @staticmethod
    def _call(task: Task, function: Callable[..., Any], args: tuple) -> None:
        state = task.state
        if task._superseded:
            task._post("cancelled", None)
            return
        try:
            result = function(state, *args)
        except BaseException as exc:  # reported to the view, never lost on a worker thread
            task.traceback_text = traceback.format_exc()
            task._post("error", exc)
            return
        task._post("cancelled" if state.should_stop() and result is None else "done", result)
