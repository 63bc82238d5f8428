"""Fixtures for the window's tests: headless Qt, a settings file and a run
store in the test's own folder, and a tiny image-folder dataset.

QT_QPA_PLATFORM is set before anything imports Qt, so the tests need no
display; QSettings' default paths point into tmp_path, so no test can read
or write the user's own settings even by mistake.
"""

from __future__ import annotations

import gc
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402
from PySide6.QtCore import QSettings  # noqa: E402

from gui.app import create_application  # noqa: E402
from gui.main_window import MainWindow  # noqa: E402
from gui.settings import Settings  # noqa: E402
from gui_helpers import CLASS_NAMES, RUN_TIMEOUT_MS, quadrant_image  # noqa: E402



@pytest.fixture(scope="session", autouse=True)
def application(qapp):
    """pytest-qt's QApplication, set up as the app sets up its own."""
    return create_application([])


@pytest.fixture(autouse=True)
def isolated_settings_and_store(tmp_path, monkeypatch):
    """Keep every setting, run and dataset cache of a test inside its tmp_path."""
    monkeypatch.setenv("CIFAR_STUDIO_HOME", str(tmp_path / "store"))
    monkeypatch.setenv("CIFAR_STUDIO_CACHE_DIR", str(tmp_path / "cache"))
    for scope in (QSettings.UserScope, QSettings.SystemScope):
        QSettings.setPath(QSettings.IniFormat, scope, str(tmp_path / "qsettings"))
        QSettings.setPath(QSettings.NativeFormat, scope, str(tmp_path / "qsettings"))
    QSettings.setDefaultFormat(QSettings.IniFormat)


@pytest.fixture
def settings_path(tmp_path) -> Path:
    return tmp_path / "settings.ini"


@pytest.fixture
def make_window(qtbot, settings_path):
    """Build windows on the test's settings file; close them all at the end,
    stopping any run first."""
    windows = []

    def make() -> MainWindow:
        window = MainWindow(Settings(settings_path))
        window.confirm_stop_on_close = True
        window.show()
        qtbot.waitExposed(window)
        windows.append(window)
        return window

    yield make
    for window in windows:
        if window.isVisible():
            window.close()
            qtbot.waitUntil(lambda: not window.isVisible(), timeout=RUN_TIMEOUT_MS)
        assert window.runner.threads() == []
        window.deleteLater()
    qtbot.wait(10)
    # Collect the windows' Python wrappers now, while no lane's thread runs.
    gc.collect()


@pytest.fixture
def window(make_window) -> MainWindow:
    return make_window()


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    """train/ (24 per class) and test/ (6 per class) folders of 32x32 PNGs."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for split, count in (("train", 24), ("test", 6)):
        for label, name in enumerate(CLASS_NAMES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for index in range(count):
                Image.fromarray(quadrant_image(label, rng)).save(folder / f"{index:03d}.png")
    return root
