"""`main.py resume RUN`: continue a stopped or interrupted run from its last whole epoch.

The same run goes on (same id, folder and history) to its planned epochs and
is evaluated at the end like any run; Ctrl-C stops it as it stops `train`.
A run that cannot be resumed is refused with one line saying why, untouched.
"""

from __future__ import annotations

from cli.commands import open_store, train_and_report
from cli.console import ConsoleListener


def cmd_resume(args) -> int:
    from engine.training import Trainer

    store = open_store()
    trainer = Trainer.resume(args.run, listener=ConsoleListener(), store=store)
    return train_and_report(trainer, store, "what was saved is kept (resume it again from its last epoch)")
