"""The Compare tab on two tiny real runs: the table after a restart, the
overlaid curves, the settings diff, two runs head to head checked against a
count by hand on their stored predictions, editing the store, a run added
from outside, Train again, the CSV export and a queue of two runs."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt

from engine.comparison import TABLE_COLUMNS
from engine.config import RunConfig
from engine.groups import GROUPS
from engine.runs import RunStore
from gui.tabs.compare import DIFFERS_COLOR
from gui.widgets.runs_table import RUN_ID_ROLE
from gui_helpers import RUN_TIMEOUT_MS, use_tiny_run

NAMES = {"a": "alpha run", "b": "beta run"}


def tiny_config(folder: Path, name: str, batch_size: int, epochs: int) -> RunConfig:
    """SimCNN on the tiny folder dataset, as use_tiny_run sets the panels."""
    config = RunConfig(name=name)
    config.dataset.source, config.dataset.path, config.dataset.validation_split = "folder", str(folder), 0.25
    config.model.architecture = "simcnn"
    t = config.training
    t.optimizer, t.learning_rate, t.schedule = "adam", 0.003, "constant"
    t.batch_size, t.epochs, t.steps_per_epoch, t.validation_steps = batch_size, epochs, 0, 0
    return config


@pytest.fixture(scope="module")
def trained_store(tmp_path_factory, image_folder):
    """A store with two finished runs, A (batch 8, 2 epochs) and B (batch 16, 1 epoch), trained once."""
    from engine.training import Trainer

    root = tmp_path_factory.mktemp("compare") / "store"
    cache = os.environ.get("CIFAR_STUDIO_CACHE_DIR")
    os.environ["CIFAR_STUDIO_CACHE_DIR"] = str(root.parent / "cache")
    try:
        store = RunStore(root)
        ids = {}
        for key, batch_size, epochs in (("a", 8, 2), ("b", 16, 1)):
            ended = Trainer(tiny_config(image_folder, NAMES[key], batch_size, epochs), store=store).run()
            assert ended.status == "finished", ended.reason
            ids[key] = ended.run_id
    finally:
        if cache is None:
            os.environ.pop("CIFAR_STUDIO_CACHE_DIR", None)
        else:
            os.environ["CIFAR_STUDIO_CACHE_DIR"] = cache
    return root, ids


@pytest.fixture
def runs(trained_store) -> dict[str, str]:
    """The two runs, copied into this test's own store (CIFAR_STUDIO_HOME): {"a": id, "b": id}."""
    root, ids = trained_store
    shutil.copytree(root, os.environ["CIFAR_STUDIO_HOME"], ignore=shutil.ignore_patterns("*-shm"))
    return ids


def compare_tab(window, qtbot, count: int = 2):
    tab = window.compare_tab
    window.tabs.setCurrentWidget(tab)
    qtbot.waitUntil(lambda: len(tab.runs_table.rows()) == count, timeout=10_000)
    return tab


def select(tab, qtbot, run_ids: list[str]) -> None:
    tab.select(run_ids)
    qtbot.waitUntil(lambda: [run["run_id"] for run in tab.selection] == run_ids, timeout=10_000)


def settled_point(qtbot, view, cell):
    """Where a cell of a matrix just shown is, once its layout has settled (three equal readings)."""
    points = []

    def settled() -> bool:
        points.append(view.cell_point(*cell))
        return len(points) >= 3 and points[-1] == points[-2] == points[-3] and points[-1].x() > 0

    qtbot.waitUntil(settled, timeout=5000)
    return points[-1]


def test_the_table_lists_both_runs_in_a_new_window_sorts_by_value_and_filters(runs, make_window, qtbot):
    window = make_window()
    tab = compare_tab(window, qtbot)
    table = tab.runs_table
    store = RunStore()
    by_id = {row.run_id: row for row in table.rows()}
    assert set(by_id) == set(runs.values())
    assert {row.name for row in by_id.values()} == set(NAMES.values())
    fields = table.model.fields
    for source in range(2):
        row = table.model.rows[source]
        record = store.get(row.run_id)
        cell = lambda field: table.model.index(source, fields.index(field)).data()  # noqa: E731
        assert cell("status") == "finished"
        assert cell("test_accuracy") == f"{record.test_accuracy:.2%}"
        assert cell("params_total") == f"{record.params_total:,}"
        assert cell("epochs_done") == f"{record.epochs_done} of {record.epochs}"

    # Sorting goes by the raw number: A trained 2 epochs, B 1.
    table.view.sortByColumn(fields.index("epochs_done"), Qt.AscendingOrder)
    assert table.visible_ids() == [runs["b"], runs["a"]]
    table.view.sortByColumn(fields.index("epochs_done"), Qt.DescendingOrder)
    assert table.visible_ids() == [runs["a"], runs["b"]]
    table.filter.setText("BETA")
    assert table.visible_ids() == [runs["b"]]
    table.filter.setText("")

    # Another window (a restart) reads the same store.
    window.close()
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=RUN_TIMEOUT_MS)
    again = compare_tab(make_window(), qtbot)
    assert {row.run_id for row in again.runs_table.rows()} == set(runs.values())


