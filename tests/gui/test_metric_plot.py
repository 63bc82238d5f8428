"""The metric plot: the per-batch trace smoothed from Keras' running means, and stored histories."""

from __future__ import annotations

import pytest

from engine.text import format_seconds
from gui.widgets.metric_plot import SMOOTHING, MetricPlot


def test_the_batch_trace_is_a_moving_average_of_the_exact_interval_means(qtbot):
    plot = MetricPlot("loss", "Loss", legend_corner=(-10, 10))
    qtbot.addWidget(plot)
    losses = [4.0, 2.0, 3.0, 1.0, 5.0, 1.0]  # per batch; two epochs of three batches

    def running_mean(first, last):
        return sum(losses[first:last]) / (last - first)

    plot.add_batch(1, 2, 3, {"loss": running_mean(0, 2)})  # batches 1-2 of epoch 1
    plot.add_batch(1, 3, 3, {"loss": running_mean(0, 3)})  # batch 3
    plot.add_batch(1, 3, 3, {"loss": running_mean(0, 3)})  # a repeated report adds nothing
    plot.add_batch(2, 1, 3, {"loss": running_mean(3, 4)})  # the next epoch starts afresh
    x, y = plot.batch_curve.getData()
    assert list(x) == pytest.approx([2 / 3, 1.0, 1 + 1 / 3])
    first = 3.0
    second = SMOOTHING * 3.0 + (1 - SMOOTHING) * first  # batch 3 alone had loss 3.0
    third = SMOOTHING * 1.0 + (1 - SMOOTHING) * second
    assert list(y) == pytest.approx([first, second, third])


def test_stored_reports_are_drawn_at_the_next_redraw_or_epoch(qtbot):
    plot = MetricPlot("accuracy", "Accuracy", legend_corner=(-10, -10))
    qtbot.addWidget(plot)
    plot.add_batch(1, 1, 4, {"accuracy": 0.25})
    plot.add_batch(1, 2, 4, {"accuracy": 0.5}, redraw=False)
    plot.add_batch(1, 3, 4, {"accuracy": 0.9}, redraw=False)
    assert list(plot.batch_curve.getData()[0]) == [0.25]
    assert plot.getViewBox().viewRange()[1][1] < 0.5  # the y axis waits for the points too

    plot.redraw()
    x, y = plot.batch_curve.getData()
    assert list(x) == [0.25, 0.5, 0.75]
    low, high = plot.getViewBox().viewRange()[1]
    assert low <= min(y) and max(y) <= high

    plot.add_batch(1, 4, 4, {"accuracy": 0.8}, redraw=False)
    plot.add_epoch(1, {"accuracy": 0.8}, best_epoch=1, monitor="accuracy")
    assert len(plot.batch_curve.getData()[0]) == 4


def test_times_read_as_minutes_or_hours():
    assert format_seconds(59.6) == "1:00"
    assert format_seconds(3725) == "1:02:05"


def test_a_stored_history_is_shown_whole_with_its_best_epoch(qtbot):
    plot = MetricPlot("accuracy", "Accuracy", legend_corner=(-10, -10))
    qtbot.addWidget(plot)
    history = {"epoch": [0, 1, 2], "accuracy": [0.5, 0.6, 0.7], "val_accuracy": [0.4, 0.65, 0.55]}
    plot.show_history(history, best_epoch=2)
    epochs, train = plot.train_curve.getData()
    assert list(epochs) == [1, 2, 3] and list(train) == pytest.approx([0.5, 0.6, 0.7])
    _, validation = plot.validation_curve.getData()
    assert list(validation) == pytest.approx([0.4, 0.65, 0.55])
    assert list(plot.best_marker.getData()[1]) == pytest.approx([0.65])
