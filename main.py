"""CIFAR Studio: `python main.py` opens the window; subcommands run the same
engine headless (train, evaluate, predict, runs, show, rename, delete).

Errors in what the user gave (a setting, a dataset, a model file) are one
line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import signal
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter is not for users

from engine import config as config_module  # noqa: E402  (after the environment is set)
from engine.errors import EngineError  # noqa: E402
from engine.events import Listener  # noqa: E402

EXIT_USAGE = 2
KERAS_SOURCES = ("cifar10", "cifar100", "fashion_mnist")


class UsageError(Exception):
    """Bad command-line input: printed as one line, exit status 2."""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        from gui.app import run_gui

        return run_gui(sys.argv[:1])
    # Keras logs through absl, e.g. that .h5 is a "legacy" format: the app saves
    # .h5 on purpose (and .keras beside it), so only errors are shown.
    logging.getLogger("absl").setLevel(logging.ERROR)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.store:
        os.environ["CIFAR_STUDIO_HOME"] = str(Path(args.store).expanduser())
    try:
        return args.handler(args)
    except (EngineError, UsageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cifar-studio", description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", help="run store folder (default: $CIFAR_STUDIO_HOME or the user data folder)")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a model and save the run")
    train.add_argument("--preset", default="Paper Table 1", choices=list(config_module.PRESETS))
    train.add_argument("--model", choices=config_module.ARCHITECTURES, help="architecture (default: the preset's)")
    train.add_argument("--data", default="cifar10",
                       help="cifar10 | cifar100 | fashion_mnist (Keras download), a cifar-10-python.tar.gz "
                            "or cifar-10-batches-py folder, or an image folder (one subfolder per class)")
    train.add_argument("--config", help="a config.json to start from (e.g. a run's) instead of a preset")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a setting, e.g. epochs=1, training.learning_rate=0.001, train_subset=5000")
    train.add_argument("--name", default="", help="a name for the run")
    train.set_defaults(handler=cmd_train)

    evaluate = sub.add_parser("evaluate", help="evaluate a saved run's model on its test split")
    evaluate.add_argument("run", help="run id (or a unique prefix, or its name)")
    evaluate.add_argument("--data", help="evaluate on this dataset instead of the run's own")
    evaluate.set_defaults(handler=cmd_evaluate)

    predict = sub.add_parser("predict", help="classify image files with a model file or a run's model")
    predict.add_argument("model", help="a .h5 / .keras file, or a run id")
    predict.add_argument("images", nargs="+", help="image files or folders")
    predict.add_argument("--top", type=int, default=3, help="how many classes to show (default 3)")
    predict.add_argument("--scale", default="auto", choices=("auto", "255", "1"),
                         help="pixel range the model expects (auto: 0..255 if it rescales inside itself)")
    predict.add_argument("--csv", help="write the predictions to this CSV file")
    predict.set_defaults(handler=cmd_predict)

    runs = sub.add_parser("runs", help="list every saved run")
    runs.set_defaults(handler=cmd_runs)
    show = sub.add_parser("show", help="a run's settings, history and metrics")
    show.add_argument("run")
    show.set_defaults(handler=cmd_show)
    rename = sub.add_parser("rename", help="rename a run")
    rename.add_argument("run")
    rename.add_argument("name")
    rename.set_defaults(handler=cmd_rename)
    delete = sub.add_parser("delete", help="delete a run and its files")
    delete.add_argument("run")
    delete.set_defaults(handler=cmd_delete)
    return parser


def dataset_from_argument(value: str, dataset: config_module.DatasetConfig) -> None:
    """Fill source and path from --data: a Keras dataset name or a path."""
    if value in KERAS_SOURCES:
        dataset.source, dataset.path = value, ""
        return
    path = Path(value).expanduser()
    if not path.exists():
        raise UsageError(f"--data {value}: no such file or folder (or give one of {', '.join(KERAS_SOURCES)})")
    is_archive = path.name.endswith((".tar.gz", ".tgz")) or (path.is_dir() and (path / "data_batch_1").exists())
    dataset.source = "cifar10_archive" if is_archive else "folder"
    dataset.path = str(path.resolve())


def cmd_train(args) -> int:
    from engine.runs import RunStore
    from engine.training import Trainer

    if args.config:
        try:
            config = config_module.RunConfig.from_json(Path(args.config).read_text())
        except OSError as exc:
            raise UsageError(f"--config {args.config}: {exc.strerror}") from None
    else:
        config = config_module.preset(args.preset)
    if args.model:
        config.model.architecture = args.model
    dataset_from_argument(args.data, config.dataset)
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--set {item}: expected KEY=VALUE")
        config.set(key.strip(), value.strip())
    if args.name:
        config.name = args.name
    config.check()

    store = RunStore()
    listener = ConsoleListener()
    trainer = Trainer(config, listener=listener, store=store)
    previous = signal.signal(signal.SIGINT, lambda *_: _stop_on_interrupt(trainer, previous))
    try:
        result = trainer.run()
    finally:
        signal.signal(signal.SIGINT, previous)
    if result.status == "failed":
        if result.run_id:
            print(f"run {result.run_id} failed; what was saved is kept", file=sys.stderr)
        raise EngineError(result.reason)
    record = store.get(result.run_id)
    print(f"run {record.run_id} ({record.name}) {result.status}: {result.reason}")
    if result.test_metrics:
        m = result.test_metrics
        split = store.metrics(record.run_id).get("split", "test")
        note = "" if split == "test" else " (the dataset has no test split)"
        print(f"{split} accuracy {m['accuracy']:.4f}  loss {m['loss']:.4f}  top-5 {m['top5_accuracy']:.4f}  "
              f"macro F1 {m['macro_f1']:.4f}{note}")
    print(f"model: {store.model_path(record.run_id)}")
    return 0


def _stop_on_interrupt(trainer, previous) -> None:
    """First Ctrl-C stops after the current batch and saves; a second one aborts."""
    print("\nstopping after this batch (Ctrl-C again to abort)...", file=sys.stderr)
    trainer.request_stop()
    signal.signal(signal.SIGINT, previous)


def cmd_evaluate(args) -> int:
    from engine.data import load_dataset
    from engine.evaluation import evaluate_model
    from engine.inference import Classifier
    from engine.runs import RunStore

    store = RunStore()
    record = store.get(args.run)
    config = store.config(record.run_id)
    if args.data:
        dataset_from_argument(args.data, config.dataset)
    dataset = load_dataset(config.dataset, report=ConsoleListener().on_stage)
    split, x, y = ("test", dataset.x_test, dataset.y_test) if len(dataset.y_test) else (
        "validation", dataset.x_val, dataset.y_val)
    if not len(y):
        raise UsageError("the dataset has no test or validation images to evaluate on")
    classifier = Classifier(store.model_path(record.run_id))
    evaluation = evaluate_model(classifier.model, x, y, dataset.class_names, split=split)
    if not args.data:
        store.write_json(record.run_id, "metrics.json", evaluation.summary())
        store.update(record.run_id, test_accuracy=evaluation.accuracy, test_loss=evaluation.loss)
    print(f"{record.name} on the {split} split ({len(y)} images):")
    print(format_metrics(evaluation.summary()))
    return 0


def format_metrics(summary: dict) -> str:
    lines = [
        f"accuracy {summary['accuracy']:.4f}  loss {summary['loss']:.4f}  top-5 {summary['top5_accuracy']:.4f}",
        f"{'class':<14}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>9}",
    ]
    for row in summary["per_class"]:
        lines.append(f"{row['class'][:13]:<14}{row['precision']:>10.4f}{row['recall']:>10.4f}"
                     f"{row['f1']:>10.4f}{row['support']:>9}")
    macro = summary["macro"]
    lines.append(f"{'macro':<14}{macro['precision']:>10.4f}{macro['recall']:>10.4f}{macro['f1']:>10.4f}")
    return "\n".join(lines)


def cmd_predict(args) -> int:
    from engine.inference import Classifier, image_files

    if args.top < 1:
        raise UsageError(f"--top {args.top}: must be at least 1")
    model_path = Path(args.model)
    if not model_path.exists() and model_path.suffix not in (".h5", ".keras"):
        from engine.runs import RunStore

        model_path = RunStore().model_path(args.model)
    classifier = Classifier(model_path, scale=args.scale)
    files = image_files(args.images)
    if not files:
        raise UsageError("no image files found in " + ", ".join(args.images))
    results = classifier.classify(files, top_k=args.top)
    for result in results:
        if result.error:
            print(f"{result.path}: error: {result.error}")
        else:
            best = "  ".join(f"{name} {p:.1%}" for name, p in zip(result.labels, result.probabilities))
            print(f"{result.path}: {best}")
    if args.csv:
        with open(args.csv, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "error"] + [c for i in range(args.top) for c in (f"class_{i + 1}",
                                                                                      f"probability_{i + 1}")])
            for result in results:
                pairs = [v for pair in zip(result.labels, result.probabilities) for v in pair]
                writer.writerow([result.path, result.error] + pairs)
        print(f"wrote {args.csv}")
    return 1 if all(r.error for r in results) else 0


def cmd_runs(args) -> int:
    from engine.runs import RunStore

    store = RunStore()
    records = store.list_runs()
    if not records:
        print(f"no runs yet in {store.root}")
        return 0
    header = f"{'id':<23} {'name':<28} {'model':<11} {'status':<11} {'epochs':>7} {'test acc':>9} {'time':>8}"
    print(header)
    print("-" * len(header))
    for r in records:
        accuracy = f"{r.test_accuracy:.4f}" if r.test_accuracy is not None else "-"
        print(f"{r.run_id:<23} {r.name[:28]:<28} {r.model:<11} {r.status:<11} "
              f"{f'{r.epochs_done}/{r.epochs}':>7} {accuracy:>9} {format_seconds(r.train_seconds):>8}")
    return 0


def cmd_show(args) -> int:
    from engine.runs import RunStore

    store = RunStore()
    record = store.get(args.run)
    print(f"run {record.run_id}: {record.name}")
    print(f"status {record.status} ({record.reason}); {record.epochs_done}/{record.epochs} epochs; "
          f"{record.params_total:,} parameters ({record.params_trainable:,} trainable)")
    print(f"folder {store.run_dir(record.run_id)}")
    print("settings:")
    print(store.config(record.run_id).to_json())
    history = store.history(record.run_id)
    if history:
        keys = [k for k in ("loss", "accuracy", "val_loss", "val_accuracy") if k in history]
        print("epoch " + " ".join(f"{k:>12}" for k in keys))
        for i in range(len(history[keys[0]])):
            print(f"{i + 1:>5} " + " ".join(f"{history[k][i]:>12.4f}" for k in keys))
    metrics = store.metrics(record.run_id)
    if metrics:
        print(f"{metrics['split']} split, {metrics['images']} images:")
        print(format_metrics(metrics))
    return 0


def cmd_rename(args) -> int:
    from engine.runs import RunStore

    RunStore().rename(args.run, args.name)
    print(f"renamed to {args.name}")
    return 0


def cmd_delete(args) -> int:
    from engine.runs import RunStore

    store = RunStore()
    record = store.get(args.run)
    store.delete(record.run_id)
    print(f"deleted run {record.run_id} ({record.name})")
    return 0


def format_seconds(seconds: float) -> str:
    seconds = int(seconds or 0)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class ConsoleListener(Listener):
    """A progress bar for the current epoch and a line per finished epoch."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout
        self.interactive = self.stream.isatty()
        self.partial = False
        self.last_stage_print = 0.0

    def _line(self, text: str) -> None:
        if self.partial:
            self.stream.write("\n")
            self.partial = False
        self.stream.write(text + "\n")
        self.stream.flush()

    def on_stage(self, event):
        now = time.monotonic()
        if event.fraction is None or event.fraction >= 1 or now - self.last_stage_print > 5:
            self.last_stage_print = now
            self._line(event.text)

    def on_run_started(self, event):
        validation = "validation: "
        validation += ("partial estimate (validation steps set)" if event.validation_partial
                       else f"{event.val_size} images")
        self._line(f"run {event.run_id}: {event.train_size} training images, {event.steps_per_epoch} steps "
                   f"of {event.batch_size} per epoch, {event.epochs} epochs; {validation}; "
                   f"{event.params['total']:,} parameters ({event.params['trainable']:,} trainable)")

    def on_progress(self, event):
        if not self.interactive:
            return
        width = 24
        filled = int(width * event.batch / max(event.steps, 1))
        bar = "=" * filled + (">" if filled < width else "") + " " * (width - filled - 1)
        metrics = "  ".join(f"{k} {v:.4f}" for k, v in event.logs.items() if k in ("loss", "accuracy"))
        self.stream.write(f"\rEpoch {event.epoch}/{event.epochs} [{bar}] {event.batch}/{event.steps}  {metrics}  "
                          f"{event.images_per_second:,.0f} img/s  ETA {format_seconds(event.eta)} ")
        self.stream.flush()
        self.partial = True

    def on_epoch_ended(self, event):
        shown = ("loss", "accuracy", "val_loss", "val_accuracy")
        metrics = "  ".join(f"{k} {event.logs[k]:.4f}" for k in shown if k in event.logs)
        self._line(f"Epoch {event.epoch}/{event.epochs}  {metrics}  ({event.epoch_seconds:.1f} s)")

    def on_run_ended(self, event):
        if self.partial:
            self._line("")

    def on_log(self, text):
        self._line(text)


if __name__ == "__main__":
    sys.exit(main())
