"""The subcommands: each takes the parsed arguments and returns the exit status.

Keras and the run store are imported inside the commands that need them, so
`--help` and a mistyped argument answer at once.
"""

from __future__ import annotations

import csv
import re
import signal
import sys
from pathlib import Path

from cli.console import ConsoleListener
from engine.config import DatasetConfig, RunConfig, apply_preset
from engine.errors import ConfigError, EngineError
from engine.text import format_seconds, printable, valid_text

DEFAULT_PRESET = "Paper Table 1"
EXIT_INTERRUPTED = 130  # as a shell reports a command ended by Ctrl-C
KERAS_SOURCES = ("cifar10", "cifar100", "fashion_mnist")
MOST_CONFUSED = 10  # pairs `show` prints
CONFUSION_PRINT_LIMIT = 30  # classes; a bigger matrix is too wide for a terminal
NAME_WIDTH = 14  # the class-name column of the tables
OVERLAY_MIN_SIDE = 256  # pixels: `explain` enlarges a 32x32 image so it can be seen


class UsageError(Exception):
    """Bad command-line input: printed as one line, exit status 2."""


def dataset_from_argument(value: str, dataset: DatasetConfig) -> None:
    """Fill source and path from --data: a Keras dataset name or a path."""
    if value in KERAS_SOURCES:
        dataset.source, dataset.path = value, ""
        return
    path = Path(value).expanduser()
    if not path.exists():
        raise UsageError(f"--data {printable(value)}: no such file or folder "
                         f"(or give one of {', '.join(KERAS_SOURCES)})")
    is_archive = path.name.endswith((".tar.gz", ".tgz")) or (path.is_dir() and (path / "data_batch_1").exists())
    dataset.source = "cifar10_archive" if is_archive else "folder"
    dataset.path = str(path.resolve())


def train_config(args) -> RunConfig:
    """The settings `train` runs with: the --config file or the defaults, the
    architecture of --model, the preset (its hyperparameters only), then --set."""
    if args.config:
        try:
            config = RunConfig.from_json(Path(args.config).read_text(encoding="utf-8"))
        except OSError as exc:
            raise UsageError(f"--config {args.config}: {exc.strerror}") from None
        except UnicodeDecodeError as exc:  # settings files are JSON, which is UTF-8 text
            raise UsageError(f"--config {args.config}: not UTF-8 text (byte {exc.start} cannot be read); "
                             "give a settings file saved by CIFAR Studio or as UTF-8 JSON") from None
        except ConfigError as exc:  # which file the bad setting is in
            raise ConfigError(f"--config {args.config}: {exc}") from None
    else:
        config = RunConfig()
    if args.model:
        config.model.architecture = args.model
    preset = args.preset or (None if args.config else DEFAULT_PRESET)
    if preset:
        config = apply_preset(config, preset)
    dataset_from_argument(args.data, config.dataset)
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--set {item}: expected KEY=VALUE")
        config.set(key.strip(), value.strip())
    if args.name:
        config.name = args.name
    config.check()
    return config


def open_store():
    """The run store, with anything it had to repair said on stderr."""
    from engine.runs import RunStore

    store = RunStore()
    for notice in store.notices:
        print(f"note: {printable(notice)}", file=sys.stderr)
    return store


def cmd_train(args) -> int:
    from engine.system import gpu_advice
    from engine.training import Trainer

    config = train_config(args)
    advice = gpu_advice()  # "" at once without an NVIDIA GPU
    if advice:
        print(f"warning: {advice}", file=sys.stderr)
    if config.training.distribution == "multiworker":
        from engine.distribute import multiworker_cluster

        if not multiworker_cluster().chief:  # the chief writes the run; this worker leaves the store alone
            return train_and_report(Trainer(config, listener=ConsoleListener()), None)
    store = open_store()
    listener = ConsoleListener()
    trainer = Trainer(config, listener=listener, store=store)
    return train_and_report(trainer, store)


