"""The confusion heatmap: its modes against scikit-learn's definitions, its scales, clicks and exports."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QPoint, QPointF, Qt

from gui.widgets.confusion import DIFFERENCE_MAP, MISTAKE_MAP, ConfusionMatrixView

NAMES = ["airplane", "automobile", "bird", "cat", "deer"]
COUNTS = np.array([
    [50, 2, 0, 1, 3],
    [4, 40, 1, 0, 0],
    [0, 0, 30, 9, 6],
    [1, 0, 7, 20, 143],
    [0, 1, 2, 5, 60],
])


@pytest.fixture
def view(qtbot):
    widget = ConfusionMatrixView()
    qtbot.addWidget(widget)
    widget.resize(760, 620)
    widget.set_matrix(COUNTS, NAMES)
    widget.show()
    qtbot.waitExposed(widget)
    qtbot.waitUntil(lambda: widget.plot.getViewBox().width() > 300)
    return widget


def cell_pixel(widget: ConfusionMatrixView, row: int, column: int, dx: float = 0.5, dy: float = 0.5) -> QPoint:
    """A point inside a cell, found from the image's own pixels (pixel (row, column) is that cell)."""
    scene = widget.correct_image.mapToScene(QPointF(column + dx, row + dy))
    return widget.graphics.mapFromScene(scene)


def click(qtbot, widget: ConfusionMatrixView, point: QPoint) -> None:
    qtbot.mouseClick(widget.graphics.viewport(), Qt.LeftButton, pos=point)


def test_counts_are_written_in_the_cells_with_the_class_names_on_both_axes(view):
    assert np.array_equal(view.values("counts"), COUNTS)
    assert view.mode() == "counts"
    for row in range(len(NAMES)):
        for column in range(len(NAMES)):
            assert view.text_shown(row, column) == str(COUNTS[row, column])
    assert [index for index, _ in view.tick_labels("true")] == list(range(len(NAMES)))
    assert [text for _, text in view.tick_labels("true")] == NAMES  # the rows' labels have room for whole names
    for index, text in view.tick_labels("predicted"):
        assert text == NAMES[index] or (text.endswith("…") and NAMES[index].startswith(text[:-1]))


def test_the_shares_are_scikit_learns_normalize_true_and_pred(view):
    recall = view.values("true")
    precision = view.values("pred")
    assert np.allclose(recall, COUNTS / COUNTS.sum(axis=1, keepdims=True))
    assert np.allclose(precision, COUNTS / COUNTS.sum(axis=0, keepdims=True))
    assert np.allclose(recall.sum(axis=1), 1)
    assert np.allclose(precision.sum(axis=0), 1)

    view.set_mode("true")
    assert view.mode_box.currentData() == "true"
    assert view.text_shown(3, 4) == f"{100 * 143 / 171:.0f}%"  # 83.6% of the true cats went to deer
    assert view.text_shown(3, 0) == f"{100 / 171:.1f}%"  # below 10%: one decimal
    assert view.text_shown(0, 2) == "0"
    assert view.correct_bar.levels()[1] == pytest.approx(100 * recall.diagonal().max())  # drawn in percent

    view.set_mode("pred")
    assert view.text_shown(3, 4) == f"{100 * 143 / 212:.0f}%"
    with pytest.raises(ValueError):
        view.set_mode("normalized")


def test_a_class_without_images_has_no_share_rather_than_zero(view, tmp_path):
    counts = COUNTS.copy()
    counts[1, :] = 0
    view.set_matrix(counts, NAMES)
    view.set_mode("true")
    assert np.isnan(view.values()[1]).all()
    assert view.text_shown(1, 1) == ""
    view.export_csv(tmp_path / "recall.csv")
    with open(tmp_path / "recall.csv", newline="") as file:
        rows = list(csv.reader(file))
    assert rows[2] == ["automobile"] + [""] * len(NAMES)


