"""The settings panels: presets, validation, loading a dataset, parameter
counts, and settings that survive a new window."""

from __future__ import annotations

import threading

import numpy as np
from PIL import Image
from PySide6.QtCore import QByteArray, QSettings

from engine.config import preset
from gui.panels.hyperparameters import CUSTOM
from gui.settings import Settings
from gui_helpers import CLASS_NAMES, quadrant_image, use_tiny_run

LOAD_TIMEOUT_MS = 60_000


def choose_preset(window, name: str) -> None:
    panel = window.hyperparameter_panel
    index = panel.preset_list.findText(name)
    panel.preset_list.setCurrentIndex(index)
    panel.preset_list.activated.emit(index)


def test_choosing_a_preset_fills_the_fields(window):
    panel = window.hyperparameter_panel
    choose_preset(window, "Paper Table 1")
    assert panel.optimizer.value() == "sgd"
    assert panel.learning_rate.text() == "0.01"
    assert panel.batch_size.text() == "32"
    assert panel.epochs.text() == "25"
    assert panel.steps_per_epoch.text() == "550"
    assert panel.validation_steps.text() == "1"
    config, _ = window.run_config()
    assert config.training == preset("Paper Table 1").training
    assert config.preset == "Paper Table 1"

    choose_preset(window, "SimCNN best")
    assert panel.optimizer.value() == "adamw"
    assert panel.schedule.value() == "cosine"
    assert panel.augmentation.value() == "flip_crop"
    assert panel.steps_per_epoch.text() == "auto"
    assert window.run_config()[0].training == preset("SimCNN best").training

    panel.epochs.setText("3")
    assert panel.preset_list.currentText() == CUSTOM
    assert window.run_config()[0].preset == ""


def test_the_panels_fit_the_first_start_dock_without_a_sideways_scrollbar(window):
    """The docks start 480 px wide; a long choice label (the cutout augmentation's) must not widen a panel."""
    from gui.main_window import FIRST_DOCK_WIDTH

    room = FIRST_DOCK_WIDTH - window.style().pixelMetric(window.style().PixelMetric.PM_ScrollBarExtent) - 12
    for panel in (window.dataset_panel, window.model_panel, window.hyperparameter_panel):
        assert panel.minimumSizeHint().width() <= room, (type(panel).__name__, panel.minimumSizeHint())
    augmentation = window.hyperparameter_panel.augmentation
    longest = max(augmentation.fontMetrics().horizontalAdvance(augmentation.itemText(i))
                  for i in range(augmentation.count()))
    assert augmentation.view().minimumWidth() >= longest  # the open list shows every label whole


def test_the_wheel_scrolls_past_a_choice_and_changes_it_only_once_it_has_the_focus(window, qtbot):
    from PySide6.QtCore import QPoint, QPointF, Qt
    from PySide6.QtGui import QWheelEvent
    from PySide6.QtWidgets import QApplication

    window.show()
    field = window.hyperparameter_panel.optimizer
    before = field.currentIndex()

    def wheel_down():
        centre = QPointF(field.rect().center())
        event = QWheelEvent(centre, QPointF(field.mapToGlobal(centre.toPoint())), QPoint(0, 0), QPoint(0, -120),
                            Qt.NoButton, Qt.NoModifier, Qt.NoScrollPhase, False)
        QApplication.sendEvent(field, event)

    window.hyperparameter_panel.preset_list.setFocus()
    wheel_down()
    assert field.currentIndex() == before
    field.setFocus()
    qtbot.waitUntil(field.hasFocus)
    wheel_down()
    assert field.currentIndex() == before + 1


def test_a_preset_keeps_the_architecture_the_user_chose(window):
    """As the first seed applied Table 1 to SimCNN and to ResNet50 alike."""
    model = window.model_panel
    for architecture in ("simcnn", "resnet50"):
        model.architecture.set_value(architecture)
        choose_preset(window, "Paper Table 1")
        config, _ = window.run_config()
        assert config.model.architecture == architecture
        assert config.preset == "Paper Table 1"
        assert config.training == preset("Paper Table 1", architecture).training

    choose_preset(window, "ResNet50-02")
    assert model.architecture.value() == "resnet50"
    assert model.trainable_layers.text() == "all"
    assert window.hyperparameter_panel.batch_size.text() == "64"
    assert "ResNet50" in window.train_tab.log.toPlainText()
    model.trainable_layers.setText("frozen")
    assert window.hyperparameter_panel.preset_list.currentText() == CUSTOM