def test_two_runs_side_by_side_and_head_to_head(runs, window, qtbot):
    tab = compare_tab(window, qtbot)
    store = RunStore()
    select(tab, qtbot, [runs["a"], runs["b"]])
    assert tab.selected_ids() == [runs["a"], runs["b"]]

    # Curves: two sets, their data the runs' histories.
    for key in ("a", "b"):
        history = store.history(runs[key])
        epochs = np.arange(1, len(history["loss"]) + 1)
        for plot, metric in ((tab.loss_plot, "loss"), (tab.accuracy_plot, "accuracy")):
            for column in (metric, "val_" + metric):
                x, y = plot.curve_data()[(NAMES[key], column)]
                np.testing.assert_array_equal(x, epochs)
                np.testing.assert_allclose(y, history[column])
    assert {label for label, _ in tab.loss_plot.curve_data()} == set(NAMES.values())
    # The controls: wall time on x, smoothing, a log axis.
    from engine.comparison import smooth

    history = store.history(runs["a"])
    tab.x_axis.setCurrentIndex(tab.x_axis.findData("time"))
    tab.smoothing.setValue(50)
    tab.log_y.setChecked(True)
    x, y = tab.loss_plot.curve_data()[(NAMES["a"], "loss")]
    np.testing.assert_allclose(x, history["elapsed"])
    np.testing.assert_allclose(y, smooth(np.asarray(history["loss"]), 0.5))
    assert tab.accuracy_plot.shown_x_axis() == "time" and tab.loss_plot.getPlotItem().ctrl.logYCheck.isChecked()
    tab.x_axis.setCurrentIndex(tab.x_axis.findData("epoch"))
    tab.smoothing.setValue(0)
    tab.log_y.setChecked(False)

    # Settings: only batch size, epochs and the name differ; "Only differences" hides the rest.
    flagged = set(tab.flagged_settings())
    assert {"training.batch_size", "training.epochs"} <= flagged
    assert flagged <= {"training.batch_size", "training.epochs", "name"}
    assert "training.optimizer" not in flagged and "model.architecture" not in flagged
    table = tab.settings_table
    for r, row in enumerate(tab.setting_rows):
        item = table.item(r, 0)
        assert (item.background().color().name() == DIFFERS_COLOR) == row.differs
        assert item.font().bold() == row.differs
    batch = [row.key for row in tab.setting_rows].index("training.batch_size")
    assert [table.item(batch, c).text() for c in range(2)] == ["8", "16"]
    assert len(tab.shown_settings()) == len(tab.setting_rows)
    tab.only_differences.setChecked(True)
    assert set(tab.shown_settings()) == flagged
    tab.only_differences.setChecked(False)
    assert len(tab.shown_settings()) == len(tab.setting_rows)

    # Head to head: A is the first selected; the numbers against a count by hand on predictions.npz.
    tab.pages.setCurrentIndex(2)
    qtbot.waitUntil(lambda: tab.head is not None, timeout=RUN_TIMEOUT_MS)
    assert tab.combo_a.currentData() == runs["a"] and tab.combo_b.currentData() == runs["b"]
    saved_a, saved_b = store.predictions(runs["a"]), store.predictions(runs["b"])
    y, pred_a, pred_b = saved_a["y_true"], saved_a["y_pred"], saved_b["y_pred"]
    np.testing.assert_array_equal(y, saved_b["y_true"])
    shares = [c / c.sum(axis=1, keepdims=True) for c in (saved_a["confusion"], saved_b["confusion"])]
    np.testing.assert_allclose(tab.difference.values(), shares[1] - shares[0])
    only_a = np.flatnonzero((pred_a == y) & (pred_b != y))
    only_b = np.flatnonzero((pred_b == y) & (pred_a != y))
    both_right, both_wrong = int(((pred_a == y) & (pred_b == y)).sum()), int(((pred_a != y) & (pred_b != y)).sum())
    assert tab.counts_label.text() == (f"Only A right: {len(only_a)} · only B right: {len(only_b)} · "
                                       f"both right: {both_right} · both wrong: {both_wrong}")
    assert "McNemar" in tab.mcnemar_label.text()
    assert tab.a.images is not None and len(tab.a.images) == 24
    assert sorted(tab.show_group("only_a")) == sorted(only_a)
    assert sorted(tab.gallery.current_rows()) == sorted(only_a)
    np.testing.assert_array_equal(tab.gallery.model.y_pred, pred_b)  # captions: the run that got them wrong
    assert sorted(tab.show_group("only_b")) == sorted(only_b)
    np.testing.assert_array_equal(tab.gallery.model.y_pred, pred_a)

    # A click on a cell of the difference shows the images that moved into it, then out of it.
    from engine.comparison import moved_rows

    cells = [(t, p) for t in range(4) for p in range(4)]
    moved = {cell: (np.flatnonzero((y == cell[0]) & (pred_b == cell[1]) & (pred_a != cell[1])),
                    np.flatnonzero((y == cell[0]) & (pred_a == cell[1]) & (pred_b != cell[1]))) for cell in cells}
    cell = max(cells, key=lambda c: len(moved[c][0]) + len(moved[c][1]))
    into, out_of = moved[cell]
    qtbot.mouseClick(tab.difference.graphics.viewport(), Qt.LeftButton, pos=settled_point(qtbot, tab.difference, cell))
    assert tab.moved is not None and tab.moved[:2] == cell
    engine_into, engine_out = moved_rows(tab.head, tab.a, tab.b, *cell)
    assert sorted(tab.gallery.current_rows()) == sorted(into) == sorted(engine_into)
    tab.group_buttons["out_of"].click()
    assert sorted(tab.gallery.current_rows()) == sorted(out_of) == sorted(engine_out)


