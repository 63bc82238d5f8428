"""`main.py queue GROUP`: train a group of runs one after the other."""

from __future__ import annotations

import signal
import sys

from cli.commands import dataset_from_argument, open_store
from cli.console import ConsoleListener
from engine.config import RunConfig
from engine.errors import EngineError
from engine.groups import group_configs, run_group
from engine.text import format_seconds, printable

NAME_WIDTH = 44  # the summary's name column: "Seed 3 · VGG16 fine-tuned (top 10 layers)" fits


def cmd_queue(args) -> int:
    """Every run of the group with the console listener, as `train` runs one;
    a failed run does not end the queue: it is reported at the end (exit 2)."""
    base = RunConfig()
    dataset_from_argument(args.data, base.dataset)
    configs = group_configs(args.group, base, args.set)  # every setting checked before anything trains
    print(f"{printable(args.group)}: {len(configs)} runs, one after the other, each saved as it ends:")
    for number, config in enumerate(configs, 1):
        print(f"  {number}. {printable(config.name)}")
    store = open_store()
    listener = QueueListener()
    previous = signal.getsignal(signal.SIGINT)
    interrupts = _QueueInterrupts(previous)

    def starting(trainer) -> None:
        number = interrupts.started + 1
        listener.on_log(f"\n[{number}/{len(configs)}] {trainer.config.name}")
        interrupts.watch(trainer)

    signal.signal(signal.SIGINT, interrupts)
    try:
        results = run_group(configs, store, listener, should_stop=interrupts.stopping, on_trainer=starting)
    finally:
        signal.signal(signal.SIGINT, previous)
    print()
    print(summary(configs, results, store))
    if len(results) < len(configs):
        print(f"the queue was cancelled: {len(configs) - len(results)} of {len(configs)} runs not started")
    failed = [(config.name, result.reason) for config, result in zip(configs, results) if result.status == "failed"]
    if failed:
        names = ", ".join(f"'{name}'" for name, _ in failed)
        raise EngineError(f"{len(failed)} of {len(configs)} runs of '{args.group}' failed ({names}); the first "
                          f"because: {failed[0][1]}")
    return 0


class QueueListener(ConsoleListener):
    """The console listener of `train`, and a line as each run ends: a run
    that failed overnight says why where it happened."""

    def on_run_ended(self, event):
        super().on_run_ended(event)
        run = f"run {event.run_id}" if event.run_id else "the run"
        self._line(f"{run} {event.status}: {event.reason}")


def summary(configs: list[RunConfig], results: list, store) -> str:
    """The table printed at the end: one row per run of the group, those
    not started included."""
    header = f"{'name':<{NAME_WIDTH}} {'status':<10} {'test acc':>9} {'test loss':>10} {'time':>8}"
    lines = [header, "-" * len(header)]
    for number, config in enumerate(configs):
        result = results[number] if number < len(results) else None
        status, accuracy, loss, seconds = "not run", "-", "-", None
        if result is not None:
            status, seconds = result.status, result.elapsed
            if result.test_metrics:
                accuracy, loss = f"{result.test_metrics['accuracy']:.4f}", f"{result.test_metrics['loss']:.4f}"
            if result.run_id:
                seconds = store.get(result.run_id).train_seconds or seconds
        shown = format_seconds(seconds) if seconds is not None else "-"
        lines.append(f"{printable(config.name)[:NAME_WIDTH]:<{NAME_WIDTH}} {status:<10} {accuracy:>9} {loss:>10} "
                     f"{shown:>8}")
    return "\n".join(lines)


class _QueueInterrupts:
    """Ctrl-C during `queue`: the first stops the current run after its
    batch (it is saved and evaluated) and cancels the runs after it; the
    second skips that run's evaluation (the run is kept); a third aborts."""

    def __init__(self, previous):
        self.previous = previous
        self.trainer = None
        self.started = 0
        self.count = 0

    def watch(self, trainer) -> None:
        self.trainer = trainer
        self.started += 1
        if self.count:  # Ctrl-C came between two runs: this one stops before it trains
            trainer.request_stop()

    def stopping(self) -> bool:
        return self.count > 0

    def __call__(self, *_):
        self.count += 1
        if self.count == 1:
            print("\nstopping this run after its batch; it is kept, and the rest of the queue is cancelled "
                  "(Ctrl-C again to skip its evaluation)...", file=sys.stderr)
        else:
            print("\nskipping the evaluation; the run is kept (Ctrl-C again to abort)...", file=sys.stderr)
            signal.signal(signal.SIGINT, self.previous)
        if self.trainer is not None:
            self.trainer.request_stop()