def test_an_invalid_field_disables_train_and_says_why(window, image_folder):
    use_tiny_run(window, image_folder)
    panel = window.hyperparameter_panel
    assert window.train_tab.train_button.isEnabled()

    panel.batch_size.setText("0")
    assert not window.train_tab.train_button.isEnabled()
    assert not window.train_action.isEnabled()
    assert "training.batch_size" in window.train_blocked_reason()
    assert panel.batch_size.property("invalid") is True
    assert "between 1 and 8192" in panel.batch_size.toolTip()
    assert window.train() is False

    panel.batch_size.setText("8")
    assert window.train_tab.train_button.isEnabled()
    assert panel.batch_size.property("invalid") is False
    assert window.train_blocked_reason() == ""

    panel.learning_rate.setText("fast")
    assert not window.train_tab.train_button.isEnabled()
    assert "learning_rate" in window.train_blocked_reason()
    panel.learning_rate.setText("1e-3")
    assert window.train_tab.train_button.isEnabled()

    window.dataset_panel.path.setText("")
    assert "dataset.path" in window.train_blocked_reason()
    assert window.dataset_panel.path.property("invalid") is True


def test_loading_shows_the_data_and_checks_steps_against_it(window, image_folder, qtbot):
    use_tiny_run(window, image_folder)
    panel = window.dataset_panel
    assert not panel.data_view.isVisible()
    with qtbot.waitSignal(panel.loaded, timeout=LOAD_TIMEOUT_MS):
        panel.load_button.click()
    assert panel.data_view.isVisible()
    text = panel.sizes.text()
    assert all(part in text for part in ("72 train", "24 validation", "24 test", "4 classes of 32x32x3"))
    counts = {split: bars.opts["width"] for split, bars in panel.class_bars.items()}
    assert list(counts["train"]) == [18] * 4 and list(counts["test"]) == [6] * 4
    captions = [label.text() for label in panel.sample_captions if label.text()]
    assert len(captions) == 16 and all(text.rstrip("…") for text in captions)
    assert {label.toolTip() for label in panel.sample_images} <= set(CLASS_NAMES)
    before = [label.pixmap().cacheKey() for label in panel.sample_images]
    panel.shuffle_button.click()
    assert [label.pixmap().cacheKey() for label in panel.sample_images] != before

    # 72 training images at batch 8 give 9 steps: 10 would overrun the data.
    window.hyperparameter_panel.steps_per_epoch.setText("10")
    assert "more than the data gives" in window.train_blocked_reason()
    window.hyperparameter_panel.steps_per_epoch.setText("9")
    assert window.train_blocked_reason() == ""


def test_a_missing_folder_is_explained_in_the_panel(window, tmp_path, qtbot):
    panel = window.dataset_panel
    panel.source.set_value("folder")
    panel.path.setText(str(tmp_path / "no such folder"))
    with qtbot.waitSignal(window.dataset_panel.failed, timeout=LOAD_TIMEOUT_MS) as failed:
        panel.load_button.click()
    assert "no such folder" in failed.args[0]
    assert panel.status.text() == failed.args[0]
    assert panel.status.property("error") is True
    assert panel.load_button.isEnabled()


SEED_COUNTS = {  # architecture: total parameters with the default head, at 32x32 with 10 classes
    "simcnn": 123_210,
    "resnet50": 26_215_818,
    "vgg16": 14_719_818,
    "mobilenetv2": 2_270_794,
    "cnn": 356_810,
}


def test_every_architecture_shows_its_parameter_count(make_window, qtbot):
    """Choosing ResNet50 or VGG16 once killed the window (a Keras job on a
    Qt-started thread); ImageNet weights are never loaded to count."""
    window = make_window()
    panel = window.model_panel
    for weights in ("none", "imagenet"):
        panel.weights.set_value(weights)
        for architecture, total in SEED_COUNTS.items():
            panel.architecture.set_value(architecture)
            qtbot.waitUntil(lambda: panel.params_label.text().startswith(f"{total:,} total"),
                            timeout=LOAD_TIMEOUT_MS)
    panel.architecture.set_value("resnet50")
    window.close()

    again = make_window()  # a returning user whose last model was ResNet50
    assert again.model_panel.architecture.value() == "resnet50"
    qtbot.waitUntil(lambda: again.model_panel.params_label.text().startswith("26,215,818 total"),
                    timeout=LOAD_TIMEOUT_MS)
    qtbot.waitUntil(lambda: bool(again.backend), timeout=LOAD_TIMEOUT_MS)


def test_parameter_counts_follow_the_options(window, qtbot):
    panel = window.model_panel
    panel.architecture.set_value("cnn")
    qtbot.waitUntil(lambda: panel.params_label.text().startswith("356,810 total"), timeout=LOAD_TIMEOUT_MS)
    panel.architecture.set_value("simcnn")
    qtbot.waitUntil(lambda: panel.params_label.text().startswith("123,210 total"), timeout=LOAD_TIMEOUT_MS)
    assert panel.counts == {"total": 123_210, "trainable": 122_890, "non_trainable": 320}
    assert "small CNN" in panel.description.text()


