"""The Results tab after a real tiny training: the matrix is the engine's,
its cells and the filters select exactly their images, one image gets its
top-5 and a Grad-CAM heatmap, and the tables export."""

from __future__ import annotations

import csv

import numpy as np
from PySide6.QtCore import Qt

from engine.runs import RunStore
from gui.tabs.results import EXPORTS
from gui_helpers import RUN_TIMEOUT_MS, use_tiny_run


def trained_window(window, image_folder, qtbot):
    use_tiny_run(window, image_folder, epochs=2)
    with qtbot.waitSignal(window.training.run_ended, timeout=RUN_TIMEOUT_MS) as ended:
        window.train()
    assert ended.args[0].status == "finished", ended.args[0].reason
    tab = window.results_tab
    qtbot.waitUntil(lambda: tab.results is not None and tab.results.record.run_id == ended.args[0].run_id,
                    timeout=RUN_TIMEOUT_MS)
    return tab, ended.args[0].run_id


def test_the_run_just_trained_opens_with_the_engines_matrix_and_its_images(window, image_folder, qtbot, tmp_path):
    tab, run_id = trained_window(window, image_folder, qtbot)
    results = tab.results
    saved = RunStore().predictions(run_id)
    np.testing.assert_array_equal(tab.confusion.counts, saved["confusion"])
    assert tab.confusion.counts.sum() == 24  # the tiny folder's test split
    assert results.images is not None and len(results.images) == 24 and results.images_note == ""
    assert "Test accuracy" in tab.summary.text()
    assert tab.run_list.currentData() == run_id

    # A cell shows exactly its images: true 0 predicted as 0, and a whole true class.
    qtbot.mouseClick(tab.confusion.graphics.viewport(), Qt.LeftButton, pos=tab.confusion.cell_point(0, 0))
    expected = np.flatnonzero((results.y_true == 0) & (results.y_pred == 0))
    assert sorted(tab.gallery.current_rows()) == sorted(expected)
    qtbot.mouseClick(tab.confusion.graphics.viewport(), Qt.LeftButton, pos=tab.confusion.label_point("true", 1))
    assert sorted(tab.gallery.current_rows()) == sorted(np.flatnonzero(results.y_true == 1))

    rows = tab.show_selection("misclassified")
    assert sorted(rows) == sorted(np.flatnonzero(results.y_true != results.y_pred))
    assert tab.filter.currentText() == "Misclassified"
    tab.filter.setCurrentIndex(tab.filter.findText("Predicted as: top_right"))
    tab.filter.activated.emit(tab.filter.currentIndex())
    top_right = results.class_names.index("top_right")
    assert sorted(tab.gallery.current_rows()) == sorted(np.flatnonzero(results.y_pred == top_right))
    rows = tab.show_selection("all")
    assert sorted(rows) == list(range(24))

    # One image: its top-5 as bars and a Grad-CAM heatmap, computed off the GUI thread.
    tab.gallery.image_selected.emit(3)
    names = [name for name, _ in tab.bars.texts()]
    assert names[0] == results.class_names[int(results.y_pred[3])]
    qtbot.waitUntil(lambda: tab.heatmap.pixmap() is not None and not tab.heatmap.pixmap().isNull(),
                    timeout=RUN_TIMEOUT_MS)

    selection = tmp_path / "selection.csv"
    tab.show_selection("all")
    tab.gallery.export_csv(selection)
    with selection.open() as handle:
        listed = list(csv.DictReader(handle))
    assert len(listed) == 24 and len({row["file"] for row in listed}) == 24
    for row in listed:  # each image's own file, in the class folder of its true class
        assert row["file"].endswith(".png") and f"/test/{row['true class']}/" in row["file"]

    path = tmp_path / "per class.csv"
    tab.export("per_class_csv", path)
    for what in ("confusion_csv", "confusion_png", "curves_png"):
        target = tmp_path / f"{what}{EXPORTS[what][1]}"
        tab.export(what, target)
        assert target.stat().st_size > 0
    for bad, said in ((tmp_path, "is a folder"), (tmp_path / "no such" / "m.csv", "does not exist")):
        tab.export("confusion_csv", bad)  # checked before anything is written
        assert said in window.statusBar().currentMessage() and tab.summary.property("error") is True
    with path.open() as handle:
        table = list(csv.DictReader(handle))
    assert [row["class"] for row in table[:4]] == results.class_names
    assert [row["class"] for row in table[4:]] == ["macro avg", "weighted avg"]


def test_a_run_without_metrics_is_evaluated_on_demand(window, image_folder, qtbot):
    tab, run_id = trained_window(window, image_folder, qtbot)
    store = RunStore()
    folder = store.run_dir(run_id)
    for name in ("metrics.json", "predictions.npz"):
        (folder / name).unlink()
    tab.open_run(run_id)
    qtbot.waitUntil(lambda: tab.results is not None and tab.results.needs_evaluation, timeout=RUN_TIMEOUT_MS)
    assert not tab.evaluate_button.isHidden()
    qtbot.mouseClick(tab.evaluate_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: not tab.results.needs_evaluation, timeout=RUN_TIMEOUT_MS)
    assert tab.confusion.counts.sum() == 24
    assert (folder / "predictions.npz").exists()


def test_a_dataset_that_changed_is_said_instead_of_showing_wrong_pictures(window, image_folder, qtbot, tmp_path):
    tab, run_id = trained_window(window, image_folder, qtbot)
    store = RunStore()
    config = store.config(run_id)
    moved = tmp_path / "elsewhere"
    config.dataset.path = str(moved)
    (store.run_dir(run_id) / "config.json").write_text(config.to_json())
    tab.open_run(run_id)
    qtbot.waitUntil(lambda: tab.results is not None and tab.results.images is None, timeout=RUN_TIMEOUT_MS)
    assert "elsewhere" in tab.results.images_note
    assert "elsewhere" in tab.summary.text()
    assert tab.confusion.counts.sum() == 24  # the predictions still show, without pictures
    assert not tab.gallery.notice.isHidden()
