"""The main window: the settings panels on the left, the tabs on the right.

Owns the task runner and the training session and ties the views together:
it gathers the panels' settings into one RunConfig, validates it (with the
loaded dataset's split sizes when there is one), marks the fields that are
wrong and says why Train is disabled; it starts and stops runs when the
Train tab asks (one run, or a queue of them trained one after the other),
loads a past run's settings back into the panels, remembers the settings
and the layout, and on close stops a run cleanly before letting the threads go.
"""

from __future__ import annotations

import gc
import html
import shlex
from dataclasses import dataclass

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import (
    QDockWidget, QInputDialog, QLabel, QMainWindow, QMessageBox, QScrollArea, QTabWidget, QWidget,
)

import engine
from engine.config import RunConfig, apply_preset, preset_matches, validate
from engine.errors import EngineError
from engine.groups import GROUPS
from engine.registry import ARCHITECTURES
from gui.concurrent import TaskRunner, TaskState
from gui.panels.dataset import DatasetPanel
from gui.panels.hyperparameters import CUSTOM, HyperparameterPanel
from gui.panels.model import ModelPanel
from gui.settings import Settings
from gui.tabs.classify import ClassifyTab
from gui.tabs.compare import CompareTab
from gui.tabs.results import ResultsTab
from gui.tabs.train import TrainTab
from gui.training import TrainingSession

APP_NAME = "CIFAR Studio"
KNOWN_SHAPES = {  # image shape and classes of the sources that always give the same
    "cifar10": ((32, 32, 3), 10),
    "cifar10_archive": ((32, 32, 3), 10),
    "cifar100": ((32, 32, 3), 100),
    "fashion_mnist": ((28, 28, 1), 10),
}
FIRST_SIZE = (1480, 980)  # the window on first start, where the screen is big enough
FIRST_DOCK_WIDTH = 480  # the docks' width at FIRST_SIZE
FRAME_ALLOWANCE = 40  # pixels for a title bar the window manager adds (unknown before the first show)


@dataclass
class RunQueue:
    """A group of runs the window trains one after the other: `index` is the one training now."""

    name: str
    configs: list[RunConfig]
    index: int = 0

    @property
    def not_started(self) -> int:
        return len(self.configs) - self.index - 1

    def describe(self) -> str:
        config = self.configs[self.index]
        return (f"Queue '{self.name}': run {self.index + 1} of {len(self.configs)} "
                f"({_run_label(config)})")


