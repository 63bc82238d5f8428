"""The benchmarks' harness (benchmarks/common.py): live trials take turns one
epoch at a time in the order the comparisons rely on, rounds that are not
alike are left out, and epochs are timed at the same place for plain Keras
and the engine. Timed nowhere: the child here reports made-up seconds."""

import os
import sys
import textwrap
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import common  # noqa: E402

CHILD = textwrap.dedent("""
    import json, os, sys, time
    sys.path.insert(0, {benchmarks!r})
    from common import epoch_turn, report

    spec = json.loads(sys.argv[sys.argv.index("--trial") + 1])
    with open(spec["log"] + ".pids", "a") as pids:
        pids.write(f"{{os.getpid()}}\\n")
    for epoch in range(spec["epochs"]):
        if spec.get("fail_at") == epoch:
            sys.exit("broken on purpose")
        with open(spec["log"], "a") as log:
            log.write(f"{{spec['name']}}{{epoch}}\\n")
        steps = spec.get("short", {{}}).get(str(epoch), 10)
        epoch_turn({{"wall": spec.get("wall", 1.0), "cpu": 1.0, "steps": steps, "epoch": epoch}})
    report({{"name": spec["name"], "epochs": spec["epochs"]}})
""")


@pytest.fixture
def child(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(benchmarks=str(BENCHMARKS)))
    return script


def test_sides_take_turns_one_epoch_at_a_time_in_reversed_order_each_round(child, tmp_path):
    log = tmp_path / "order.txt"
    specs = {name: {"name": name, "epochs": 4, "log": str(log)} for name in ("a", "b")}
    results = common.interleave(str(child), specs, rounds=3)

    # First epochs one after the other, then a b, b a, a b.
    assert log.read_text().split() == ["a0", "b0", "a1", "b1", "b2", "a2", "a3", "b3"]
    for name in ("a", "b"):
        assert results[name]["name"] == name
        assert [r["epoch"] for r in results[name]["epoch_records"]] == [0, 1, 2, 3]
        # A side waiting for its turn uses (almost) no CPU.
        assert all(r["cpu_while_paused"] < 0.05 for r in results[name]["epoch_records"])


def test_a_trial_that_dies_ends_the_comparison_with_its_error(child, tmp_path, capsys):
    specs = {"a": {"name": "a", "epochs": 4, "log": str(tmp_path / "log"), "fail_at": 2},
             "b": {"name": "b", "epochs": 4, "log": str(tmp_path / "log")}}
    with pytest.raises(SystemExit, match="ended early"):
        common.interleave(str(child), specs, rounds=3)
    assert "broken on purpose" in capsys.readouterr().err
    # The other side, left waiting for a turn that never comes, is gone too.
    for pid in (tmp_path / "log.pids").read_text().split():
        with pytest.raises(ProcessLookupError):
            os.kill(int(pid), 0)


def test_compare_leaves_out_a_round_whose_epochs_ran_different_steps(child, tmp_path, capsys):
    log = str(tmp_path / "log")
    sides = {"plain": {"name": "plain", "log": log, "wall": 2.0, "short": {"2": 4}},
             "engine": {"name": "engine", "log": log, "wall": 1.0}}
    results = common.compare(str(child), sides, 4, "plain", "toy")

    assert set(results) == {"plain", "engine"}
    out = capsys.readouterr().out
    assert "1 of 4 rounds left out" in out
    # Three rounds kept, each 1.0 s against 2.0 s; without round 3 (after the short one), two.
    assert "engine / plain per round (wall): 0.500, 0.500, 0.500" in out
    assert "per-round median 0.500 over 2 rounds" in out


def test_outside_an_interleaved_run_epoch_turn_does_nothing(monkeypatch, capsys):
    monkeypatch.delenv(common.INTERLEAVE_ENV, raising=False)
    common.epoch_turn({"wall": 1.0})
    assert capsys.readouterr().out == ""


def test_time_epochs_times_every_fit_after_the_callers_own_callbacks(monkeypatch):
    import keras
    import numpy as np

    monkeypatch.delenv(common.INTERLEAVE_ENV, raising=False)
    monkeypatch.setattr(keras.Model, "fit", keras.Model.fit)  # restored after the test
    records = common.time_epochs()
    seen = []

    class Callers(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(len(records))  # the timer has not run yet for this epoch

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    x, y = np.zeros((12, 4), "float32"), np.zeros((12, 2), "float32")
    model.fit(x, y, batch_size=4, epochs=2, callbacks=[Callers()], verbose=0)

    assert [r["steps"] for r in records] == [3, 3]
    assert seen == [0, 1]
    assert all(r["wall"] > 0 and r["cpu"] >= 0 for r in records)
