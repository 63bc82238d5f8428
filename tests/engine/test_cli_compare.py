"""`main.py compare`: the table, the settings that differ, head to head and the CSV, on two tiny real runs."""

import csv

import pytest

import cli
from engine.comparison import TABLE_COLUMNS, mcnemar_exact
from engine.runs import RunStore
from engine.training import Trainer
from toydata import toy_config, toy_dataset


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-compare-store")
    store = RunStore(root)
    ids = []
    for name, epochs in (("first", 1), ("second", 2)):
        config = toy_config(epochs=epochs)
        config.name = name
        result = Trainer(config, store=store, dataset=toy_dataset()).run()
        assert result.status == "finished", result.reason
        ids.append(result.run_id)
    return root, ids


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_compare_prints_both_runs_what_differs_and_head_to_head(trained, capsys, tmp_path):
    root, (a, b) = trained
    table = tmp_path / "runs.csv"
    code, out, err = run(capsys, "--store", str(root), "compare", "first", b, "--csv", str(table))
    assert code == 0, err
    lines = out.splitlines()
    assert [line.split()[0] for line in lines[2:4]] == ["first", "second"]
    assert "Epochs (training.epochs)" in out and "Batch size" not in out  # only what differs
    store = RunStore(root)
    right = [store.predictions(run)["y_pred"] == store.predictions(run)["y_true"] for run in (a, b)]
    only_a, only_b = int((right[0] & ~right[1]).sum()), int((right[1] & ~right[0]).sum())
    assert f"only first right: {only_a}; only second right: {only_b};" in out
    assert f"McNemar's exact p = {mcnemar_exact(only_a, only_b):.4g}" in out
    assert "observations:" in out and "10-point threshold" in out and "most accurate" in out
    with table.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == [header for _, header in TABLE_COLUMNS]
    assert [row["Run id"] for row in rows] == [a, b] and [row["Epochs"] for row in rows] == ["1", "2"]


def test_one_run_is_a_table(trained, capsys):
    root, (a, _) = trained
    code, out, err = run(capsys, "--store", str(root), "compare", a)
    assert code == 0, err
    assert "first" in out and "one run, nothing to set side by side" in out


def test_an_unknown_run_is_one_line_and_status_2(trained, capsys):
    root, (a, _) = trained
    code, out, err = run(capsys, "--store", str(root), "compare", a, "nonesuch")
    assert code == 2 and out == ""
    assert err.splitlines() == [f"error: no run 'nonesuch' in {root} (see the 'runs' command)"]


@pytest.mark.parametrize("option, name, message", [
    ("--report", "report.txt", "give a file name ending in .html or .pdf"),
    ("--report", "missing/report.html", "does not exist"),
    ("--csv", "missing/runs.csv", "does not exist"),
])
def test_a_bad_output_file_is_refused_before_any_work(capsys, tmp_path, option, name, message):
    store = tmp_path / "store"  # opening the store would create it
    code, out, err = run(capsys, "--store", str(store), "compare", "any", "run", option, str(tmp_path / name))
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith(f"error: {option} ") and message in err
    assert not store.exists()
