"""Start the window.

`run_gui` shows the window before Keras is imported: nothing imported here
or by the views imports Keras or TensorFlow; the task runner's lanes import
them once the window is up (gui/concurrent.py).

With CIFAR_STUDIO_STARTUP_PROBE=1 the app prints one JSON line when the
window is first exposed (the wall-clock time, and whether Keras or
TensorFlow had been imported when it was shown) and quits (with "stay", it
stays open); benchmarks/startup.py uses it to time the start-up.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pyqtgraph as pg
from PySide6.QtCore import QTimer
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication

from gui.main_window import APP_NAME, MainWindow
from gui.settings import APPLICATION, ORGANIZATION, Settings

RESOURCES = Path(__file__).resolve().parent.parent / "resources"
STARTUP_PROBE = "CIFAR_STUDIO_STARTUP_PROBE"
# Python hands the GIL to a waiting thread after this long. Painting a plot
# releases and retakes the GIL hundreds of times (each Qt call), and while
# the training thread runs Python (Keras' loop, tracing, callbacks) each retake
# waits up to this interval: at Python's default 5 ms one plot update took
# ~200 ms, at 1 ms ~40 ms (benchmarks/gui_stall.py measures the whole effect).
SWITCH_INTERVAL = 0.001
SIGNAL_CHECK_MS = 250  # how often Python gets to see a Ctrl-C while the event loop waits


def configure_plots() -> None:
    """pyqtgraph's global options, set once before any plot is made."""
    pg.setConfigOptions(antialias=True, background="w", foreground="k")


def style_sheet() -> str:
    path = RESOURCES / "style.qss"
    return path.read_text() if path.exists() else ""


def create_application(argv: list[str]) -> QApplication:
    """The QApplication with the app's names, icon, plot options and style,
    and the GIL switch interval that keeps the window responsive in training."""
    sys.setswitchinterval(SWITCH_INTERVAL)
    app = QApplication.instance() or QApplication(argv)
    app.setOrganizationName(ORGANIZATION)
    app.setApplicationName(APPLICATION)
    app.setApplicationDisplayName(APP_NAME)
    icon = RESOURCES / "icon.svg"
    if icon.exists():
        app.setWindowIcon(QIcon(str(icon)))
    app.setStyleSheet(style_sheet())
    configure_plots()
    return app


def run_gui(argv: list[str]) -> int:
    """Open the window and run the event loop; returns the exit status."""
    app = create_application(argv)
    window = MainWindow(Settings())
    if os.environ.get(STARTUP_PROBE):
        _probe_startup(app, window)
    _close_on_ctrl_c(window)
    window.show()
    return app.exec()


def _close_on_ctrl_c(window: MainWindow) -> None:
    """Ctrl-C in the terminal that started the window closes it as the close
    button does (a run in progress asks first). Python runs a signal handler
    only between bytecodes, never while Qt's event loop waits in C++, so a
    timer hands control to Python a few times a second."""
    signal.signal(signal.SIGINT, lambda *_: QTimer.singleShot(0, window.close))
    window.signal_timer = QTimer(window)
    window.signal_timer.timeout.connect(lambda: None)
    window.signal_timer.start(SIGNAL_CHECK_MS)


def _probe_startup(app: QApplication, window: MainWindow) -> None:
    state = {}

    def on_shown() -> None:
        state["keras_imported"] = "keras" in sys.modules
        state["tensorflow_imported"] = "tensorflow" in sys.modules
        QTimer.singleShot(0, on_exposed)

    def on_exposed() -> None:
        handle = window.windowHandle()
        if handle is None or not handle.isExposed():
            QTimer.singleShot(1, on_exposed)
            return
        print(json.dumps({"shown_at": time.time(), **state}), flush=True)
        if os.environ.get(STARTUP_PROBE) != "stay":
            window.close()
            app.quit()

    window.shown.connect(on_shown)
