"""The window does not slow training: the same run from the GUI and the CLI.

Usage: python benchmarks/bench_gui_vs_cli.py [--data FOLDER] [--pairs 2] [--epochs 2] [--steps 550]

SimCNN with the Paper Table 1 settings on the 50,000 real images (45,000
for training), 550 steps per epoch. "cli" is `main.py train` (the Trainer
with the console listener) in a fresh process; "gui" is the main window on
Qt's offscreen platform, its panels set to the same settings and its Train
path used (worker thread, Trainer, events re-emitted as Qt signals, live
curves). They are alternated (cli, gui, cli, gui, ...), each in a fresh
process; each reports the epoch times the Trainer measured
(EpochEnded.epoch_seconds) and the CPU seconds the whole process used in
each epoch (all threads, the window's included). The first epoch traces the
graph, so the ratios are taken on the later epochs (the median, and the
best trial of each side, which a busy machine disturbs least). On a shared
machine the CPU ratio varies less than the wall-time one.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import ROOT, find_images, load_images, machine, median, report, run_in_subprocess, spread, table  # noqa: E402

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
        times["epochs"].append(time.monotonic() - started["wall"])
        times["cpu"].append(time.process_time() - started["cpu"])

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="folder of the 50,000 JPEGs (default: /tmp/cifar10-jpg/train)")
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
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

if __name__ == "__main__":
    main()
