"""CIFAR Studio's entry point: `python main.py` opens the window; with a
subcommand (train, evaluate, predict, runs, show, rename, delete) it runs the
command line in cli/, the same engine headless.
"""

from __future__ import annotations

import os
import sys

# Set before anything imports TensorFlow: its start-up chatter is not for users.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        from gui.app import run_gui

        return run_gui(sys.argv[:1])
    from cli import main as run_cli

    return run_cli(argv)


if __name__ == "__main__":
    sys.exit(main())
