"""Training from the window: a whole run, a stopped run, and closing the
window while a run trains. Real Keras, SimCNN, a tiny image folder."""

from __future__ import annotations

import threading

import numpy as np
from PySide6.QtCore import Qt

from engine.config import RunConfig
from engine.runs import RunStore
from gui_helpers import RUN_TIMEOUT_MS, use_tiny_run


def test_train_runs_to_the_end_and_the_curves_are_the_history(window, image_folder, qtbot):
    use_tiny_run(window, image_folder, epochs=2)
    tab = window.train_tab
    with qtbot.waitSignal(window.training.run_ended, timeout=RUN_TIMEOUT_MS) as ended:
        qtbot.mouseClick(tab.train_button, Qt.LeftButton)
        assert window.training.is_training
        assert tab.stop_button.isEnabled() and not tab.train_button.isEnabled()
    result = ended.args[0]
    assert result.status == "finished", result.reason

    store = RunStore()
    assert result.run_id in [record.run_id for record in store.list_runs()]
    assert store.get(result.run_id).status == "finished"
    history = store.history(result.run_id)
    for plot in (tab.loss_plot, tab.accuracy_plot):
        epochs, train = plot.train_curve.getData()
        _, validation = plot.validation_curve.getData()
        assert list(epochs) == [1, 2]
        np.testing.assert_allclose(train, history[plot.metric], rtol=1e-5)
        np.testing.assert_allclose(validation, history["val_" + plot.metric], rtol=1e-5)
        batch_x, _ = plot.batch_curve.getData()
        assert len(batch_x) >= 2 and batch_x[-1] <= 2
        assert plot.best_line.isVisible()
        best_x, _ = plot.best_marker.getData()
        assert list(best_x) == [store.get(result.run_id).best_epoch]
    assert f"{result.test_metrics['accuracy']:.2%}" in tab.summary.text()
    assert "Test accuracy" in tab.summary.text()
    assert tab.train_button.isEnabled() and not tab.stop_button.isEnabled()
    assert not window.training.is_training

    # the run loaded the data itself (no Load first): the Dataset panel shows it and the next run reuses it
    panel = window.dataset_panel
    assert panel.status.text() != "Not loaded yet." and panel.dataset is not None
    assert f"{len(panel.dataset.y_train):,} train" in panel.sizes.text()
    config = RunConfig()
    panel.write_into(config)
    assert panel.dataset_for(config.dataset) is panel.dataset


def legend_names(plot) -> list[str]:
    return [label.text for _, label in plot.legend.items]


def test_stop_ends_the_run_within_a_batch_and_saves_it_as_stopped(window, image_folder, qtbot):
    use_tiny_run(window, image_folder, epochs=200, batch_size=2)
    window.hyperparameter_panel.validation_steps.setText("1")
    with qtbot.waitSignal(window.training.progress, timeout=RUN_TIMEOUT_MS):
        window.train()
    assert "validation (partial estimate)" in legend_names(window.train_tab.accuracy_plot)
    with qtbot.waitSignal(window.training.run_ended, timeout=RUN_TIMEOUT_MS) as ended:
        qtbot.mouseClick(window.train_tab.stop_button, Qt.LeftButton)
    result = ended.args[0]
    assert result.status == "stopped"
    assert result.epochs_done < 200
    record = RunStore().get(result.run_id)
    assert record.status == "stopped"
    assert "Stopped after" in window.train_tab.summary.text()
    # A stopped run is evaluated like a finished one, from its weights at the stop.
    assert RunStore().metrics(result.run_id)["images"] == 24
    assert f"{result.test_metrics['accuracy']:.2%}" in window.train_tab.summary.text()


def test_closing_the_window_during_a_run_stops_it_and_leaves_no_thread(make_window, image_folder, qtbot):
    baseline = threading.active_count()
    window = make_window()
    use_tiny_run(window, image_folder, epochs=200, batch_size=2)
    with qtbot.waitSignal(window.training.progress, timeout=RUN_TIMEOUT_MS):
        window.train()

    window.confirm_stop_on_close = False
    window.close()
    assert window.isVisible() and window.training.is_training

    window.confirm_stop_on_close = True
    with qtbot.waitSignal(window.training.run_ended, timeout=RUN_TIMEOUT_MS) as ended:
        window.close()
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=RUN_TIMEOUT_MS)
    assert window.runner.threads() == []
    assert threading.active_count() == baseline
    record = RunStore().get(ended.args[0].run_id)
    assert record.status == "stopped"
    assert "evaluation was cancelled" in record.reason  # closing never waits for the evaluation
    assert RunStore().metrics(record.run_id) == {}


def test_a_run_that_cannot_load_its_data_fails_in_plain_words(window, tmp_path, image_folder, qtbot):
    use_tiny_run(window, image_folder)
    window.dataset_panel.path.setText(str(tmp_path / "gone"))
    with qtbot.waitSignal(window.training.run_ended, timeout=RUN_TIMEOUT_MS) as ended:
        window.train()
    assert ended.args[0].status == "failed"
    assert "gone" in window.train_tab.summary.text()
    assert window.train_tab.summary.text().startswith("Failed:")
    assert window.train_tab.train_button.isEnabled()


def test_yes_closes_the_window_when_the_run_ended_while_the_question_was_open(make_window, image_folder, qtbot,
                                                                             monkeypatch):
    window = make_window()
    use_tiny_run(window, image_folder, epochs=200, batch_size=2)
    with qtbot.waitSignal(window.training.progress, timeout=RUN_TIMEOUT_MS):
        window.train()

    def answer_after_the_run_ended() -> bool:  # the user reads the question while the run ends by itself
        window.training.stop()
        qtbot.waitUntil(lambda: not window.training.is_training, timeout=RUN_TIMEOUT_MS)
        return True

    monkeypatch.setattr(window, "_confirm_stop", answer_after_the_run_ended)
    window.close()
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=RUN_TIMEOUT_MS)


def test_the_first_window_fits_a_small_screen(make_window):
    window = make_window()  # no saved layout: the first start, on the offscreen platform's 800x800 screen
    window.show()
    screen = window.screen().availableGeometry()
    assert window.frameGeometry().height() <= screen.height() and window.frameGeometry().top() >= screen.top()
    for index in range(window.tabs.count()):  # every tab shown once, the Compare tab built
        window.tabs.setCurrentIndex(index)
    needed = window.minimumSizeHint()
    assert needed.width() <= 1366 and needed.height() <= 768 - 60, needed  # a laptop, less a taskbar and title


def test_a_stage_with_progress_shows_its_eta_on_the_bar(window, monkeypatch):
    from engine.events import StageEvent

    tab = window.train_tab
    clock = iter([100.0, 110.0])
    monkeypatch.setattr("gui.tabs.train.time.monotonic", lambda: next(clock))
    window.training.stage.emit(StageEvent("features", "Computing the frozen base's features once: 2500 images", 0.0))
    window.training.stage.emit(StageEvent("features", "Computing the frozen base's features once: 2500 images", 0.5))
    assert tab.progress.format() == "Computing the frozen base's features once: 2500 images · ETA 0:10"
    assert tab.progress.value() == 500