def test_the_mistakes_have_a_scale_of_their_own(view):
    """The diagonal and the off-diagonal cells are separate images on separate
    scales: the largest mistake (143) gets the mistake scale's darkest colour
    though the diagonal's largest (60) is smaller and others are far larger."""
    off_diagonal = np.where(np.eye(len(NAMES), dtype=bool), 0, COUNTS)
    assert view.mistake_bar.levels() == (0, off_diagonal.max())
    assert view.correct_bar.levels() == (0, COUNTS.diagonal().max())
    mistakes = view.mistake_image.image
    correct = view.correct_image.image
    assert np.isnan(mistakes.diagonal()).all() and np.array_equal(mistakes[0, 1:], COUNTS[0, 1:])
    assert np.array_equal(correct.diagonal(), COUNTS.diagonal()) and np.isnan(correct[0, 1:]).all()

    image = view.graphics.grab().toImage()
    darkest = MISTAKE_MAP.map(1.0, mode="qcolor")
    pixel = image.pixelColor(cell_pixel(view, 3, 4, dx=0.15, dy=0.15))  # away from the number in the middle
    assert abs(pixel.red() - darkest.red()) + abs(pixel.green() - darkest.green()) < 12
    no_mistake = image.pixelColor(cell_pixel(view, 0, 2, dx=0.15, dy=0.15))
    assert no_mistake.lightness() > 240  # zero mistakes: the scale's white end


@pytest.mark.parametrize("row, column", [(0, 0), (3, 4), (4, 3), (2, 0), (4, 4)])
def test_a_click_on_a_cell_gives_its_true_and_predicted_class(qtbot, view, row, column):
    for dx, dy in ((0.5, 0.5), (0.1, 0.1), (0.9, 0.85)):
        with qtbot.waitSignal(view.cell_clicked, timeout=1000) as blocker:
            click(qtbot, view, cell_pixel(view, row, column, dx, dy))
        assert blocker.args == [row, column]


def test_a_click_on_a_label_gives_its_class(qtbot, view):
    left = view.row_axis.sceneBoundingRect()
    bottom = view.column_axis.sceneBoundingRect()
    for index in range(len(NAMES)):
        cell = cell_pixel(view, index, index)
        label_x = view.graphics.mapFromScene(QPointF(left.center().x(), 0)).x()
        with qtbot.waitSignal(view.true_class_clicked, timeout=1000) as blocker:
            click(qtbot, view, QPoint(label_x, cell.y()))
        assert blocker.args == [index]
        label_y = view.graphics.mapFromScene(QPointF(0, bottom.top() + 8)).y()
        with qtbot.waitSignal(view.predicted_class_clicked, timeout=1000) as blocker:
            click(qtbot, view, QPoint(cell.x(), label_y))
        assert blocker.args == [index]
    assert view.label_point("true", 2).y() == cell_pixel(view, 2, 2).y()


def test_a_click_outside_the_matrix_or_with_another_button_emits_nothing(qtbot, view):
    with qtbot.assertNotEmitted(view.cell_clicked, wait=100):
        qtbot.mouseClick(view.graphics.viewport(), Qt.RightButton, pos=cell_pixel(view, 1, 1))
        click(qtbot, view, QPoint(view.graphics.width() - 3, 3))


def test_a_hundred_classes_draw_no_numbers_label_every_kth_class_and_still_map_clicks(qtbot, view):
    rng = np.random.default_rng(1)
    names = [f"class number {index}" for index in range(100)]
    counts = rng.integers(0, 5, size=(100, 100))
    view.set_matrix(counts, names)
    qtbot.wait(20)
    assert view._texts == []  # no 10,000 TextItems
    assert view.text_shown(3, 3) == ""
    ticks = view.tick_labels("true")
    assert 1 < len(ticks) < 100 and ticks[0][0] == 0
    stride = ticks[1][0]
    assert all(index % stride == 0 for index, _ in ticks)
    with qtbot.waitSignal(view.cell_clicked, timeout=1000) as blocker:
        click(qtbot, view, cell_pixel(view, 97, 3))
    assert blocker.args == [97, 3]


