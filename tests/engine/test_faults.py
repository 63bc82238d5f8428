"""A training process killed (SIGKILL) at several points: mid-epoch, while
saving, while evaluating. Each time the store opens, the killed run is kept
as "interrupted" with what it had written, and every earlier run is intact
byte for byte."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import cli
import main
from engine.runs import RunStore
from toydata import write_toy_folder

# (the line of `main.py train`'s output after which the process is killed, seconds to wait after it)
KILL_POINTS = {
    "mid-epoch": ("Training", 0.3),
    "while saving": ("Saving the model", 0.0),
    "while evaluating": ("Evaluating on the whole", 0.0),
}


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    folder = root / "pictures"
    write_toy_folder(folder, (("train", 160, 1), ("test", 400, 2)))
    return root / "store", folder


TRAIN = ["--set", "epochs=2", "--set", "steps_per_epoch=auto", "--set", "validation_steps=all", "--set", "batch_size=4"]


def train_until(store: Path, folder: Path, name: str, kill_after: str, delay: float = 0.0) -> str:
    """Run `main.py train` and SIGKILL it once the line `kill_after` is printed. The process's output."""
    command = [sys.executable, str(Path(main.__file__)), "train", "--data", str(folder), "--name", name, *TRAIN]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "CIFAR_STUDIO_HOME": str(store)})
    seen = []
    try:
        for line in process.stdout:
            seen.append(line)
            if line.startswith(kill_after):
                time.sleep(delay)
                process.send_signal(signal.SIGKILL)
                break
        process.wait(timeout=120)
    finally:
        process.kill()
    return "".join(seen)


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_killed_run_is_kept_and_earlier_runs_are_untouched(setting):
    store_root, folder = setting
    assert cli.main(["--store", str(store_root), "train", "--data", str(folder), "--name", "whole", *TRAIN]) == 0
    for point, (line, delay) in KILL_POINTS.items():
        store = RunStore(store_root)
        earlier = {r.run_id: snapshot(store.run_dir(r.run_id)) for r in store.list_runs()}
        output = train_until(store_root, folder, point, kill_after=line, delay=delay)
        assert line in output, output

        store = RunStore(store_root)  # opens, and marks the dead process's run
        runs = {r.name: r for r in store.list_runs()}
        assert runs[point].status == "interrupted", (point, runs[point])
        for run_id, files in earlier.items():
            assert snapshot(store.run_dir(run_id)) == files, point
        killed = runs[point]
        leftovers = [p.name for p in store.run_dir(killed.run_id).iterdir() if ".tmp" in p.name]
        assert not leftovers, (point, leftovers)
        history = store.history(killed.run_id)
        assert len(history.get("loss", [])) == killed.epochs_done
        if point != "mid-epoch":
            assert killed.epochs_done == 2 and store.evaluation_model(killed.run_id).exists()
    assert runs["whole"].status == "finished" and runs["whole"].test_accuracy is not None
