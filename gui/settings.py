"""The window's persistent settings, declared in one place.

Everything the app remembers between sessions is read and written here, so a
key is spelled once and the format has one version number: settings from a
different version are ignored rather than half-applied. Tests pass an ini file
in a temporary folder, so they never touch the user's own settings.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings

from engine.config import RunConfig
from engine.errors import ConfigError

VERSION = 1
ORGANIZATION = "CIFAR Studio"
APPLICATION = "CIFAR Studio"


class Settings:
    """Typed access to the stored run settings and window layout."""

    def __init__(self, path: str | Path | None = None):
        if path is None:
            self._store = QSettings(QSettings.IniFormat, QSettings.UserScope, ORGANIZATION, APPLICATION)
        else:
            self._store = QSettings(str(path), QSettings.IniFormat)
        if self._store.value("version") not in (None, VERSION, str(VERSION)):
            self._store.clear()
        self._store.setValue("version", VERSION)

    @property
    def path(self) -> str:
        return self._store.fileName()

    def run_config(self) -> RunConfig | None:
        """The last dataset, model and hyperparameters, or None if none are stored."""
        text = self._store.value("run/config")
        if not text:
            return None
        try:
            return RunConfig.from_json(str(text))
        except ConfigError:
            return None

    def set_run_config(self, config: RunConfig) -> None:
        self._store.setValue("run/config", config.to_json())

    def window_geometry(self) -> QByteArray | None:
        return self._bytes("window/geometry")

    def window_state(self) -> QByteArray | None:
        return self._bytes("window/state")

    def set_window_layout(self, geometry: QByteArray, state: QByteArray) -> None:
        self._store.setValue("window/geometry", geometry)
        self._store.setValue("window/state", state)

    def current_tab(self) -> int:
        return int(self._store.value("window/tab", 0))

    def set_current_tab(self, index: int) -> None:
        self._store.setValue("window/tab", index)

    def sync(self) -> None:
        self._store.sync()

    def _bytes(self, key: str) -> QByteArray | None:
        value = self._store.value(key)
        return value if isinstance(value, QByteArray) and not value.isEmpty() else None
