"""The image gallery (lazy over 10,000 images, selections, clicks, CSV) and the top-5 probability bars."""

from __future__ import annotations

import csv
import time

import numpy as np
import pytest
from PySide6.QtCore import Qt

from gui.widgets.bars import NO_PREDICTION, NOT_A_NUMBER, ProbabilityBars, format_probability
from gui.widgets.gallery import CAPTION_ROLE, ROW_ROLE, ImageGallery, array_to_qimage

NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def split(count: int, seed: int = 0):
    """A synthetic test split: random images, labels, predictions right about 70% of the time."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(count, 32, 32, 3), dtype=np.uint8)
    y_true = rng.integers(0, len(NAMES), size=count)
    y_pred = np.where(rng.random(count) < 0.7, y_true, rng.integers(0, len(NAMES), size=count))
    top1 = rng.random(count)
    return images, y_true, y_pred, top1


@pytest.fixture
def gallery(qtbot):
    widget = ImageGallery()
    qtbot.addWidget(widget)
    widget.resize(700, 500)
    widget.show()
    qtbot.waitExposed(widget)
    return widget


def click_item(qtbot, gallery: ImageGallery, position: int, modifier=Qt.NoModifier) -> None:
    gallery.view.scrollTo(gallery.model.index(position))
    rect = gallery.view.visualRect(gallery.model.index(position))
    qtbot.mouseClick(gallery.view.viewport(), Qt.LeftButton, modifier, rect.center())


def test_ten_thousand_images_scroll_with_thumbnails_made_only_for_what_is_shown(qtbot, gallery):
    images, y_true, y_pred, top1 = split(10_000)
    asked: set[int] = set()
    model_data = gallery.model.data

    def counting_data(index, role=Qt.DisplayRole):
        asked.add(index.row())
        return model_data(index, role)

    gallery.model.data = counting_data
    started = time.perf_counter()
    gallery.set_data(images, y_true, y_pred, top1, NAMES)
    qtbot.waitUntil(lambda: 0 in asked)
    first_screen = set(asked)
    bar = gallery.view.verticalScrollBar()
    for step in range(1, 11):
        bar.setValue(bar.maximum() * step // 10)
        qtbot.wait(5)
    qtbot.waitUntil(lambda: 9_999 in asked)
    seconds = time.perf_counter() - started
    assert len(first_screen) < 200
    assert len(asked) < 1_000, f"data() was asked about {len(asked)} rows ({seconds:.2f} s)"
    assert gallery.model.thumbnails_made < 1_000
    assert gallery.model.rowCount() == 10_000
    print(f"10,000 images set and scrolled in {seconds:.2f} s; data() asked about {len(asked)} rows")


def test_a_click_emits_the_position_into_the_arrays(qtbot, gallery):
    images, y_true, y_pred, top1 = split(300)
    gallery.set_data(images, y_true, y_pred, top1, NAMES)
    rows = np.array([250, 7, 123, 0, 42])
    gallery.show_rows(rows, "five images")
    for position in (2, 0, 4):
        with qtbot.waitSignal(gallery.image_selected, timeout=1000) as blocker:
            click_item(qtbot, gallery, position)
        assert blocker.args == [int(rows[position])]
    click_item(qtbot, gallery, 0)
    with qtbot.waitSignal(gallery.image_selected, timeout=1000) as blocker:
        qtbot.keyClick(gallery.view, Qt.Key_Right)  # the arrow keys walk the images too
    assert blocker.args == [int(rows[1])]


def test_show_rows_shows_exactly_those_rows_in_that_order(qtbot, gallery):
    images, y_true, y_pred, top1 = split(2_000)
    gallery.set_data(images, y_true, y_pred, top1, NAMES)
    assert np.array_equal(gallery.current_rows(), np.arange(2_000))
    cell = np.flatnonzero((y_true == 3) & (y_pred == 5))
    rows = cell[np.argsort(-top1[cell])]  # most confident first
    gallery.show_rows(rows, f"true cat, predicted dog: {len(rows)} images")
    assert gallery.title.text() == f"true cat, predicted dog: {len(rows)} images"
    assert np.array_equal(gallery.current_rows(), rows)
    model = gallery.model
    assert model.rowCount() == len(rows)
    shown = [model.index(position).data(ROW_ROLE) for position in range(model.rowCount())]
    assert shown == [int(row) for row in rows]
    predicted, probability, true = model.index(0).data(CAPTION_ROLE)
    assert (predicted, true) == ("dog", "cat") and probability == format_probability(top1[rows[0]])
    gallery.show_rows(np.zeros(0, dtype=int), "nothing")
    assert model.rowCount() == 0
    with pytest.raises(ValueError, match="positions"):
        gallery.show_rows([0, 2_000], "out of range")


def test_selected_rows_are_positions_into_the_arrays(qtbot, gallery):
    images, y_true, y_pred, top1 = split(100)
    gallery.set_data(images, y_true, y_pred, top1, NAMES)
    gallery.show_rows(np.arange(99, -1, -1), "reversed")
    click_item(qtbot, gallery, 1)
    click_item(qtbot, gallery, 3, Qt.ControlModifier)
    assert list(gallery.selected_rows()) == [98, 96]


def test_the_csv_lists_the_shown_images_and_reads_back(qtbot, gallery, tmp_path):
    images, y_true, y_pred, top1 = split(50)
    files = [f"test/{NAMES[label]}/{index:04d}.png" for index, label in enumerate(y_true)]
    gallery.set_data(images, y_true, y_pred, top1, NAMES, files=files)
    rows = np.flatnonzero(y_true != y_pred)
    gallery.show_rows(rows, "misclassified")
    gallery.export_csv(tmp_path / "images.csv")
    with open(tmp_path / "images.csv", newline="") as file:
        records = list(csv.DictReader(file))
    assert [int(record["index"]) for record in records] == list(rows)
    for record, row in zip(records, rows):
        assert record["file"] == files[row]
        assert record["true class"] == NAMES[y_true[row]]
        assert record["predicted class"] == NAMES[y_pred[row]]
        assert float(record["probability"]) == pytest.approx(top1[row], rel=1e-5)

    gallery.set_data(None, y_true, y_pred, top1, NAMES)  # no files known: the column stays, empty
    gallery.export_csv(tmp_path / "no files.csv", rows=[4, 2])
    with open(tmp_path / "no files.csv", newline="") as file:
        records = list(csv.DictReader(file))
    assert [(record["index"], record["file"]) for record in records] == [("4", ""), ("2", "")]


def test_without_images_the_captions_show_with_a_placeholder(qtbot, gallery):
    _, y_true, y_pred, top1 = split(500)
    top1[0] = np.nan
    gallery.set_data(None, y_true, y_pred, top1, NAMES)
    assert gallery.notice.isVisible()
    model = gallery.model
    assert model.rowCount() == 500
    assert model.index(0).data(Qt.DecorationRole) is None
    assert model.index(0).data(CAPTION_ROLE)[1] == NOT_A_NUMBER
    assert "nan" not in model.index(0).data(Qt.DisplayRole)
    gallery.view.grab()  # paints the placeholders
    with qtbot.waitSignal(gallery.image_selected, timeout=1000) as blocker:
        click_item(qtbot, gallery, 3)
    assert blocker.args == [3]
    images, *_ = split(500)
    gallery.set_data(images, y_true, y_pred, top1, NAMES)
    assert not gallery.notice.isVisible()


def test_arrays_of_different_lengths_are_refused(gallery):
    images, y_true, y_pred, top1 = split(20)
    with pytest.raises(ValueError, match="19 predicted labels"):
        gallery.set_data(images, y_true, y_pred[:19], top1, NAMES)
    with pytest.raises(ValueError, match="3 files"):
        gallery.set_data(images, y_true, y_pred, top1, NAMES, files=["a", "b", "c"])


def test_thumbnails_keep_their_pixels(qtbot):
    rgb = np.zeros((4, 6, 3), dtype=np.uint8)
    rgb[1, 2] = (200, 10, 30)
    image = array_to_qimage(rgb)
    assert (image.width(), image.height()) == (6, 4)
    assert image.pixelColor(2, 1).getRgb()[:3] == (200, 10, 30)
    gray = np.full((5, 5, 1), 77, dtype=np.uint8)
    assert array_to_qimage(gray).pixelColor(0, 0).getRgb()[:3] == (77, 77, 77)
    rgba = np.zeros((3, 3, 4), dtype=np.uint8)
    rgba[0, 0] = (1, 2, 3, 255)
    assert array_to_qimage(rgba).pixelColor(0, 0).getRgb() == (1, 2, 3, 255)
    strided = np.zeros((8, 8, 3), dtype=np.uint8)
    strided[::2, ::2] = 255
    assert array_to_qimage(strided[::2, ::2]).pixelColor(3, 3).getRgb()[:3] == (255, 255, 255)


# --- the probability bars -------------------------------------------------------


def test_the_bars_show_the_top_five_best_first(qtbot):
    bars = ProbabilityBars()
    qtbot.addWidget(bars)
    bars.set_probabilities(["cat", "dog", "frog", "deer", "horse", "bird"], [0.05, 0.6, 0.2, 0.1, 0.03, 0.02],
                           highlight="cat")
    assert bars.texts() == [("dog", "60.0%"), ("frog", "20.0%"), ("deer", "10.0%"), ("cat", "5.0%"),
                            ("horse", "3.0%")]
    assert bars.message() == ""
    bars.show()
    qtbot.waitExposed(bars)
    bars.grab()


def test_the_bars_say_not_a_number_and_no_prediction(qtbot):
    bars = ProbabilityBars()
    qtbot.addWidget(bars)
    bars.set_probabilities(["cat", "dog", "frog"], [np.nan, 0.4, np.inf])
    assert bars.texts() == [("dog", "40.0%"), ("cat", NOT_A_NUMBER), ("frog", NOT_A_NUMBER)]
    assert "nan" not in bars.toolTip() and "inf" not in bars.toolTip()
    bars.grab()
    bars.set_probabilities(None, None)
    assert bars.texts() == [] and bars.message() == NO_PREDICTION
    bars.grab()
    bars.set_probabilities(["cat"], [0.5])
    bars.clear()
    assert bars.message() == NO_PREDICTION
    with pytest.raises(ValueError, match="2 class names for 1 probabilities"):
        bars.set_probabilities(["cat", "dog"], [0.5])