def train_and_report(trainer, store, failed_note: str = "what was saved is kept") -> int:
    """Run a Trainer with the CLI's Ctrl-C handling and print how the run ended (`train` and `resume`)."""
    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, _Interrupts(trainer, previous))
    try:
        result = trainer.run()
    finally:
        signal.signal(signal.SIGINT, previous)
    if result.status == "failed":
        if result.run_id:
            print(f"run {result.run_id} failed; {failed_note}", file=sys.stderr)
        raise EngineError(result.reason)
    if not result.run_id:  # Ctrl-C while the data was loading: no run was made, none is reported
        print(f"{result.status} before training started: no run was made", file=sys.stderr)
        return EXIT_INTERRUPTED
    cluster = trainer.cluster
    if cluster is not None and not cluster.chief:
        print(f"worker {cluster.index} of {len(cluster.workers)} {result.status}: {printable(result.reason)}; "
              f"the chief (worker 0) wrote the run")
        return 0
    record = store.get(result.run_id)
    print(f"run {record.run_id} ({printable(record.name)}) {result.status}: {printable(result.reason)}")
    if result.test_metrics:
        m = result.test_metrics
        metrics = store.metrics(record.run_id)
        split = metrics.get("split", "test")
        note = "" if split == "test" else " (the dataset has no test split)"
        print(f"{split} accuracy {m['accuracy']:.4f}  loss {m['loss']:.4f}  top-5 {m['top5_accuracy']:.4f}  "
              f"macro F1 {m['macro_f1']:.4f}{note}")
        if metrics.get("without_tta"):
            print(tta_line(metrics))
    print(f"model: {store.model_path(record.run_id)}")
    return 0


class _Interrupts:
    """Ctrl-C during `train`: the first stops after the current batch and the
    stopped run is saved and evaluated; the second skips that evaluation (the
    run is kept and `evaluate RUN` can do it later); a third aborts."""

    def __init__(self, trainer, previous):
        self.trainer = trainer
        self.previous = previous
        self.count = 0

    def __call__(self, *_):
        self.count += 1
        cluster = self.trainer.cluster
        if cluster is not None:  # the workers train in step: one cannot stop alone and go on to evaluate
            signal.signal(signal.SIGINT, self.previous)
            print(f"\nstopping worker {cluster.index}: the other workers end with an error when they notice; "
                  "the chief's run keeps its last epoch's checkpoint (main.py evaluate RUN evaluates it)",
                  file=sys.stderr)
            raise KeyboardInterrupt
        if self.count == 1:
            print("\nstopping after this batch; the run is kept (Ctrl-C again to skip its evaluation)...",
                  file=sys.stderr)
        else:
            print("\nskipping the evaluation; the run is kept (Ctrl-C again to abort)...", file=sys.stderr)
            signal.signal(signal.SIGINT, self.previous)
        self.trainer.request_stop()


def cmd_evaluate(args) -> int:
    """Evaluate a run's model (the final one, else its best or last
    checkpoint: an interrupted run too) on its whole test split; with --data
    on another dataset, without changing the run."""
    from engine.datasets import load_dataset
    from engine.evaluation import evaluate_run

    store = open_store()
    record = store.get(args.run)
    report = ConsoleListener().on_stage
    dataset = None
    if args.data:
        config = store.config(record.run_id)
        dataset_from_argument(args.data, config.dataset)
        dataset = load_dataset(config.dataset, report=report)
    evaluation = evaluate_run(store, record.run_id, dataset=dataset, report=report, save=not args.data)
    print(f"{printable(record.name)} on the {evaluation.split} split ({len(evaluation.y_true)} images):")
    print(format_metrics(evaluation.summary()))
    return 0


def tta_line(summary: dict) -> str:
    """With and without test-time flip averaging, in one line (metrics.json's "without_tta")."""
    plain = summary["without_tta"]
    return (f"with test-time flip averaging (the figures above; Classify does the same); without it, as plain "
            f"Keras' predict on model.h5 gives: accuracy {plain['accuracy']:.4f}  loss {plain['loss']:.4f}")