def test_rename_and_delete_change_the_store(runs, window, qtbot):
    tab = compare_tab(window, qtbot)
    table = tab.runs_table
    table.rename(runs["a"], "renamed run")
    qtbot.waitUntil(lambda: table.row(runs["a"]).name == "renamed run", timeout=10_000)
    assert RunStore().get(runs["a"]).name == "renamed run"
    # F2 edits the name in place; the model hands it to the store.
    source = table.model.row_of(runs["b"])
    assert table.model.setData(table.model.index(source, table.model.fields.index("name")), "edited") is False
    qtbot.waitUntil(lambda: table.row(runs["b"]).name == "edited", timeout=10_000)

    tab.confirm_delete = False
    assert tab.runs_table.delete([runs["b"]]) is False
    tab.confirm_delete = True
    folder = RunStore().run_dir(runs["b"])
    with qtbot.waitSignal(tab.message, timeout=10_000, check_params_cb=lambda text: "Deleted" in text):
        assert tab.runs_table.delete([runs["b"]])
    qtbot.waitUntil(lambda: [row.run_id for row in table.rows()] == [runs["a"]], timeout=10_000)
    assert [record.run_id for record in RunStore().list_runs()] == [runs["a"]]
    assert not folder.exists()

    # A run still training (this process's pid) is refused, with the store's reason.
    running = RunStore().create_run(RunConfig(name="busy"))
    qtbot.waitUntil(lambda: len(table.rows()) == 2, timeout=10_000)
    with qtbot.waitSignal(tab.message, timeout=10_000, check_params_cb=lambda text: "Not deleted" in text) as said:
        tab.runs_table.delete([running.run_id])
    assert "still training" in said.args[0]
    assert RunStore().get(running.run_id).status == "running"


def test_a_run_added_elsewhere_appears_after_the_poll_and_the_selection_stays(runs, window, qtbot):
    tab = compare_tab(window, qtbot)
    select(tab, qtbot, [runs["b"]])
    store = RunStore()  # another writer of the same store, as the CLI is
    added = store.create_run(RunConfig(name="from the command line"), status="finished")
    qtbot.waitUntil(lambda: len(tab.runs_table.rows()) == 3, timeout=3 * 2000 + 2000)
    assert tab.runs_table.row(added.run_id).name == "from the command line"
    assert tab.selected_ids() == [runs["b"]]
    selected = [index.data(RUN_ID_ROLE) for index in tab.runs_table.view.selectionModel().selectedRows()]
    assert selected == [runs["b"]]


