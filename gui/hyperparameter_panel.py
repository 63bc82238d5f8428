"""The Hyperparameter panel: a preset list and every training setting.

Shows TrainingConfig. A preset fills the fields; any field can then be
edited, and the preset list says "Custom" once they no longer match it.
Settings the panel does not show (precision, distribution, steps per
execution) are kept as the preset or the saved settings had them.
"""

from __future__ import annotations

import copy

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QFormLayout, QGridLayout, QLabel, QVBoxLayout, QWidget

from engine.config import PRESETS, RunConfig, TrainingConfig, preset
from gui.forms import ChoiceField, NumberField, connect_fields, mark_fields, read_fields, write_fields

CUSTOM = "Custom"

OPTIMIZER_LABELS = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW", "rmsprop": "RMSprop"}
SCHEDULE_LABELS = {"constant": "constant", "step": "step decay", "cosine": "cosine"}
AUGMENTATION_LABELS = {"none": "none", "flip": "flip", "flip_crop": "flip and translate"}


class HyperparameterPanel(QWidget):
    """Edits the training settings; emits `changed` on every edit and
    `preset_chosen(name, RunConfig)` when the user picks a preset."""

    changed = Signal()
    preset_chosen = Signal(str, object)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._hidden = TrainingConfig()
        self.preset_list = QComboBox()
        self.preset_list.addItem(CUSTOM)
        self.preset_list.addItems(list(PRESETS))
        self.preset_list.setToolTip("A preset fills every field below; edit any of them afterwards.")
        self.preset_list.activated.connect(self._on_preset_activated)

        t = "training."
        self.optimizer = ChoiceField(t + "optimizer", "The optimizer that updates the weights.", OPTIMIZER_LABELS)
        self.learning_rate = NumberField(t + "learning_rate", "Step size of the optimizer, e.g. 0.01 or 1e-3.")
        self.momentum = NumberField(t + "momentum", "SGD momentum (0 to 0.999); Adam's beta_1 is left as is.")
        self.weight_decay = NumberField(t + "weight_decay", "Weight decay (0 = none); decoupled for AdamW.")
        self.schedule = ChoiceField(t + "schedule", "How the learning rate changes over the epochs.", SCHEDULE_LABELS)
        self.warmup_epochs = NumberField(t + "warmup_epochs", "Epochs of linear warm-up (0 = none).")
        self.step_every = NumberField(t + "step_every", "Step decay: multiply the rate every this many epochs.")
        self.step_factor = NumberField(t + "step_factor", "Step decay: the factor (between 0 and 1).")
        self.batch_size = NumberField(t + "batch_size", "Images per training step.")
        self.epochs = NumberField(t + "epochs", "Passes over the training data.")
        self.steps_per_epoch = NumberField(
            t + "steps_per_epoch", "Batches per epoch; auto = every batch the data gives.", {0: "auto"}
        )
        self.validation_steps = NumberField(
            t + "validation_steps",
            "Validation batches per epoch; all = the whole validation split. "
            "Fewer steps give a partial, noisy estimate.",
            {0: "all"},
        )
        self.augmentation = ChoiceField(
            t + "augmentation", "Random changes to the training images, inside the model.", AUGMENTATION_LABELS
        )
        self.label_smoothing = NumberField(t + "label_smoothing", "Label smoothing (0 to 0.5).")
        self.early_stopping = NumberField(
            t + "early_stopping", "Stop after this many epochs without improvement; off = never.", {0: "off"}
        )
        self.seed = NumberField(t + "seed", "Random seed for weights, shuffling and augmentation.")

        self.fields = [
            self.optimizer, self.learning_rate, self.momentum, self.weight_decay,
            self.schedule, self.warmup_epochs, self.step_every, self.step_factor,
            self.batch_size, self.epochs, self.steps_per_epoch, self.validation_steps,
            self.augmentation, self.label_smoothing, self.early_stopping, self.seed,
        ]
        labels = [
            "Optimizer", "Learning rate", "Momentum", "Weight decay",
            "Schedule", "Warm-up epochs", "Step every", "Step factor",
            "Batch size", "Epochs", "Steps per epoch", "Validation steps",
            "Augmentation", "Label smoothing", "Early stopping", "Seed",
        ]
        preset_row = QFormLayout()
        preset_row.addRow("Preset", self.preset_list)
        grid = QGridLayout()
        for index, (label, field) in enumerate(zip(labels, self.fields)):
            row, column = divmod(index, 2)
            grid.addWidget(QLabel(label), row, column * 2)
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
        self._show_preset(config.preset)
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

    def _on_preset_activated(self, index: int) -> None:
        name = self.preset_list.itemText(index)
        if name == CUSTOM:
            return
        config = preset(name)
        self.set_config(config)
        self.preset_chosen.emit(name, config)

    def _on_field_changed(self) -> None:
        self._update_enabled()
        self._show_preset(self.preset_list.currentText())
        self.changed.emit()

    def _show_preset(self, name: str) -> None:
        """Show `name` if the fields equal that preset's, else "Custom"."""
        shown = CUSTOM
        if name in PRESETS:
            config = preset(name)
            current = RunConfig(training=copy.deepcopy(self._hidden))
            if not write_fields(self.fields, current) and current.training == config.training:
                shown = name
        self.preset_list.blockSignals(True)
        self.preset_list.setCurrentText(shown)
        self.preset_list.blockSignals(False)

    def _update_enabled(self) -> None:
        self.momentum.setEnabled(self.optimizer.value() in ("sgd", "rmsprop"))
        stepped = self.schedule.value() == "step"
        self.step_every.setEnabled(stepped)
        self.step_factor.setEnabled(stepped)