class MainWindow(QMainWindow):
    """The application window.

    `confirm_stop_on_close` answers "stop the run and close?" and
    `confirm_queue` "train these runs?" without a dialog when True or False
    (tests); None asks the user.
    """

    shown = Signal()

    def __init__(self, settings: Settings | None = None):
        super().__init__()
        self.settings = settings or Settings()
        self.confirm_stop_on_close: bool | None = None
        self.confirm_queue: bool | None = None
        self.queue: RunQueue | None = None
        self.backend: dict = {}
        self._close_when_stopped = False
        self._shown_once = False
        self._applying_preset = False
        self.setWindowTitle(APP_NAME)
        self.setObjectName("main_window")

        self.runner = TaskRunner(self)
        self.training = TrainingSession(self.runner, self)
        self.dataset_panel = DatasetPanel(self.runner)
        self.model_panel = ModelPanel(self.runner)
        self.hyperparameter_panel = HyperparameterPanel()
        self.train_tab = TrainTab(self.training)
        self.results_tab = ResultsTab(self.runner)
        self.compare_tab = CompareTab(self.runner)
        self.classify_tab = ClassifyTab(self.runner)
        self.tabs = QTabWidget()
        self.tabs.addTab(self.train_tab, "Train")
        self.tabs.addTab(self.results_tab, "Results")
        self.tabs.addTab(self.compare_tab, "Compare")
        self.tabs.addTab(self.classify_tab, "Classify")
        self.setCentralWidget(self.tabs)
        self.docks = [
            self._add_dock("Dataset", self.dataset_panel),
            self._add_dock("Model", self.model_panel),
            self._add_dock("Hyperparameters", self.hyperparameter_panel),
        ]
        self._create_menus()
        self.backend_label = QLabel("Keras: loading…")
        self.statusBar().addPermanentWidget(self.backend_label)

        self.dataset_panel.changed.connect(self._on_settings_changed)
        self.dataset_panel.loaded.connect(self._on_dataset_loaded)
        self.model_panel.changed.connect(self._on_settings_changed)
        self.hyperparameter_panel.changed.connect(self._on_settings_changed)
        self.hyperparameter_panel.preset_chosen.connect(self._on_preset_chosen)
        self.train_tab.train_requested.connect(self.train)
        self.train_tab.stop_requested.connect(self.stop)
        self.training.run_ended.connect(self._on_run_ended)
        self.training.dataset_loaded.connect(lambda loaded: self.dataset_panel.show_loaded(*loaded))
        self.results_tab.message.connect(lambda text: self.statusBar().showMessage(text, 10000))
        self.compare_tab.message.connect(lambda text: self.statusBar().showMessage(text, 10000))
        self.compare_tab.open_requested.connect(self.open_in_results)
        self.compare_tab.train_again_requested.connect(self.load_run_settings)
        self.compare_tab.resume_requested.connect(self.resume)
        self.compare_tab.queue_requested.connect(self.choose_queue)
        self.classify_tab.status_changed.connect(lambda text: self.statusBar().showMessage(text, 10000))

        self._restore()

    # --- building -----------------------------------------------------------

    def _add_dock(self, title: str, panel: QWidget) -> QDockWidget:
        scroll = QScrollArea()
        scroll.setWidget(panel)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.NoFrame)
        dock = QDockWidget(title, self)
        dock.setObjectName(title.lower() + "_dock")
        dock.setFeatures(QDockWidget.DockWidgetMovable | QDockWidget.DockWidgetFloatable)
        dock.setWidget(scroll)
        self.addDockWidget(Qt.LeftDockWidgetArea, dock)
        return dock

    def _create_menus(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        self.open_dataset_action = self._action(file_menu, "Open &dataset…", "Ctrl+O",
                                                self.dataset_panel.open_dataset)
        self.open_model_action = self._action(file_menu, "Open &model…", "Ctrl+Shift+O", self._on_open_model)
        file_menu.addSeparator()
        self.quit_action = self._action(file_menu, "&Quit", "Ctrl+Q", self.close)
        run_menu = self.menuBar().addMenu("&Run")
        self.train_action = self._action(run_menu, "&Train", "Ctrl+R", self.train)
        self.stop_action = self._action(run_menu, "&Stop", "Ctrl+.", self.stop)
        self.stop_action.setEnabled(False)
        # One action per group of engine.groups, so the menu and `main.py queue` offer the same groups.
        self.queue_menu = run_menu.addMenu("&Queue")
        self.queue_actions: dict[str, QAction] = {}
        for group, runs in GROUPS.items():
            action = self.queue_menu.addAction(f"{group} ({len(runs)} runs)…",
                                               lambda group=group: self.queue_group(group))
            self.queue_actions[group] = action
        if not GROUPS:
            self.queue_menu.addAction("(no groups of runs defined)").setEnabled(False)
        help_menu = self.menuBar().addMenu("&Help")
        self.about_action = self._action(help_menu, "&About", "F1", self._on_about)

    def _action(self, menu, text, shortcut, handler) -> QAction:
        action = QAction(text, self)
        action.setShortcut(QKeySequence(shortcut))
        action.triggered.connect(handler)
        menu.addAction(action)
        return action

    # --- settings -----------------------------------------------------------

    def run_config(self) -> tuple[RunConfig, dict[str, str]]:
        """The panels' settings and every problem with them ({key: message})."""
        config = RunConfig()
        problems = {}
        for panel in (self.dataset_panel, self.model_panel, self.hyperparameter_panel):
            problems.update(panel.write_into(config))
        dataset = self.dataset_panel.dataset_for(config.dataset)
        sizes = {}
        if dataset is not None:
            sizes = {"train_size": len(dataset.y_train), "val_size": len(dataset.y_val)}
        for key, message in validate(config, **sizes).items():
            problems.setdefault(key, message)
        return config, problems

    def train_blocked_reason(self) -> str:
        """Why Train is disabled now ("" when it is not)."""
        return self.train_tab.blocked_reason() if not self.training.is_training else ""

    def _on_settings_changed(self) -> None:
        if self._applying_preset:
            return
        config, problems = self.run_config()
        if config.preset and not preset_matches(config, config.preset):
            self.hyperparameter_panel.show_preset(CUSTOM)
        self._count_params_for(config)
        for panel in (self.dataset_panel, self.model_panel, self.hyperparameter_panel):
            panel.show_problems(problems)
        reason = ""
        if problems:
            message = next(iter(problems.values()))
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            reason = f"Cannot train: {message}{more}"
        running = self.training.is_training
        self.train_tab.set_running(running, reason)
        self.train_action.setEnabled(not running and not reason)
        self.stop_action.setEnabled(running)

    def _on_preset_chosen(self, name: str) -> None:
        """Apply a preset to the panels' settings; the architecture stays the user's."""
        config = RunConfig()
        for panel in (self.dataset_panel, self.model_panel, self.hyperparameter_panel):
            panel.write_into(config)
        config = apply_preset(config, name)
        self._applying_preset = True
        try:
            self.model_panel.set_config(config)
            self.hyperparameter_panel.set_config(config)
        finally:
            self._applying_preset = False
        self.train_tab.add_log(f"Preset '{name}' filled the hyperparameters for "
                               f"{ARCHITECTURES[config.model.architecture].label}.")
        self._on_settings_changed()

    def _on_dataset_loaded(self, dataset) -> None:
        self._on_settings_changed()

    def _count_params_for(self, config: RunConfig) -> None:
        """Count the model's parameters for the data it will see: the loaded
        dataset's shape and classes, else what the source is known to give."""
        dataset = self.dataset_panel.dataset_for(config.dataset)
        if dataset is not None:
            shape, classes = dataset.image_shape, dataset.num_classes
        else:
            side = config.dataset.image_size or 32
            shape, classes = KNOWN_SHAPES.get(config.dataset.source, ((side, side, 3), 10))
        if (tuple(shape), classes) != (self.model_panel.input_shape, self.model_panel.num_classes):
            self.model_panel.set_data_shape(shape, classes)

    def _restore(self) -> None:
        config = self.settings.run_config()
        if config is None:
            config = RunConfig()
        self.dataset_panel.set_config(config)
        self.model_panel.set_config(config)
        self.hyperparameter_panel.set_config(config)
        # The Model dock keeps room for a pretrained base's rows when the Dataset dock grows.
        line = self.model_panel.fontMetrics().lineSpacing()
        self.docks[1].widget().setMinimumHeight(min(self.model_panel.full_height() + line, 300))
        geometry, state = self.settings.window_geometry(), self.settings.window_state()
        if geometry is not None:
            self.restoreGeometry(geometry)
        if state is not None:
            self.restoreState(state)
        else:
            self._fit_first_start()
        self.tabs.setCurrentIndex(self.settings.current_tab())
        self._on_settings_changed()

    def _fit_first_start(self) -> None:
        """The first window: 1480x980 where the screen has room, else the
        screen's free area (a 1366x768 laptop included), docks in proportion."""
        screen = self.screen().availableGeometry()
        frame = self.frameGeometry().size() - self.geometry().size()  # title bar and borders, once shown
        width = min(FIRST_SIZE[0], screen.width() - frame.width())
        height = min(FIRST_SIZE[1], screen.height() - max(frame.height(), FRAME_ALLOWANCE))
        self.resize(width, height)
        self.move(screen.left() + (screen.width() - width) // 2, screen.top())
        self.lay_out_docks()

    def lay_out_docks(self) -> None:
        """The docks' first-start sizes for the window's size: every hyperparameter and a pretrained
        model's rows shown, the Dataset dock taking the rest; FIRST_DOCK_WIDTH wide at the first size."""
        scale = self.height() / FIRST_SIZE[1]
        self.resizeDocks(self.docks, [int(340 * scale), int(250 * scale), int(335 * scale)], Qt.Vertical)
        self.resizeDocks(self.docks[:1], [int(FIRST_DOCK_WIDTH * min(1.0, self.width() / FIRST_SIZE[0]))],
                         Qt.Horizontal)

    def save_settings(self) -> None:
        config = RunConfig()
        for panel in (self.dataset_panel, self.model_panel, self.hyperparameter_panel):
            panel.write_into(config)
        self.settings.set_run_config(config)
        self.settings.set_window_layout(self.saveGeometry(), self.saveState())
        self.settings.set_current_tab(self.tabs.currentIndex())
        self.settings.sync()

    # --- running ------------------------------------------------------------

    def train(self) -> bool:
        """Start a run with the panels' settings; False if it cannot start."""
        if self.training.is_training:
            return False
        config, problems = self.run_config()
        if problems:
            self._on_settings_changed()
            return False
        dataset = self.dataset_panel.dataset_for(config.dataset)
        architecture = ARCHITECTURES[config.model.architecture].label
        data = "the loaded dataset" if dataset is not None else "the dataset (loading it first)"
        self.train_tab.start(f"Training {architecture} on {data}.")
        self.tabs.setCurrentWidget(self.train_tab)
        self.training.train(config, dataset)
        self._on_settings_changed()
        self.save_settings()
        return True

    def stop(self) -> None:
        """Stop the run training; a queue's runs not started yet are cancelled."""
        if self.queue is not None:
            text = f"Queue cancelled: {self.queue.not_started} runs not started."
            self.queue = None
            self.train_tab.add_log(text)
            self.statusBar().showMessage(text, 10000)
        if self.training.is_training:
            self.train_tab.stopping()
            self.training.stop()

    def _on_run_ended(self, event) -> None:
        self._on_settings_changed()
        self.statusBar().showMessage(self.train_tab.summary_text(), 10000)
        if self._close_when_stopped:
            self.queue = None
            self.close()
            return
        self.compare_tab.refresh()
        if event.run_id:  # the run just trained opens in Results (its curves stay on the Train tab)
            self.results_tab.open_run(event.run_id)
            self.classify_tab.refresh_runs()
        if self.queue is not None:
            self.queue.index += 1
            if self.queue.index < len(self.queue.configs):
                self._train_queued()
            else:
                text = f"Queue '{self.queue.name}' done: {len(self.queue.configs)} runs trained."
                self.queue = None
                self.train_tab.add_log(text)
                self.statusBar().showMessage(text, 10000)

    # --- queues of runs -----------------------------------------------------

    def choose_queue(self) -> bool:
        """The Compare tab's Queue… button: choose a group of engine.groups, then queue it."""
        if not GROUPS:
            self.statusBar().showMessage("No groups of runs are defined (engine/groups.py's GROUPS is empty).",
                                         10000)
            return False
        group, ok = QInputDialog.getItem(self, "Queue a group of runs", "Group:",
                                         list(GROUPS), 0, False)
        return bool(ok) and self.queue_group(group)

    def queue_group(self, group: str, overrides: list[str] | None = None) -> bool:
        """Train a group of runs one after the other, on the panels' dataset and
        machine settings with `overrides` ("key=value") applied to every run;
        without overrides given, ask for them. False when nothing was started."""
        from engine.groups import group_configs

        if self.training.is_training:
            self.statusBar().showMessage("A run is training: let it end or stop it, then queue the group.", 10000)
            return False
        if overrides is None:
            text, ok = QInputDialog.getText(
                self, f"Queue '{group}'",
                "Settings to change in every run, as key=value separated by spaces (empty for none),\n"
                "for example: model.input_size=64 dataset.train_subset=2000")
            if not ok:
                return False
            try:
                overrides = shlex.split(text)
            except ValueError as exc:
                self._warn(f"Queue '{group}'", f"Cannot read the settings to change ({exc}): close the quotes.")
                return False
        base, _ = self.run_config()
        try:
            configs = group_configs(group, base=base, overrides=overrides)
        except EngineError as exc:
            self._warn(f"Queue '{group}'", f"Cannot queue '{group}': {exc}")
            return False
        if not self._confirm_queue(group, configs):
            return False
        return self.start_queue(group, configs)

    def start_queue(self, name: str, configs: list[RunConfig]) -> bool:
        """Train these configs one after the other (each saved as it ends); Stop cancels the rest."""
        if self.training.is_training or not configs:
            return False
        self.queue = RunQueue(name, list(configs))
        self._train_queued()
        return True

    def _train_queued(self) -> None:
        queue = self.queue
        config = queue.configs[queue.index]
        self.train_tab.start(queue.describe() + ".")
        self.tabs.setCurrentWidget(self.train_tab)
        self.training.train(config, self.dataset_panel.dataset_for(config.dataset))
        self._on_settings_changed()

    def _confirm_queue(self, group: str, configs: list[RunConfig]) -> bool:
        if self.confirm_queue is not None:
            return self.confirm_queue
        lines = "\n".join(f"{i}. {_run_label(c)}: {c.training.epochs} epochs, batch {c.training.batch_size}, "
                          f"{c.training.optimizer}" for i, c in enumerate(configs, start=1))
        answer = QMessageBox.question(
            self, f"Queue '{group}'?",
            f"Train these {len(configs)} runs one after the other on the panels' dataset? Each is saved as it "
            f"ends; Stop stops the current one and cancels the rest.\n\n{lines}",
            QMessageBox.Yes | QMessageBox.No, QMessageBox.Yes)
        return answer == QMessageBox.Yes

    def _warn(self, title: str, text: str) -> None:
        self.statusBar().showMessage(text, 10000)
        if self.confirm_queue is None:  # tests answer for the user and read the status bar
            QMessageBox.warning(self, title, text)

    # --- past runs ----------------------------------------------------------

    def open_in_results(self, run_id: str) -> None:
        self.results_tab.open_run(run_id)
        self.tabs.setCurrentWidget(self.results_tab)

    def load_run_settings(self, run_id: str) -> bool:
        """Train again: a run's settings into the panels, to change one thing and train."""
        from engine.runs import RunStore

        try:
            store = RunStore()
            record = store.get(run_id)
            config = store.config(record.run_id)
        except EngineError as exc:
            self.statusBar().showMessage(f"Cannot load the settings of run {run_id}: {exc}", 10000)
            return False
        for panel in (self.dataset_panel, self.model_panel, self.hyperparameter_panel):
            panel.set_config(config)
        self._on_settings_changed()
        self.tabs.setCurrentWidget(self.train_tab)
        self.train_tab.add_log(f"Settings of run {record.name} ({record.run_id}) loaded: change one thing and train.")
        return True

    def resume(self, run_id: str) -> bool:
        """Go on training a stopped or interrupted run, where the session can."""
        if self.training.is_training:
            self.statusBar().showMessage("A run is training: let it end or stop it, then resume the other.", 10000)
            return False
        if not hasattr(self.training, "resume"):
            self.statusBar().showMessage(f"Resuming is not in the window yet: run python main.py resume {run_id}.",
                                         10000)
            return False
        if not self.training.resume(run_id):
            self.statusBar().showMessage(f"Cannot resume run {run_id}.", 10000)
            return False
        self.train_tab.start(f"Resuming run {run_id}.")
        self.tabs.setCurrentWidget(self.train_tab)
        self._on_settings_changed()
        return True

    # --- menus --------------------------------------------------------------

    def _on_open_model(self) -> None:
        """File > Open model…: a file dialog, then the model in Classify's slot A."""
        self.tabs.setCurrentWidget(self.classify_tab)
        self.classify_tab.choose_model_file("A")

    def _on_about(self) -> None:
        QMessageBox.about(self, f"About {APP_NAME}", self.about_text())

    def about_text(self) -> str:
        info = self.backend
        if not info:
            keras_line = "Keras is still loading."
        else:
            backend = info.get("backend", "unknown")
            version = info.get("backend_version", "")
            keras_line = (f"Keras {info.get('keras_version', 'unknown')} on {backend} {version}".rstrip() +
                          f"<br>Device: {info.get('device', 'unknown')}")
            if info.get("gpu_advice"):
                keras_line += f"<br><br>GPU not used: {html.escape(info['gpu_advice'])}"
        return (f"<b>{APP_NAME}</b> {engine.__version__}<br>"
                "Train, compare and use image classifiers.<br><br>" + keras_line)

    def _report_backend(self) -> None:
        self.runner.start(_backend_info, on_done=self._on_backend_ready,
                          on_error=lambda exc: self._on_backend_ready(
                              {"keras_version": "unknown", "backend": "unknown", "device": "unknown",
                               "error": str(exc)}))

    def _on_backend_ready(self, info: dict) -> None:
        # Keras and its backend are imported now: hundreds of thousands of
        # objects that live as long as the app. Frozen, a full garbage
        # collection no longer walks them; with Keras loaded one took 200-600
        # ms and held the GIL, and so the window (benchmarks/classify_stall.py).
        gc.freeze()
        self.backend = info
        advice = info.get("gpu_advice", "")
        self.backend_label.setText(
            f"Keras {info.get('keras_version', '?')} · {info.get('backend', '?')} · {info.get('device', '?')}"
            + (" — GPU not used (see About)" if advice else "")
        )
        self.backend_label.setToolTip(advice)

    # --- showing and closing ------------------------------------------------

    def showEvent(self, event) -> None:
        super().showEvent(event)
        if not self._shown_once:
            self._shown_once = True
            self.shown.emit()
            # Import Keras once the window is up, off the GUI thread.
            QTimer.singleShot(100, self._report_backend)

    def closeEvent(self, event: QCloseEvent) -> None:
        if self.training.is_training:
            event.ignore()
            if self._close_when_stopped or self._confirm_stop():
                if not self.training.is_training:  # the run ended while the question was open
                    self.queue = None
                    QTimer.singleShot(0, self.close)
                    return
                self._close_when_stopped = True
                self.statusBar().showMessage("Stopping the run before closing…")
                self.train_tab.stopping()
                self.training.stop(evaluate=False)
            return
        self.save_settings()
        self.runner.shutdown()
        super().closeEvent(event)

    def _confirm_stop(self) -> bool:
        if self.confirm_stop_on_close is not None:
            return self.confirm_stop_on_close
        answer = QMessageBox.question(
            self, "Stop training?",
            "A run is still training. Stop it and close? What it has learned so far is saved as a stopped "
            "run (evaluate it later with main.py evaluate RUN).",
            QMessageBox.Yes | QMessageBox.No, QMessageBox.No,
        )
        return answer == QMessageBox.Yes


def _run_label(config: RunConfig) -> str:
    """A queued run in words: "ResNet50, Paper Table 1"."""
    architecture = ARCHITECTURES.get(config.model.architecture)
    label = architecture.label if architecture is not None else config.model.architecture
    return f"{label}, {config.preset or 'no preset'}"


def _backend_info(state: TaskState) -> dict:
    """Keras' version, backend and device; imports Keras, so on a lane."""
    from engine.system import backend_info, start_compute_threads_nicer

    info = dict(backend_info())
    start_compute_threads_nicer()
    return info
