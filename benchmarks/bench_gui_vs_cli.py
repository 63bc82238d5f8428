"""The window does not slow training: the same run from the GUI and the CLI.

Usage: python benchmarks/bench_gui_vs_cli.py [--data FOLDER] [--rounds 8] [--steps 550]

SimCNN with the Paper Table 1 settings on the real CIFAR-10 training images
(90% for training). "cli" is `python main.py train` as a user types it;
"gui" is the main window, its panels set to the same settings and its Train
path used (the engine's events re-emitted as Qt signals, live curves).

Both run at once, each in its own process, and take turns one epoch at a
time (common.interleave); each waits at the end of an epoch, its window
still live, while the other runs one. Epochs are timed where Keras starts
and ends them, the same place on both paths, with the CPU seconds of the
whole process (the window's threads included).
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (ROOT, add_data_argument, compare, find_images, load_images, open_window, parse,  # noqa: E402
                    press_train, report, time_epochs, training_signals)


def cli_trial(spec: dict) -> dict:
    """`main.py train`, run in this (fresh) process as if typed."""
    records = time_epochs()
    with tempfile.TemporaryDirectory() as store:
        sys.argv = ["main.py", "--store", store, "train", "--preset", "Paper Table 1", "--model", "simcnn",
                    "--data", spec["data"], "--set", f"epochs={spec['epochs']}",
                    "--set", f"steps_per_epoch={spec['steps']}"]
        try:
            runpy.run_path(os.path.join(ROOT, "main.py"), run_name="__main__")
            status = 0
        except SystemExit as exit_:
            status = exit_.code or 0
    if status != 0:
        raise SystemExit(f"main.py train exited with {status}")
    return {"epoch_records": records}


def gui_trial(spec: dict) -> dict:
    from PySide6.QtCore import QTimer

    records = time_epochs()
    app, window = open_window(Path(tempfile.mkdtemp(prefix="bench_gui_")), spec["data"], {"validation_split": "0.1"},
                              {"batch_size": "32", "epochs": str(spec["epochs"]),
                               "steps_per_epoch": str(spec["steps"]), "validation_steps": "1"})
    ended: dict = {}

    def on_run_ended(event) -> None:
        ended.update(status=event.status, reason=event.reason)
        QTimer.singleShot(200, app.quit)

    training_signals(window).run_ended.connect(on_run_ended)
    QTimer.singleShot(2000, lambda: press_train(app, window))
    app.exec()
    window.close()
    if ended.get("status") != "finished":
        raise SystemExit(f"GUI run did not finish: {ended}")
    return {"epoch_records": records}


def trial(spec: dict) -> None:
    report(cli_trial(spec) if spec["side"] == "cli" else gui_trial(spec))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_argument(parser)
    parser.add_argument("--rounds", type=int, default=8, help="epochs per side after the first")
    parser.add_argument("--steps", type=int, default=550)
    args = parse(parser, trial)
    if args is None:
        return
    folder = find_images(args.data)
    load_images(folder)  # fill the cache outside the measurements
    sides = {side: {"side": side, "data": folder, "steps": args.steps} for side in ("cli", "gui")}
    compare(__file__, sides, args.rounds, "cli", f"SimCNN Paper Table 1, {args.steps} steps per epoch")


if __name__ == "__main__":
    main()
