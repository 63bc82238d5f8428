"""CIFAR Studio's command line: the same engine as the window, headless.

`main.py` hands every command line with arguments to `main()` here. Errors in
what the user gave (a setting, a dataset, a model file) are one line on
stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from cli import commands, compare, queue, resume
from cli.commands import UsageError
from engine.config import PRESETS
from engine.errors import EngineError
from engine.registry import ARCHITECTURES
from engine.text import printable

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def main(argv: list[str]) -> int:
    """Run one subcommand; the exit status."""
    # Keras logs through absl, e.g. that .h5 is a "legacy" format: the app saves
    # .h5 on purpose (and .keras beside it), so only errors are shown.
    logging.getLogger("absl").setLevel(logging.ERROR)
    args = build_parser().parse_args(argv)
    if args.store:
        os.environ["CIFAR_STUDIO_HOME"] = str(Path(args.store).expanduser())
    try:
        return args.handler(args)
    except (EngineError, UsageError) as exc:
        print(f"error: {printable(exc)}", file=sys.stderr)  # one line, whatever names a message quotes
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cifar-studio",
        description="CIFAR Studio: `python main.py` opens the window; these subcommands run the same engine "
                    "headless.",
    )
    parser.add_argument("--store", help="run store folder (default: $CIFAR_STUDIO_HOME or the user data folder)")
    parser.add_argument("--verbose", action="store_true",
                        help="also show TensorFlow's own start-up and device lines (or CIFAR_STUDIO_VERBOSE=1)")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a model and save the run")
    train.add_argument("--preset", choices=list(PRESETS),
                       help="hyperparameters, and a pretrained base's trainable layers, head and input size; "
                            f"never the architecture (default: {commands.DEFAULT_PRESET}, or none with --config)")
    train.add_argument("--model", choices=list(ARCHITECTURES),
                       help="architecture (default: simcnn, or the --config file's)")
    train.add_argument("--data", default="cifar10",
                       help="cifar10 | cifar100 | fashion_mnist (Keras download), a cifar-10-python.tar.gz "
                            "or cifar-10-batches-py folder, or an image folder (one subfolder per class)")
    train.add_argument("--config", help="a config.json to start from (e.g. a run's) instead of the defaults")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a setting, e.g. epochs=1, training.learning_rate=0.001, train_subset=5000")
    train.add_argument("--name", default="", help="a name for the run")
    train.set_defaults(handler=commands.cmd_train)

    evaluate = sub.add_parser("evaluate", help="evaluate a saved run's model on its test split")
    evaluate.add_argument("run", help="run id (or a unique prefix, or its name)")
    evaluate.add_argument("--data", help="evaluate on this dataset instead of the run's own")
    evaluate.set_defaults(handler=commands.cmd_evaluate)

    predict = sub.add_parser("predict", help="classify image files with a model file or a run's model")
    predict.add_argument("model", help="a .h5 / .keras file, or a run id")
    predict.add_argument("images", nargs="+", help="image files or folders")
    predict.add_argument("--top", type=int, default=3, help="how many classes to show (default 3)")
    predict.add_argument("--scale", default="auto", choices=("auto", "255", "1"),
                         help="pixel range the model expects (auto: 0..255 if it rescales inside itself)")
    predict.add_argument("--csv", help="write the predictions to this CSV file")
    predict.set_defaults(handler=commands.cmd_predict)

    runs = sub.add_parser("runs", help="list every saved run")
    runs.add_argument("--rebuild", action="store_true",
                      help="rebuild the index (runs.db) from the run folders first")
    runs.set_defaults(handler=commands.cmd_runs)
    show = sub.add_parser("show", help="a run's settings, history, metrics, confusion matrix and most confused "
                                       "classes")
    show.add_argument("run")
    show.set_defaults(handler=commands.cmd_show)
    explain = sub.add_parser("explain", help="write a Grad-CAM overlay: where in an image the model looked")
    explain.add_argument("model", help="a run id (or a unique prefix, or its name), or a .h5 / .keras file")
    explain.add_argument("image", help="an image file")
    explain.add_argument("--class", dest="class_", metavar="NAME_OR_INDEX",
                         help="the class to explain (default: the predicted one)")
    explain.add_argument("--out", help="the overlay PNG to write (default: IMAGE's name + -gradcam.png, here)")
    explain.add_argument("--method", default="hirescam", choices=("hirescam", "gradcam"),
                         help="how the gradient weighs the feature map: per position (default; the same as "
                              "Grad-CAM where the head pools the map) or averaged per channel (the Grad-CAM paper)")
    explain.set_defaults(handler=commands.cmd_explain)
    compare_ = sub.add_parser("compare", help="compare runs: a table, settings that differ, two runs head to "
                                              "head; --csv and --report write them to files")
    compare_.add_argument("runs", nargs="+", metavar="RUN", help="run ids (or unique prefixes, or names); the "
                                                              "first is the baseline the others are compared with")
    compare_.add_argument("--csv", help="write the runs table to this CSV file")
    compare_.add_argument("--report", help="write a report of the runs to this .html or .pdf file")
    compare_.set_defaults(handler=compare.cmd_compare)
    queue_ = sub.add_parser("queue", help="train a group of runs one after the other (e.g. the seeds' "
                                          "experiments), each saved as it ends")
    queue_.add_argument("group", help="the group's name, e.g. 'Seed 1' or 'Seed 3'")
    queue_.add_argument("--data", default="cifar10", help="the dataset, as for train")
    queue_.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting in every run of the group, e.g. model.input_size=64")
    queue_.set_defaults(handler=queue.cmd_queue)
    resume_ = sub.add_parser("resume", help="continue a stopped or interrupted run from its last whole epoch")
    resume_.add_argument("run")
    resume_.set_defaults(handler=resume.cmd_resume)
    rename = sub.add_parser("rename", help="rename a run")
    rename.add_argument("run")
    rename.add_argument("name")
    rename.set_defaults(handler=commands.cmd_rename)
    delete = sub.add_parser("delete", help="delete a run and its files")
    delete.add_argument("run")
    delete.add_argument("--force", action="store_true",
                        help="delete a run that is marked running even though its process seems alive (hung, "
                             "or on another host)")
    delete.set_defaults(handler=commands.cmd_delete)
    return parser