def test_train_again_fills_the_panels_with_the_runs_settings(runs, window, qtbot):
    tab = compare_tab(window, qtbot)
    select(tab, qtbot, [runs["b"]])
    tab.train_again_button.click()
    config, problems = window.run_config()
    saved = RunStore().config(runs["b"])
    assert problems == {}
    assert (config.training.batch_size, config.training.epochs) == (16, 1)
    assert config.dataset == saved.dataset and config.model == saved.model and config.training == saved.training
    assert window.tabs.currentWidget() is window.train_tab
    assert f"Settings of run {NAMES['b']}" in window.train_tab.log.toPlainText()

    # Resume is for stopped and interrupted runs; a finished one is refused by the session, visibly, unchanged.
    assert not tab.resume_button.isEnabled()
    with qtbot.waitSignal(window.training.run_ended, timeout=RUN_TIMEOUT_MS) as ended:
        assert window.resume(runs["b"])
    assert ended.args[0].status == "failed" and ended.args[0].reason
    assert RunStore().get(runs["b"]).status == "finished"


def test_the_csv_export_parses_back_and_matches_the_table(runs, window, qtbot, tmp_path):
    tab = compare_tab(window, qtbot)
    path = tmp_path / "runs.csv"
    assert tab.export_csv(path)
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == [header for _, header in TABLE_COLUMNS]
        listed = list(reader)
    shown = {row.run_id: row for row in tab.runs_table.rows()}
    assert sorted(line["Run id"] for line in listed) == sorted(shown)
    for line in listed:
        row = shown[line["Run id"]]
        assert line["Name"] == row.name and line["Status"] == row.status
        assert float(line["Test accuracy"]) == pytest.approx(row.test_accuracy)
        assert int(line["Parameters"]) == row.params_total
    select(tab, qtbot, [runs["a"]])
    assert tab.export_csv(path)
    with path.open(newline="") as handle:
        assert [line["Run id"] for line in csv.DictReader(handle)] == [runs["a"]]

    # The report of the selected runs, by the file's suffix; a wrong suffix is refused before any work.
    assert tab.export_report(tmp_path / "report.txt") is False
    select(tab, qtbot, [runs["a"], runs["b"]])
    report = tmp_path / "report.html"
    with qtbot.waitSignal(tab.message, timeout=RUN_TIMEOUT_MS,
                          check_params_cb=lambda text: text.startswith(("Saved the report", "Could not", "Cannot"))):
        assert tab.export_report(report)
    text = report.read_text()
    assert NAMES["a"] in text and NAMES["b"] in text and "data:image/png;base64," in text


def test_a_queued_group_trains_its_runs_in_order(window, image_folder, qtbot):
    assert list(window.queue_actions) == list(GROUPS)  # the Run menu's Queue submenu, from engine.groups
    use_tiny_run(window, image_folder)
    if GROUPS:  # a group's settings are built and listed, and nothing trains until confirmed
        window.confirm_queue = False
        assert window.queue_group(next(iter(GROUPS)), ["dataset.train_subset=8"]) is False
        assert not window.training.is_training and window.queue is None
    base, problems = window.run_config()
    assert problems == {}
    configs = []
    for name in ("queued one", "queued two"):
        config = base.copy()
        config.name = name
        configs.append(config)
    ended = []
    window.training.run_ended.connect(lambda event: ended.append(event))
    assert window.start_queue("Tiny", configs)
    qtbot.waitUntil(lambda: window.queue is None and not window.training.is_training and len(ended) == 2,
                    timeout=RUN_TIMEOUT_MS)
    assert [event.status for event in ended] == ["finished", "finished"]
    records = sorted(RunStore().list_runs(), key=lambda record: record.created)
    assert [record.name for record in records] == ["queued one", "queued two"]
    assert [record.run_id for record in records] == [event.run_id for event in ended]
    log = window.train_tab.log.toPlainText()
    assert "Queue 'Tiny': run 1 of 2 (SimCNN" in log and "Queue 'Tiny': run 2 of 2 (SimCNN" in log
    assert log.index("run 1 of 2") < log.index("run 2 of 2")
    qtbot.waitUntil(lambda: len(window.compare_tab.runs_table.rows()) == 2, timeout=10_000)

    # Stop cancels the runs not started yet.
    assert window.start_queue("Tiny", configs)
    window.stop()
    qtbot.waitUntil(lambda: not window.training.is_training and len(ended) == 3, timeout=RUN_TIMEOUT_MS)
    assert window.queue is None
    assert "Queue cancelled: 1 runs not started." in window.train_tab.log.toPlainText()
    assert [record.name for record in RunStore().list_runs()].count("queued two") == 1  # not trained again