def format_metrics(summary: dict) -> str:
    lines = [
        f"accuracy {summary['accuracy']:.4f}  loss {summary['loss']:.4f}  top-5 {summary['top5_accuracy']:.4f}",
    ]
    if summary.get("without_tta"):
        lines.append(tta_line(summary))
    lines.append(f"{'class':<14}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>9}")
    for row in summary["per_class"]:
        lines.append(f"{printable(row['class'])[:13]:<14}{row['precision']:>10.4f}{row['recall']:>10.4f}"
                     f"{row['f1']:>10.4f}{row['support']:>9}")
    macro = summary["macro"]
    lines.append(f"{'macro':<14}{macro['precision']:>10.4f}{macro['recall']:>10.4f}{macro['f1']:>10.4f}")
    return "\n".join(lines)


def cmd_predict(args) -> int:
    from engine.inference import Classifier, check_csv_path, image_files

    if args.top < 1:
        raise UsageError(f"--top {args.top}: must be at least 1")
    if args.csv:  # before the model is loaded: a bad path would otherwise lose the whole batch's work
        try:
            check_csv_path(args.csv, inputs=[p for p in args.images if not Path(p).is_dir()])
        except EngineError as exc:
            raise UsageError(f"--csv {printable(args.csv)}: {exc}") from None
    model_path = Path(args.model)
    if not model_path.exists() and model_path.suffix not in (".h5", ".keras"):
        store = open_store()
        model_path = store.evaluation_model(store.get(args.model).run_id)
    classifier = Classifier(model_path, scale=args.scale)
    files = image_files(args.images)
    if not files:
        raise UsageError("no image files found in " + ", ".join(printable(p) for p in args.images))
    results = classifier.classify(files, top_k=args.top)
    for result in results:
        if result.error:
            print(f"{printable(result.path)}: error: {printable(result.error)}")
        else:
            best = "  ".join(f"{printable(name)} {p:.1%}" for name, p in zip(result.labels, result.probabilities))
            print(f"{printable(result.path)}: {best}")
    if args.csv:
        with open(args.csv, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "error"] + [c for i in range(args.top) for c in (f"class_{i + 1}",
                                                                                      f"probability_{i + 1}")])
            for result in results:
                pairs = [v for pair in zip(result.labels, result.probabilities) for v in pair]
                writer.writerow([valid_text(str(result.path)), valid_text(result.error or "")] + pairs)
        print(f"wrote {printable(args.csv)}")
    return 1 if all(r.error for r in results) else 0


def cmd_runs(args) -> int:
    store = open_store()
    seen = len(store.notices)
    if args.rebuild:
        print(store.rebuild())
        seen = len(store.notices)
    records = store.list_runs()
    seen = print_new_notices(store, seen)
    if not records:
        print(f"no runs yet in {store.root}")
        return 0
    header = f"{'id':<23} {'name':<28} {'model':<11} {'status':<11} {'epochs':>7} {'test acc':>9} {'time':>8}"
    print(header)
    print("-" * len(header))
    for r in records:
        accuracy = f"{r.test_accuracy:.4f}" if r.test_accuracy is not None else "-"
        print(f"{r.run_id:<23} {printable(r.name)[:28]:<28} {printable(r.model)[:11]:<11} "
              f"{printable(r.status)[:11]:<11} {f'{r.epochs_done}/{r.epochs}':>7} {accuracy:>9} "
              f"{format_seconds(r.train_seconds):>8}")
    return 0


def print_new_notices(store, seen: int) -> int:
    """The store's notices from the `seen`th on, on stderr; how many it has now."""
    for notice in store.notices[seen:]:
        print(f"note: {printable(notice)}", file=sys.stderr)
    return len(store.notices)


