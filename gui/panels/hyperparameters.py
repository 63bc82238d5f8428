"""The Hyperparameter panel: a preset list and every training setting.

Shows TrainingConfig. Choosing a preset asks the window to apply it (a
preset also sets some model settings, never the architecture); any field
can then be edited, and the window sets the list to "Custom" once the
settings no longer match it.
Settings the panel does not show (precision, distribution, steps per
execution) are kept as the preset or the saved settings had them.
"""

from __future__ import annotations

import copy

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QComboBox, QFormLayout, QGridLayout, QLabel, QVBoxLayout, QWidget

from engine.config import PRESETS, RunConfig, TrainingConfig
from engine.registry import setting
from gui.panels.forms import ChoiceField, NumberField, connect_fields, mark_fields, read_fields, write_fields

CUSTOM = "Custom"


class HyperparameterPanel(QWidget):
    """Edits the training settings; emits `changed` on every edit and
    `preset_chosen(name)` when the user picks a preset."""

    changed = Signal()
    preset_chosen = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._hidden = TrainingConfig()
        self.preset_list = QComboBox()
        self.preset_list.addItem(CUSTOM)
        for name, recipe in PRESETS.items():
            self.preset_list.addItem(name)
            self.preset_list.setItemData(self.preset_list.count() - 1, recipe.description, Qt.ToolTipRole)
        self.preset_list.setToolTip(setting("preset").help)
        self.preset_list.activated.connect(self._on_preset_activated)

        t = "training."
        self.optimizer = ChoiceField(t + "optimizer")
        self.learning_rate = NumberField(t + "learning_rate")
        self.momentum = NumberField(t + "momentum")
        self.weight_decay = NumberField(t + "weight_decay")
        self.schedule = ChoiceField(t + "schedule")
        self.warmup_epochs = NumberField(t + "warmup_epochs")
        self.step_every = NumberField(t + "step_every")
        self.step_factor = NumberField(t + "step_factor")
        self.batch_size = NumberField(t + "batch_size")
        self.epochs = NumberField(t + "epochs")
        self.steps_per_epoch = NumberField(t + "steps_per_epoch")
        self.validation_steps = NumberField(t + "validation_steps")
        self.augmentation = ChoiceField(t + "augmentation")
        self.label_smoothing = NumberField(t + "label_smoothing")
        self.ema = NumberField(t + "ema")
        self.tta = ChoiceField(t + "tta")
        self.early_stopping = NumberField(t + "early_stopping")
        self.seed = NumberField(t + "seed")

        self.fields = [
            self.optimizer, self.learning_rate, self.momentum, self.weight_decay,
            self.schedule, self.warmup_epochs, self.step_every, self.step_factor,
            self.batch_size, self.epochs, self.steps_per_epoch, self.validation_steps,
            self.augmentation, self.label_smoothing, self.ema, self.tta,
            self.early_stopping, self.seed,
        ]
        preset_row = QFormLayout()
        preset_row.addRow("Preset", self.preset_list)
        grid = QGridLayout()
        for index, field in enumerate(self.fields):
            row, column = divmod(index, 2)
            grid.addWidget(QLabel(field.label), row, column * 2)
            grid.addWidget(field, row, column * 2 + 1)
        connect_fields(self.fields, self._on_field_changed)
        grid.setColumnStretch(1, 1)
        grid.setColumnStretch(3, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(preset_row)
        layout.addLayout(grid)
        layout.addStretch(1)
        self._update_enabled()

    def set_config(self, config: RunConfig) -> None:
        """Show a run's training settings and its preset (if they still match it)."""
        self._hidden = copy.deepcopy(config.training)
        read_fields(self.fields, config)
        self.show_preset(config.preset)
        self._on_field_changed()

    def write_into(self, config: RunConfig) -> dict[str, str]:
        """Put the fields into config.training; return problems with the text."""
        config.training = copy.deepcopy(self._hidden)
        problems = write_fields(self.fields, config)
        name = self.preset_list.currentText()
        config.preset = name if name != CUSTOM else ""
        return problems

    def show_problems(self, problems: dict[str, str]) -> None:
        mark_fields(self.fields, problems)

    def show_preset(self, name: str) -> None:
        """Show `name` in the preset list ("Custom" for none), without a signal."""
        self.preset_list.blockSignals(True)
        self.preset_list.setCurrentText(name if name in PRESETS else CUSTOM)
        self.preset_list.blockSignals(False)

    def _on_preset_activated(self, index: int) -> None:
        name = self.preset_list.itemText(index)
        if name != CUSTOM:
            self.preset_chosen.emit(name)

    def _on_field_changed(self) -> None:
        self._update_enabled()
        self.changed.emit()

    def _update_enabled(self) -> None:
        self.momentum.setEnabled(self.optimizer.value() in ("sgd", "rmsprop"))
        stepped = self.schedule.value() == "step"
        self.step_every.setEnabled(stepped)
        self.step_factor.setEnabled(stepped)
