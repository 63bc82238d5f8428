"""The Compare tab's shared plots: runs' curves overlaid, and per-class differences with intervals."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QImage

from engine.comparison import smooth
from gui.widgets.interval_bars import NEGATIVE_COLOR, POSITIVE_COLOR, IntervalBars
from gui.widgets.overlay_plot import PALETTE, OverlayPlot

FIRST = {"epoch": [0, 1, 2, 3], "elapsed": [2.0, 4.5, 7.0, 9.5], "loss": [2.0, 1.4, 1.0, 0.7],
         "val_loss": [2.1, 1.6, 1.2, 1.3], "accuracy": [0.3, 0.5, 0.7, 0.8], "val_accuracy": [0.3, 0.45, 0.62, 0.6]}
SECOND = {"epoch": [0, 1, 2], "elapsed": [10.0, 20.0, 30.0], "loss": [2.2, 1.1, 0.5],
          "val_loss": [2.0, 1.0, 0.8], "accuracy": [0.2, 0.6, 0.9], "val_accuracy": [0.25, 0.64, 0.7]}
NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture
def overlay(qtbot):
    plot = OverlayPlot("loss")
    qtbot.addWidget(plot)
    plot.set_runs([("simcnn <Table 1>", FIRST, 3), ("resnet50", SECOND, 3)])
    return plot


def test_each_runs_curves_are_its_history(overlay):
    data = overlay.curve_data()
    assert set(data) == {("simcnn <Table 1>", "loss"), ("simcnn <Table 1>", "val_loss"),
                         ("resnet50", "loss"), ("resnet50", "val_loss")}
    for label, history in (("simcnn <Table 1>", FIRST), ("resnet50", SECOND)):
        for column in ("loss", "val_loss"):
            x, y = data[(label, column)]
            assert list(x) == list(range(1, len(history[column]) + 1))
            assert list(y) == pytest.approx(history[column])

    overlay.set_metric("accuracy")
    x, y = overlay.curve_data()[("resnet50", "val_accuracy")]
    assert list(y) == pytest.approx(SECOND["val_accuracy"])
    assert overlay.shown_metric() == "accuracy"


def test_runs_have_their_own_colours_train_solid_validation_dashed_and_a_legend_naming_them(overlay):
    first, second = overlay._slots[:2]
    assert first.train.opts["pen"].color() == QColor(PALETTE[0])
    assert second.train.opts["pen"].color() == QColor(PALETTE[1])
    assert first.train.opts["pen"].style() == Qt.SolidLine
    assert first.validation.opts["pen"].style() == Qt.DashLine
    labels = [label.text for _sample, label in overlay.legend.items]
    assert labels[:2] == ["simcnn &lt;Table 1&gt;", "resnet50"]  # rich text: the name shown as written
    assert labels[2:] == ["train", "validation", "best epoch"]


def test_the_best_epoch_is_a_star_on_the_validation_curve(overlay):
    assert overlay.best_points() == {"simcnn <Table 1>": (3.0, pytest.approx(1.2)), "resnet50": (3.0, 0.8)}
    assert overlay._slots[0].best.opts["symbol"] == "star"


def test_wall_time_axis_uses_the_elapsed_seconds(overlay):
    overlay.set_x_axis("time")
    x, y = overlay.curve_data()[("resnet50", "loss")]
    assert list(x) == SECOND["elapsed"]
    assert list(y) == pytest.approx(SECOND["loss"])
    assert overlay.best_points()["simcnn <Table 1>"][0] == 7.0
    with pytest.raises(ValueError):
        overlay.set_x_axis("steps")


def test_smoothing_draws_the_engines_moving_average_and_zero_undoes_it(overlay):
    overlay.set_smoothing(0.6)
    x, y = overlay.curve_data()[("simcnn <Table 1>", "loss")]
    expected = smooth(np.asarray(FIRST["loss"]), 0.6)
    assert list(y) == pytest.approx(list(expected))
    assert not np.allclose(y, FIRST["loss"])
    star = overlay.best_points()["simcnn <Table 1>"]
    assert star[1] == pytest.approx(overlay.curve_data()[("simcnn <Table 1>", "val_loss")][1][2])  # on its line
    overlay.set_smoothing(0.0)
    assert list(overlay.curve_data()[("simcnn <Table 1>", "loss")][1]) == pytest.approx(FIRST["loss"])


def test_log_axis_draws_log10_of_the_values(overlay):
    overlay.set_log_y(True)
    item = overlay._slots[1].train
    _x, drawn = item.getData()
    assert list(drawn) == pytest.approx(list(np.log10(SECOND["loss"])))
    assert list(overlay.curve_data()[("resnet50", "loss")][1]) == pytest.approx(SECOND["loss"])
    overlay.set_log_y(False)
    assert list(item.getData()[1]) == pytest.approx(SECOND["loss"])


def test_fewer_runs_clear_the_curves_of_the_others(overlay):
    overlay.set_runs([("resnet50", SECOND, 2)])
    assert set(overlay.curve_data()) == {("resnet50", "loss"), ("resnet50", "val_loss")}
    x, _y = overlay._slots[1].train.getData()
    assert x is None or len(x) == 0
    assert [label.text for _s, label in overlay.legend.items][0] == "resnet50"


def test_overlay_exports_a_png(overlay, tmp_path):
    overlay.resize(600, 360)
    path = tmp_path / "curves.png"
    overlay.export_png(path)
    image = QImage(str(path))
    assert not image.isNull() and image.width() > 100


def test_bars_are_the_values_and_error_bars_end_at_the_interval(qtbot, tmp_path):
    bars = IntervalBars()
    qtbot.addWidget(bars)
    values = np.linspace(-0.2, 0.3, 10)
    low, high = values - np.linspace(0.01, 0.1, 10), values + 0.05
    bars.set_values(NAMES, values, low, high, title="F1 of B minus A")
    x, heights = bars.bar_data()
    assert list(x) == list(range(10))
    assert list(heights) == pytest.approx(list(values))
    bottom, top = bars.interval_ends()
    assert list(bottom) == pytest.approx(list(low))
    assert list(top) == pytest.approx(list(high))
    colours = [brush.color() for brush in bars.bars.opts["brushes"]]
    assert colours == [QColor(NEGATIVE_COLOR if v < 0 else POSITIVE_COLOR) for v in values]
    assert bars.zero_line.value() == 0

    bars.setAttribute(Qt.WA_DontShowOnScreen, True)
    bars.resize(bars.readable_width(), 300)
    bars.show()
    qtbot.waitUntil(lambda: bars.width() >= bars.readable_width())
    assert [name for _x, name in bars.getAxis("bottom")._tickLevels[0]] == NAMES  # wide enough: whole names
    bars.resize(bars.readable_width() // 2, 300)
    qtbot.waitUntil(lambda: bars.width() < bars.readable_width())
    shown = [name for _x, name in bars.getAxis("bottom")._tickLevels[0]]  # narrow: cut short, never overlapping
    assert len(shown) == len(NAMES) and any(text.endswith("…") for text in shown)
    assert all(name.startswith(text.rstrip("…")) for name, text in zip(NAMES, shown))
    bars.resize(bars.readable_width(), 300)
    qtbot.waitUntil(lambda: bars.width() >= bars.readable_width())
    path = tmp_path / "bars.png"
    bars.export_png(path)
    assert QImage(str(path)).width() >= bars.readable_width()


def test_bars_refuse_mismatched_lengths(qtbot):
    bars = IntervalBars()
    qtbot.addWidget(bars)
    with pytest.raises(ValueError, match="3 class names for 2 values"):
        bars.set_values(["a", "b", "c"], [0.1, 0.2], [0, 0], [0.3, 0.3])