def cmd_show(args) -> int:
    """A run as far as its files can be read: a damaged file gets one line
    saying which and what to do, and the rest is still shown."""
    store = open_store()
    seen = len(store.notices)
    record = store.get(args.run)
    print(f"run {record.run_id}: {printable(record.name)}")
    print(f"status {record.status} ({printable(record.reason)}); {record.epochs_done}/{record.epochs} epochs; "
          f"{record.params_total:,} parameters ({record.params_trainable:,} trainable)")
    print(f"folder {printable(store.run_dir(record.run_id))}")
    try:
        settings = store.config(record.run_id).to_json()
    except EngineError as exc:
        settings = f"(config.json of this run cannot be read: {printable(exc)})"
    print("settings:")
    print(settings)
    history, problem = store.read_history(record.run_id)
    keys = [k for k in ("loss", "accuracy", "val_loss", "val_accuracy") if k in history]
    if keys and history.get("epoch"):
        print("epoch " + " ".join(f"{k:>12}" for k in keys))
        for i, epoch in enumerate(history["epoch"]):
            print(f"{int(epoch) + 1:>5} " + " ".join(f"{history[k][i]:>12.4f}" for k in keys))
    if problem:
        print(f"damaged: {printable(problem)}")
    metrics, problem = store.read_metrics(record.run_id)
    if metrics:
        try:
            text = f"{metrics['split']} split, {metrics['images']} images:\n{format_metrics(metrics)}"
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            path = store.run_dir(record.run_id) / "metrics.json"
            what = f"it has no '{printable(exc.args[0])}'" if isinstance(exc, KeyError) else printable(exc)[:80]
            problem = f"{path} is damaged ({what}); evaluating the run again rewrites it"
        else:
            print(text)
    if problem:
        print(f"damaged: {printable(problem)}")
    try:
        predictions = store.predictions(record.run_id)
    except EngineError as exc:
        predictions = {}
        print(f"damaged: {printable(exc)}; evaluating the run again rewrites it")
    if "confusion" in predictions:
        from engine.evaluation import most_confused

        confusion = predictions["confusion"]
        names = [printable(name) for name in predictions.get("class_names", [])] or [
            f"class {i}" for i in range(len(confusion))]
        print("confusion matrix (rows: true class, columns: predicted):")
        print(format_confusion(confusion, names))
        pairs = most_confused(confusion, names, top=MOST_CONFUSED)
        if pairs:
            print("most confused (true -> predicted: images):")
            for true_name, predicted_name, count in pairs:
                print(f"  {true_name} -> {predicted_name}: {count:,}")
    print_new_notices(store, seen)
    return 0


def format_confusion(confusion, class_names: list[str]) -> str:
    """The confusion matrix as a table: a row per true class led by its name, a column per predicted
    class headed by its name cut to the column's width."""
    classes = len(confusion)
    if classes > CONFUSION_PRINT_LIMIT:
        return (f"({classes} classes: too many to print here; the Results tab shows it, and predictions.npz "
                "in the run's folder holds it)")
    width = max(7, len(f"{int(confusion.max()) if classes else 0:,}") + 1)
    heads = [short_name(name, width - 1) for name in class_names]
    if len(set(heads)) < len(heads):  # still ambiguous: number the columns
        heads = [f"#{i}" for i in range(classes)]
    lines = [" " * NAME_WIDTH + "".join(f"{head:>{width}}" for head in heads)]
    for name, row in zip(class_names, confusion):
        lines.append(f"{name[:NAME_WIDTH - 1]:<{NAME_WIDTH}}" + "".join(f"{int(n):>{width},}" for n in row))
    return "\n".join(lines)