def test_small_cells_hide_their_numbers(qtbot, view):
    view.resize(300, 130)
    qtbot.waitUntil(lambda: view._cell_pixels()[1] < 12)
    assert view.text_shown(0, 0) == ""
    view.resize(760, 620)
    qtbot.waitUntil(lambda: view.text_shown(0, 0) == "50")


def test_the_csv_has_the_class_names_as_header_and_first_column(view, tmp_path):
    view.export_csv(tmp_path / "counts.csv")
    view.export_csv(tmp_path / "precision.csv", mode="pred")
    with open(tmp_path / "counts.csv", newline="") as file:
        rows = list(csv.reader(file))
    assert rows[0][1:] == NAMES
    assert [row[0] for row in rows[1:]] == NAMES
    assert np.array_equal(np.array([[int(value) for value in row[1:]] for row in rows[1:]]), COUNTS)
    with open(tmp_path / "precision.csv", newline="") as file:
        rows = list(csv.reader(file))
    shares = np.array([[float(value) for value in row[1:]] for row in rows[1:]])
    assert np.allclose(shares, COUNTS / COUNTS.sum(axis=0, keepdims=True), atol=1e-6)
    assert view.mode() == "counts"  # exporting another mode does not switch the view


def test_the_png_is_written_and_reads_back(view, tmp_path):
    path = tmp_path / "confusion.png"
    view.export_png(path)
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width > 400 and image.height > 300
        colours = image.convert("RGB").getcolors(maxcolors=1_000_000)
    assert len(colours) > 20  # a heatmap, not a blank page


def test_a_difference_is_one_diverging_scale_centred_at_zero(qtbot, view):
    difference = np.array([[3, -2, 0, 0, 0], [0, 0, 1, 0, 0], [0, -7, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 5]])
    view.set_difference(difference, NAMES)
    assert view.mistake_bar.levels() == (-7, 7)
    assert view.mistake_bar.colorMap() is DIFFERENCE_MAP or view.mistake_bar.colorMap().name == DIFFERENCE_MAP.name
    assert not view.correct_bar.isVisible() and not view.mode_box.isVisible()
    assert view.text_shown(0, 0) == "+3" and view.text_shown(0, 1) == "-2" and view.text_shown(0, 2) == "0"
    with qtbot.waitSignal(view.cell_clicked, timeout=1000) as blocker:
        click(qtbot, view, cell_pixel(view, 2, 1))
    assert blocker.args == [2, 1]
    view.set_difference(difference / 100, NAMES, shares=True)
    assert view.text_shown(2, 1) == "-7.0%"
    assert view.mistake_bar.levels() == pytest.approx((-7, 7))
    view.set_matrix(COUNTS, NAMES)
    assert view.correct_bar.isVisible() and view.mode_box.isVisible()


def test_an_empty_or_misshapen_matrix(qtbot, view):
    view.set_matrix(np.zeros((0, 0), dtype=np.int64), [])
    with qtbot.assertNotEmitted(view.cell_clicked, wait=50):
        click(qtbot, view, QPoint(view.graphics.width() // 2, view.graphics.height() // 2))
    with pytest.raises(ValueError, match="square"):
        view.set_matrix(np.zeros((3, 4)), ["a", "b", "c"])
    with pytest.raises(ValueError, match="class names"):
        view.set_matrix(np.zeros((3, 3)), ["a", "b"])


def test_hovering_a_cell_says_its_classes_and_shares(qtbot, view):
    qtbot.mouseMove(view.graphics.viewport(), cell_pixel(view, 3, 4))
    qtbot.waitUntil(lambda: view.graphics.toolTip() != "")
    assert view.graphics.toolTip() == (f"true cat, predicted deer: 143 images\n"
                                       f"{100 * 143 / 171:.0f}% of true cat, {100 * 143 / 212:.0f}% of predicted deer")
