"""Form fields shared by the settings panels.

Each field edits one setting (value() gives what RunConfig.set takes) named
by its config key ("training.batch_size"); its label, tooltip, choices and
words for special numbers come from the registry (engine/registry.py).
Numbers are typed as text, so any value can be entered and then explained:
the panel writes the text into a RunConfig with `RunConfig.set` (the same
conversion the CLI's --set uses) and engine.config.validate says what is
wrong; `mark` puts that message on the field.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QComboBox, QLineEdit, QWidget

from engine.config import RunConfig
from engine.errors import ConfigError
from engine.registry import setting


def _describe(field: QWidget, key: str) -> None:
    """Give a field its setting's key, label and help text (as its tooltip)."""
    field.key = key
    field.label = setting(key).label
    field.help_text = setting(key).help
    field.setToolTip(field.help_text)


class NumberField(QLineEdit):
    """A number as text; some values have words ("auto" for 0)."""

    def __init__(self, key: str):
        super().__init__()
        _describe(self, key)
        self.words = setting(key).words or {}
        if 0 in self.words:
            self.setPlaceholderText(self.words[0])

    def set_value(self, value: float) -> None:
        if value in self.words:
            self.setText(self.words[value])
        elif isinstance(value, float):
            short = f"{value:g}"
            self.setText(short if float(short) == value else repr(value))
        else:
            self.setText(str(value))

    def value(self) -> str:
        """The text as the config's conversion reads it (words back to numbers)."""
        text = self.text().strip()
        if not text and 0 in self.words:
            return "0"
        for number, word in self.words.items():
            if text.lower() == word.lower():
                return str(number)
        return text


class TextField(QLineEdit):
    """Free text, such as a path."""

    def __init__(self, key: str):
        super().__init__()
        _describe(self, key)

    def value(self) -> str:
        return self.text().strip()

    def set_value(self, value: str) -> None:
        self.setText(value)


MIN_CHOICE_CHARACTERS = 6


class ChoiceField(QComboBox):
    """One of a fixed set of values, each shown with a readable label."""

    changed = Signal()

    def __init__(self, key: str):
        super().__init__()
        _describe(self, key)
        for value, label in setting(key).choices.items():
            self.addItem(label, value)
        # a long label ("flip, translate and erase a patch (cutout)") must not widen the whole panel: the
        # field shows what fits and the list opens as wide as its longest label
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(MIN_CHOICE_CHARACTERS)
        self.view().setMinimumWidth(max(self.fontMetrics().horizontalAdvance(self.itemText(i))
                                        for i in range(self.count())) + 24)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)  # not focused by the wheel: see wheelEvent
        self.currentIndexChanged.connect(self.changed)

    def wheelEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        """The wheel scrolls the panel under the pointer; it changes the value only once the field has the
        focus (clicked or tabbed to), so scrolling down the settings never changes one on the way."""
        if self.hasFocus():
            super().wheelEvent(event)
        else:
            event.ignore()

    def value(self) -> str:
        return self.currentData()

    def set_value(self, value: str) -> None:
        index = self.findData(value)
        if index >= 0:
            self.setCurrentIndex(index)


def write_fields(fields: list[QWidget], config: RunConfig) -> dict[str, str]:
    """Write each field's value into config; return {key: message} for text
    that is not a number of the right kind (the field keeps its old value)."""
    problems = {}
    for field in fields:
        try:
            config.set(field.key, field.value())
        except ConfigError as exc:
            problems[field.key] = str(exc)
    return problems


def read_fields(fields: list[QWidget], config: RunConfig) -> None:
    """Show config's values in the fields, quietly: the caller reacts once
    afterwards instead of once per field."""
    for field in fields:
        section, name = field.key.split(".")
        field.blockSignals(True)
        field.set_value(getattr(getattr(config, section), name))
        field.blockSignals(False)


def connect_fields(fields: list[QWidget], slot) -> None:
    """Call slot whenever the user changes any of the fields."""
    for field in fields:
        signal = field.changed if isinstance(field, ChoiceField) else field.textChanged
        signal.connect(slot)


def mark(field: QWidget, message: str | None) -> None:
    """Show a field as invalid (red border from the style sheet, and the reason
    as its tooltip), or as valid again with its help text."""
    invalid = bool(message)
    if field.property("invalid") != invalid:
        field.setProperty("invalid", invalid)
        field.style().unpolish(field)
        field.style().polish(field)
    help_text = getattr(field, "help_text", "")
    field.setToolTip(f"{message}\n\n{help_text}" if invalid else help_text)


def mark_fields(fields: list[QWidget], problems: dict[str, str]) -> None:
    for field in fields:
        mark(field, problems.get(field.key))