def short_name(name: str, size: int) -> str:
    """A class name cut to `size` characters, each of its words kept apart ("bottom_left" -> "bot_le")."""
    if len(name) <= size:
        return name
    words = [word for word in re.split(r"[_\s-]+", name) if word]
    if len(words) < 2:
        return name[:size]
    per = max(1, -(-(size - len(words) + 1) // len(words)))  # rounded up: the cut below trims the last word
    return "_".join(word[:per] for word in words)[:size]


def cmd_explain(args) -> int:
    """Grad-CAM of one image: which class, how likely, at which layer; the overlay as a PNG."""
    from PIL import Image

    from engine.datasets import decode_image
    from engine.explain import grad_cam, overlay
    from engine.inference import load_model_safely, read_class_names

    model_path = Path(args.model)
    if not model_path.exists() and model_path.suffix not in (".h5", ".keras", ".hdf5"):
        store = open_store()
        model_path = store.evaluation_model(store.get(args.model).run_id)
    image_path = Path(args.image)
    out = Path(args.out) if args.out else Path(f"{image_path.stem}-gradcam.png")
    check_png_path(out, image_path)
    model = load_model_safely(model_path)
    classes = int(model.output_shape[-1])
    names = read_class_names(model_path) or []
    if len(names) != classes:
        names = [f"class {i}" for i in range(classes)]
    class_index = None if args.class_ is None else class_argument(args.class_, names)
    shape = model.input_shape
    fixed = isinstance(shape, tuple) and len(shape) == 4 and None not in shape[1:3]
    size = (int(shape[2]), int(shape[1])) if fixed else None  # decode_image takes (width, height)
    image = decode_image(image_path, size=size)
    cam = grad_cam(model, image, class_index, method=args.method)
    picture = overlay(image, cam.heatmap, min_side=OVERLAY_MIN_SIDE)
    try:
        Image.fromarray(picture).save(out, format="PNG")
    except OSError as exc:
        raise UsageError(f"--out {printable(out)}: cannot write it: {exc.strerror or exc}") from None
    predicted = int(cam.probabilities.argmax())
    print(f"explained '{printable(names[cam.class_index])}' (class {cam.class_index}), probability "
          f"{cam.probability:.1%}" + ("" if predicted == cam.class_index else
                                      f"; the model predicts {printable(names[predicted])} "
                                      f"({cam.probabilities[predicted]:.1%})"))
    print(f"layer {cam.layer_name} ({cam.feature_size[0]}x{cam.feature_size[1]} feature map, {cam.method})"
          + (f"; {cam.note}" if cam.note else ""))
    print(f"wrote {printable(out)}")
    return 0


def check_png_path(out: Path, image: Path) -> None:
    """Refuse an --out that cannot take the overlay, before the model is loaded
    and the Grad-CAM computed (the explained image itself among the cases)."""
    from engine.inference import check_output_file

    shown = f"--out {printable(out)}"
    if out.suffix.lower() != ".png" or out.is_dir():
        raise UsageError(f"{shown}: the overlay is written as PNG; give a file name ending in .png")
    try:
        check_output_file(out, "overlay", inputs=[image] if image.exists() else [])
    except EngineError as exc:
        raise UsageError(f"{shown}: {exc}") from None


def class_argument(value: str, names: list[str]) -> int:
    """--class: a class name (any case) or an index."""
    text = value.strip()
    lowered = [name.lower() for name in names]
    if text.lower() in lowered:
        return lowered.index(text.lower())
    if text.lstrip("-").isdigit():
        index = int(text)
        if 0 <= index < len(names):
            return index
        raise UsageError(f"--class {printable(value)}: the model has {len(names)} classes (0..{len(names) - 1})")
    raise UsageError(f"--class {printable(value)}: no such class; the classes are "
                     f"{', '.join(printable(name) for name in names)}")


def cmd_rename(args) -> int:
    open_store().rename(args.run, args.name)
    print(f"renamed to {printable(args.name)}")
    return 0


def cmd_delete(args) -> int:
    store = open_store()
    record = store.get(args.run, include_gone=True)
    training = store.still_training(record)
    if training and not args.force:
        raise UsageError(f"run {record.run_id} ({printable(record.name)}) is still training ({training}); stop it "
                         f"first, or if it is stuck, `delete --force {record.run_id}` deletes it anyway")
    if training:
        print(f"run {record.run_id} is marked running by {training}; --force: deleting it and its folder anyway "
              "(if that process goes on, end it: it may write to the folder again)")
    print(store.delete(record.run_id, force=args.force))
    return 0
