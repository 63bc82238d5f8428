"""The task runner: functions on long-lived Python threads, reports on the GUI thread."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from PySide6.QtCore import QCoreApplication, QEvent

from gui.concurrent import TRAINING, Task, TaskRunner

REPO = Path(__file__).resolve().parents[2]
WAIT_MS = 20_000


@pytest.fixture
def runner(qtbot):
    runner = TaskRunner()
    yield runner
    runner.shutdown()
    assert runner.threads() == []


def test_two_keras_jobs_queued_on_one_lane_do_not_crash_the_process(tmp_path):
    """The sequence that killed the window when each job was a slot call on
    one QThread: the backend report, then building ResNet50 to count it.
    In a child process, so that a regression fails this test and not the suite."""
    code = textwrap.dedent("""
        import sys
        from PySide6.QtWidgets import QApplication
        from engine.config import ModelConfig
        from gui.concurrent import TaskRunner

        app = QApplication([])
        runner = TaskRunner()
        results = {}

        def backend(state):
            from engine.system import backend_info
            return backend_info()

        def count(state):
            from engine.models import estimate_param_counts
            return estimate_param_counts(ModelConfig(architecture="resnet50"), (32, 32, 3), 10)

        def done(name):
            def record(value):
                results[name] = value
                if len(results) == 2:
                    app.quit()
            return record

        def failed(exc):
            print("error:", exc)
            app.exit(3)

        runner.start(backend, on_done=done("backend"), on_error=failed)
        runner.start(count, on_done=done("count"), on_error=failed)
        app.exec()
        runner.shutdown()
        print(results["count"]["total"])
    """)
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "26215818"


def test_reports_arrive_on_the_gui_thread_in_order(runner, qtbot):
    seen = []
    gui_thread = threading.current_thread()

    def work(state, count):
        for index in range(count):
            state.set_progress((index + 1) / count, f"step {index + 1}")
            state.set_partial_result(index)
        return threading.current_thread().name

    def on_partial(value):
        seen.append((value, threading.current_thread() is gui_thread))

    task = runner.start(work, 5, on_partial=on_partial)
    with qtbot.waitSignal(task.finished, timeout=WAIT_MS):
        pass
    assert seen == [(index, True) for index in range(5)]
    worker_name = []
    task = runner.start(work, 0, on_done=worker_name.append)
    with qtbot.waitSignal(task.finished, timeout=WAIT_MS):
        pass
    assert worker_name[0].startswith("cifar-studio-tasks") and worker_name[0] != gui_thread.name
    QCoreApplication.sendPostedEvents(None, QEvent.DeferredDelete)
    assert runner.findChildren(Task) == []  # finished tasks are freed, a long session keeps none


def test_every_job_of_a_lane_runs_on_the_same_thread_and_lanes_run_side_by_side(runner, qtbot):
    idents = []
    release = threading.Event()

    def blocking(state):
        release.wait(10)
        return threading.get_ident()

    def quick(state):
        return threading.get_ident()

    slow = runner.start(blocking, lane=TRAINING, on_done=idents.append)
    first = runner.start(quick, on_done=idents.append)
    with qtbot.waitSignal(first.finished, timeout=WAIT_MS):
        pass  # the tasks lane answered while the training lane was busy
    assert runner.busy(TRAINING)
    release.set()
    with qtbot.waitSignal(slow.finished, timeout=WAIT_MS):
        pass
    second = runner.start(quick, on_done=idents.append)
    with qtbot.waitSignal(second.finished, timeout=WAIT_MS):
        pass
    assert idents[0] == idents[2] != idents[1]
    assert not runner.busy()


def test_the_latest_request_of_a_key_wins(runner, qtbot):
    results, started = [], []
    release = threading.Event()

    def work(state, value):
        started.append(value)
        if value == "first":
            release.wait(10)
        return value

    first = runner.start(work, "first", key="count", on_done=results.append)
    qtbot.waitUntil(lambda: started == ["first"], timeout=WAIT_MS)
    runner.start(work, "second", key="count", on_done=results.append)  # queued behind first
    third = runner.start(work, "third", key="count", on_done=results.append)
    assert first.state.should_stop()
    release.set()
    with qtbot.waitSignal(third.finished, timeout=WAIT_MS):
        pass
    assert results == ["third"]
    assert started == ["first", "third"]  # "second" was replaced before it started: it never ran


def test_errors_and_cancels_reach_the_view(runner, qtbot):
    errors, cancelled, stops = [], [], []

    def fails(state):
        raise ValueError("bad input")

    task = runner.start(fails, on_error=errors.append)
    with qtbot.waitSignal(task.finished, timeout=WAIT_MS):
        pass
    assert isinstance(errors[0], ValueError) and "ValueError: bad input" in task.traceback_text

    def loops(state):
        state.on_stop(stops.append)
        while not state.should_stop():
            time.sleep(0.01)

    task = runner.start(loops, on_cancelled=lambda: cancelled.append(True))
    task.cancel()
    task.cancel()
    with qtbot.waitSignal(task.finished, timeout=WAIT_MS):
        pass
    assert cancelled == [True]
    assert stops[-1] == 2 and task.state.stop_requests == 2


def test_shutdown_stops_running_work_and_leaves_no_thread(qtbot):
    runner = TaskRunner()
    stopped = threading.Event()

    def loops(state):
        while not state.should_stop():
            time.sleep(0.01)
        stopped.set()

    runner.start(loops, lane=TRAINING)
    runner.start(loops)
    qtbot.waitUntil(lambda: len(runner.threads()) == 2, timeout=WAIT_MS)
    runner.shutdown()
    assert stopped.is_set() and runner.threads() == []
    late = runner.start(loops)  # a debounce timer that fires as the window closes
    assert late.is_finished and runner.threads() == [] and not runner.busy()
