"""CIFAR Studio's entry point: `python main.py` opens the window; with a
subcommand (train, evaluate, predict, runs, show, rename, delete) it runs the
command line in cli/, the same engine headless.
"""

from __future__ import annotations

import os
import sys


def _quiet_unless_verbose(argv: list[str]) -> None:
    """Before anything imports TensorFlow: its start-up chatter is not for
    users (--verbose or CIFAR_STUDIO_VERBOSE=1 shows it)."""
    from engine.system import VERBOSE_ENV, quiet_tensorflow_start

    if "--verbose" in argv[: argv.index("--") if "--" in argv else len(argv)]:
        os.environ[VERBOSE_ENV] = "1"
    quiet_tensorflow_start()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    _quiet_unless_verbose(argv)
    if not [arg for arg in argv if arg != "--verbose"]:
        from gui.app import run_gui

        return run_gui(sys.argv[:1])
    from cli import main as run_cli

    return run_cli(argv)


if __name__ == "__main__":
    sys.exit(main())