def test_settings_survive_a_new_window(make_window, image_folder, settings_path, qtbot):
    first = make_window()
    use_tiny_run(first, image_folder, epochs=7, batch_size=16)
    first.model_panel.architecture.set_value("cnn")
    first.hyperparameter_panel.learning_rate.setText("0.0005")
    first.tabs.setCurrentIndex(2)
    first.resize(760, 560)  # inside the offscreen platform's 800x600 screen
    size = first.size()
    config, _ = first.run_config()
    first.close()
    assert not first.isVisible()
    assert Settings(settings_path).run_config() == config

    second = make_window()
    assert second.run_config()[0] == config
    assert second.hyperparameter_panel.learning_rate.text() == "0.0005"
    assert second.dataset_panel.path.text() == str(image_folder)
    assert second.tabs.currentIndex() == 2
    assert second.size() == size
    assert isinstance(Settings(settings_path).window_state(), QByteArray)


def test_settings_of_another_version_are_ignored(settings_path):
    settings = Settings(settings_path)
    settings.set_run_config(preset("Paper Table 1"))
    settings.sync()
    raw = QSettings(str(settings_path), QSettings.IniFormat)
    raw.setValue("version", 999)
    raw.sync()
    assert Settings(settings_path).run_config() is None


def test_status_bar_and_about_show_keras_backend_and_device(window, qtbot):
    qtbot.waitUntil(lambda: bool(window.backend), timeout=LOAD_TIMEOUT_MS)
    info = window.backend
    assert info["backend"] in window.backend_label.text()
    assert info["device"] in window.backend_label.text()
    about = window.about_text()
    assert f"Keras {info['keras_version']}" in about and info["device"] in about


def test_menus_have_shortcuts_and_open_model_shows_classify(window, monkeypatch):
    for action in (window.open_dataset_action, window.open_model_action, window.quit_action,
                   window.train_action, window.stop_action, window.about_action):
        assert not action.shortcut().isEmpty(), action.text()
    asked = []
    monkeypatch.setattr("gui.tabs.classify.QFileDialog.getOpenFileName",
                        lambda *args, **kwargs: asked.append(args) or ("", ""))
    window.open_model_action.trigger()
    assert window.tabs.currentWidget() is window.classify_tab
    assert len(asked) == 1  # the file dialog, cancelled here
    assert window.tabs.tabText(2) == "Compare" and window.tabs.widget(2) is window.compare_tab


def test_parameter_counts_follow_the_datasets_classes(window, qtbot):
    window.model_panel.architecture.set_value("simcnn")
    window.dataset_panel.source.set_value("cifar100")
    # SimCNN's last layer: 64 inputs x 100 classes + 100 biases instead of 650.
    total = 123_210 - 650 + 6_500
    qtbot.waitUntil(lambda: window.model_panel.params_label.text().startswith(f"{total:,} total"),
                    timeout=LOAD_TIMEOUT_MS)


def test_an_odd_folder_loads_with_a_visible_warning(window, tmp_path, qtbot):
    rng = np.random.default_rng(0)
    for name, count in (("many", 30), ("few", 3)):  # no test/ folder, and a class of 3 images
        (tmp_path / "odd" / name).mkdir(parents=True)
        for index in range(count):
            Image.fromarray(quadrant_image(index % 4, rng)).save(tmp_path / "odd" / name / f"{index}.png")
    panel = window.dataset_panel
    panel.source.set_value("folder")
    panel.path.setText(str(tmp_path / "odd"))
    with qtbot.waitSignal(panel.loaded, timeout=LOAD_TIMEOUT_MS):
        panel.load_button.click()
    assert not panel.warning.isHidden()
    text = panel.warning.text()
    assert "fewer than 10 training images (few)" in text and "no test split" in text


def test_loading_can_be_cancelled(window, image_folder, qtbot):
    use_tiny_run(window, image_folder)
    panel = window.dataset_panel
    release = threading.Event()
    window.runner.start(lambda state: release.wait(30))  # holds the lane, so the load waits its turn
    panel.load_button.click()
    assert panel.load_button.text() == "Cancel"
    panel.load_button.click()
    release.set()
    qtbot.waitUntil(lambda: panel.load_button.text() == "Load", timeout=LOAD_TIMEOUT_MS)
    assert "cancelled" in panel.status.text() and panel.status.property("error") is not True
    assert panel.dataset is None and panel.data_view.isHidden()
