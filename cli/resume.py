"""`main.py resume RUN`: continue a stopped or interrupted run from its last whole epoch.

The same run goes on (same id, folder and history) to its planned epochs and
is evaluated at the end like any run; Ctrl-C stops it as it stops `train`.
A run that cannot be resumed is refused with one line saying why, untouched.
"""

from __future__ import annotations

import signal
import sys

from cli.commands import _Interrupts, open_store
from cli.console import ConsoleListener
from engine.errors import EngineError
from engine.text import printable


def cmd_resume(args) -> int:
    from engine.training import Trainer

    store = open_store()
    trainer = Trainer.resume(args.run, listener=ConsoleListener(), store=store)
    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, _Interrupts(trainer, previous))
    try:
        result = trainer.run()
    finally:
        signal.signal(signal.SIGINT, previous)
    if result.status == "failed":
        if result.run_id:
            print(f"run {result.run_id} failed; what was saved is kept (resume it again from its last epoch)",
                  file=sys.stderr)
        raise EngineError(result.reason)
    record = store.get(result.run_id)
    print(f"run {record.run_id} ({printable(record.name)}) {result.status}: {printable(result.reason)}")
    if result.test_metrics:
        m = result.test_metrics
        print(f"{result.evaluated_split} accuracy {m['accuracy']:.4f}  loss {m['loss']:.4f}  "
              f"top-5 {m['top5_accuracy']:.4f}  macro F1 {m['macro_f1']:.4f}")
    print(f"model: {store.model_path(record.run_id)}")
    return 0
