"""The Model panel: architecture, weights, trainable layers, input size, head.

Shows ModelConfig and the parameter counts of the model it describes. The
counts come from engine.models, which imports Keras, so the panel counts
them on the task runner (debounced, and the latest request wins, so typing
does not queue a build per key) and shows the answer when it comes back;
the window never waits.
"""

from __future__ import annotations


from PySide6.QtCore import QTimer, Signal
from PySide6.QtWidgets import (
    QFileDialog, QFormLayout, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget,
)

from engine.config import ModelConfig, RunConfig
from engine.registry import ARCHITECTURES
from engine.errors import EngineError
from gui.concurrent import TaskRunner, TaskState
from gui.panels.forms import ChoiceField, NumberField, TextField, connect_fields, mark_fields, read_fields, write_fields

COUNT_DELAY_MS = 300


class ModelPanel(QWidget):
    """Edits the model settings and shows their parameter counts."""

    changed = Signal()

    def __init__(self, runner: TaskRunner, parent: QWidget | None = None):
        super().__init__(parent)
        self.runner = runner
        self.input_shape: tuple[int, int, int] = (32, 32, 3)
        self.num_classes = 10
        self.counts: dict[str, int] | None = None
        self._requested = None

        m = "model."
        self.architecture = ChoiceField(m + "architecture")
        self.description = QLabel()
        self.description.setObjectName("hint")
        self.description.setWordWrap(True)
        self.weights = ChoiceField(m + "weights")
        self.weights_file = TextField(m + "weights_file")
        self.browse_button = QPushButton("Browse…")
        self.browse_button.clicked.connect(self._on_browse_clicked)
        self.trainable_layers = NumberField(m + "trainable_layers")
        self.input_size = NumberField(m + "input_size")
        self.head = ChoiceField(m + "head")
        self.params_label = QLabel()
        self.params_label.setObjectName("params")
        self.params_label.setWordWrap(True)
        self.fields = [
            self.architecture, self.weights, self.weights_file, self.trainable_layers, self.input_size, self.head,
        ]

        file_row = QHBoxLayout()
        file_row.addWidget(self.weights_file, 1)
        file_row.addWidget(self.browse_button)
        self.form = form = QFormLayout()
        form.addRow(self.architecture.label, self.architecture)
        form.addRow("", self.description)
        form.addRow(self.weights.label, self.weights)
        form.addRow(self.weights_file.label, file_row)
        form.addRow(self.trainable_layers.label, self.trainable_layers)
        form.addRow(self.input_size.label, self.input_size)
        form.addRow(self.head.label, self.head)
        form.addRow("Parameters", self.params_label)
        self._weights_file_row = 3
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addStretch(1)

        self._count_timer = QTimer(self)
        self._count_timer.setSingleShot(True)
        self._count_timer.setInterval(COUNT_DELAY_MS)
        self._count_timer.timeout.connect(self._on_count_timer)
        connect_fields(self.fields, self._on_field_changed)
        self._on_field_changed()

    def set_config(self, config: RunConfig) -> None:
        read_fields(self.fields, config)
        self._on_field_changed()

    def write_into(self, config: RunConfig) -> dict[str, str]:
        config.model = ModelConfig()
        return write_fields(self.fields, config)

    def show_problems(self, problems: dict[str, str]) -> None:
        mark_fields(self.fields, problems)

    def set_data_shape(self, input_shape: tuple[int, int, int], num_classes: int) -> None:
        """Count parameters for the loaded dataset's image shape and classes."""
        self.input_shape, self.num_classes = tuple(input_shape), int(num_classes)
        self._count_timer.start()

    def model_config(self) -> ModelConfig | None:
        config = RunConfig()
        return None if self.write_into(config) else config.model

    def full_height(self) -> int:
        """The panel's height with every row of a pretrained base shown, so
        the window can keep room for them whatever is chosen now."""
        for row in range(self.form.rowCount()):
            self.form.setRowVisible(row, True)
        height = self.sizeHint().height()
        self._show_rows()
        return height

    def _on_field_changed(self) -> None:
        """Show only the options the architecture has (the pretrained bases'
        weights, layers, size and head), then recount."""
        architecture = ARCHITECTURES[self.architecture.value()]
        self._show_rows()
        self.description.setText(architecture.description)
        self.params_label.setText("counting…")
        self._count_timer.start()
        self.changed.emit()

    def _show_rows(self) -> None:
        pretrained = ARCHITECTURES[self.architecture.value()].pretrained
        for field in (self.weights, self.trainable_layers, self.input_size, self.head):
            self.form.setRowVisible(field, pretrained)
        self.form.setRowVisible(self._weights_file_row, pretrained and self.weights.value() == "file")

    def _on_count_timer(self) -> None:
        model = self.model_config()
        if model is None:
            self.params_label.setText("fix the fields above to count")
            return
        request = self._requested = (model, self.input_shape, self.num_classes)
        self.runner.start(_count_params, *request, key="params",
                          on_done=lambda counts: self._on_params_counted(request, counts),
                          on_error=lambda exc: self._on_params_failed(request, exc))

    def _on_params_counted(self, request, counts: dict) -> None:
        if request != self._requested:
            return
        self.counts = counts
        self.params_label.setText(
            f"{counts['total']:,} total · {counts['trainable']:,} trainable · "
            f"{counts['non_trainable']:,} non-trainable"
        )

    def _on_params_failed(self, request, exc: BaseException) -> None:
        if request != self._requested:
            return
        message = str(exc) if isinstance(exc, EngineError) else f"Could not build this model: {exc}"
        self.counts = None
        self.params_label.setText(message)

    def _on_browse_clicked(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Weights file", self.weights_file.text(), "Keras weights (*.h5)")
        if path:
            self.weights_file.setText(path)


def _count_params(state: TaskState, model: ModelConfig, input_shape: tuple, num_classes: int) -> dict:
    from engine.models import estimate_param_counts

    return dict(estimate_param_counts(model, input_shape, num_classes))
