"""The window does not slow training: the same run from the GUI and the CLI.

Usage: python benchmarks/bench_gui_vs_cli.py [--data FOLDER] [--rounds 8] [--steps 550]
       python benchmarks/bench_gui_vs_cli.py --fresh [--pairs 2] [--epochs 2]

SimCNN with the Paper Table 1 settings on the 50,000 real images (45,000
for training), 550 steps per epoch. "cli" is `main.py train` (the Trainer
with the console listener); "gui" is the main window on Qt's offscreen
platform, its panels set to the same settings and its Train path used
(worker thread, Trainer, events re-emitted as Qt signals, live curves).

By default both run at once, each in its own process, and take turns one
epoch at a time (cli, gui, then gui, cli, ...): each waits at the end of an
epoch, its window still live, while the other runs one. Epochs seconds
apart are compared, so the machine's drift over minutes weighs on both
sides alike. With --fresh whole runs are alternated instead, each in a
fresh process. Each reports the epoch times the Trainer measured
(EpochEnded.epoch_seconds) and the CPU seconds the whole process used in
each epoch (all threads, the window's included). The first epoch traces the
graph, so the ratios are taken on the later epochs: the median of the
per-round ratios, the ratio of the medians, and the best epoch of each side
(which a busy machine disturbs least).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (ROOT, add_interleave_arguments, epoch_turn, find_images, interleave,  # noqa: E402
                    load_images, machine, median, report, run_in_subprocess, spread, table)

def record_epochs() -> dict[str, list[float]]:
    """Wall and CPU seconds of this process in each epoch, taken where the
    Trainer starts and ends an epoch (the same place for both paths; the
    wall time is what EpochEnded.epoch_seconds reports)."""
    from engine.callbacks import EpochRecorder

    times: dict[str, list[float]] = {"epochs": [], "cpu": []}
    started = {}
    keras_begin, keras_end = EpochRecorder.on_epoch_begin, EpochRecorder.on_epoch_end

    def on_epoch_begin(self, epoch, logs=None):
        started.update(wall=time.monotonic(), cpu=time.process_time())
        keras_begin(self, epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        keras_end(self, epoch, logs)
        wall, cpu = time.monotonic() - started["wall"], time.process_time() - started["cpu"]
        times["epochs"].append(wall)
        times["cpu"].append(cpu)
        epoch_turn({"wall": wall, "cpu": cpu})  # with --rounds: wait here while the other path runs an epoch

    EpochRecorder.on_epoch_begin, EpochRecorder.on_epoch_end = on_epoch_begin, on_epoch_end
    return times


def cli_trial(spec: dict) -> dict:
    """`main.py train` as a user types it, run in this (fresh) process."""
    sys.path.insert(0, ROOT)
    import main

    times = record_epochs()
    with tempfile.TemporaryDirectory() as store:
        status = main.main(["--store", store, "train", "--preset", "Paper Table 1", "--model", "simcnn",
                            "--data", spec["data"], "--set", f"epochs={spec['epochs']}",
                            "--set", f"steps_per_epoch={spec['steps']}"])
    if status != 0:
        raise SystemExit(f"main.py train exited with {status}")
    return times


def gui_trial(spec: dict) -> dict:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    work = tempfile.mkdtemp(prefix="bench_gui_")
    os.environ["CIFAR_STUDIO_HOME"] = os.path.join(work, "store")
    from PySide6.QtCore import QTimer

    from gui import worker
    from gui.app import create_application
    from gui.main_window import MainWindow
    from gui.settings import Settings

    if spec.get("background_nice") is not None:
        worker.BACKGROUND_NICE = spec["background_nice"]
    times = record_epochs()

    app = create_application([])
    window = MainWindow(Settings(os.path.join(work, "settings.ini")))
    window.resize(1400, 900)
    window.show()
    window.dataset_panel.source.set_value("folder")
    window.dataset_panel.path.setText(spec["data"])
    window.dataset_panel.validation_split.setText("0.1")
    window.model_panel.architecture.set_value("simcnn")
    hyper = window.hyperparameter_panel
    hyper.optimizer.set_value("sgd")
    hyper.learning_rate.setText("0.01")
    hyper.batch_size.setText("32")
    hyper.epochs.setText(str(spec["epochs"]))
    hyper.steps_per_epoch.setText(str(spec["steps"]))
    hyper.validation_steps.setText("1")
    ended: dict = {}

    def start() -> None:
        if not window.train():
            ended["reason"] = "cannot train: " + window.train_blocked_reason()
            app.quit()

    def on_run_ended(event) -> None:
        ended.update(status=getattr(event, "status", "failed"), reason=getattr(event, "reason", ""))
        QTimer.singleShot(200, app.quit)

    window.worker.run_ended.connect(on_run_ended)
    QTimer.singleShot(2000, start)
    app.exec()
    window.close()
    if ended.get("status") != "finished":
        raise SystemExit(f"GUI run did not finish: {ended}")
    return times


def trial(spec: dict) -> None:
    report(cli_trial(spec) if spec["side"] == "cli" else gui_trial(spec))


def compare_interleaved(args, folder: str) -> None:
    """Both paths live at once, alternated epoch by epoch (common.interleave)."""
    specs = {side: {"side": side, "data": folder, "epochs": args.rounds + 1, "steps": args.steps,
                    "background_nice": args.background_nice} for side in ("cli", "gui")}
    print(f"{args.rounds} rounds of one epoch per path, after each path's first epoch (graph tracing)", flush=True)
    results = interleave(__file__, specs, args.rounds)

    def figures(side, key):
        return [record[key] for record in results[side]["epoch_records"][1:]]

    cli_wall, cli_cpu = figures("cli", "wall"), figures("cli", "cpu")
    rows = []
    for side in ("cli", "gui"):
        wall, cpu = figures(side, "wall"), figures(side, "cpu")
        rows.append([side, len(wall), median(wall), min(wall), median(cpu),
                     median(w / c for w, c in zip(wall, cli_wall)), median(wall) / median(cli_wall),
                     min(wall) / min(cli_wall), median(cpu) / median(cli_cpu),
                     max(figures(side, "cpu_while_paused"))])
    print(f"\nSimCNN Paper Table 1, {args.steps} steps per epoch, epochs alternated in one run, {machine()}")
    print(table(rows, ["path", "epochs", "epoch s", "best s", "CPU s", "per-round ratio", "median / median",
                       "best / best", "CPU / cli", "most CPU s while paused"]))
    per_round = [g / c for g, c in zip(figures("gui", "wall"), cli_wall)]
    print("gui / cli per round (wall): " + ", ".join(f"{r:.3f}" for r in per_round) + spread(per_round))


def compare_fresh(args, folder: str) -> None:
    """Whole runs alternated, each in a fresh process."""
    results = []
    for pair in range(args.pairs):
        for side in ("cli", "gui"):
            spec = {"side": side, "data": folder, "epochs": args.epochs, "steps": args.steps,
                    "background_nice": args.background_nice}
            result = run_in_subprocess(__file__, spec)
            result.update(side=side, steady=median(result["epochs"][1:] or result["epochs"]),
                          steady_cpu=median(result["cpu"][1:] or result["cpu"]))
            print(f"  {side}: epochs {', '.join(f'{s:.2f}' for s in result['epochs'])} s, "
                  f"CPU {', '.join(f'{s:.2f}' for s in result['cpu'])} s", flush=True)
            results.append(result)
    rows = []
    for side in ("cli", "gui"):
        mine = [r for r in results if r["side"] == side]
        rows.append([side, len(mine), median(r["epochs"][0] for r in mine), median(r["steady"] for r in mine),
                     min(r["steady"] for r in mine), median(r["steady_cpu"] for r in mine)])
    ratio, best, cpu = rows[1][3] / rows[0][3], rows[1][4] / rows[0][4], rows[1][5] / rows[0][5]
    print(f"\nSimCNN Paper Table 1, {args.steps} steps per epoch, {args.epochs} epochs, {machine()}")
    print(table(rows, ["path", "runs", "epoch 1 s", "steady epoch s", "best s", "steady CPU s"]))
    pairs = [g["steady"] / c["steady"] for c, g in zip(results[::2], results[1::2])]
    print(f"gui / cli, steady epoch wall: median {ratio:.3f}, best {best:.3f}; per pair "
          + ", ".join(f"{p:.3f}" for p in pairs) + spread(pairs))
    print(f"gui / cli, steady epoch CPU seconds (all threads, the window's included): median {cpu:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="folder of the 50,000 JPEGs (default: /tmp/cifar10-jpg/train)")
    add_interleave_arguments(parser, pairs=2, pairs_help="cli/gui pairs")
    parser.add_argument("--epochs", type=int, default=2, help="with --fresh: epochs per run")
    parser.add_argument("--steps", type=int, default=550)
    parser.add_argument("--background-nice", type=int,
                        help="override gui.worker.BACKGROUND_NICE in the GUI runs (to see what it costs)")
    parser.add_argument("--trial", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.trial:
        trial(json.loads(args.trial))
        return
    folder = find_images(args.data)
    load_images(folder)  # fill the cache outside the measurements
    (compare_fresh if args.fresh else compare_interleaved)(args, folder)


if __name__ == "__main__":
    main()
