"""Errors the engine raises for bad input.

Each carries a message written for the user (the CLI prints it on one line,
the GUI shows it in the panel), so callers never need a traceback.
"""


class EngineError(Exception):
    """A problem the user can fix; the message says what and how."""


class ConfigError(EngineError):
    """A setting has a value that is not allowed."""


class DatasetError(EngineError):
    """A dataset is missing, corrupt or not in a format the app reads."""


class ModelError(EngineError):
    """A model cannot be built, opened or used as asked."""


class RunStoreError(EngineError):
    """A run does not exist or the run store cannot be written."""
