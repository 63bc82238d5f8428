"""Time from process start to the window shown, next to `import tensorflow`.

    python benchmarks/startup.py [--repeat 5]

Starts `python main.py` (no arguments: the window) with
CIFAR_STUDIO_STARTUP_PROBE=1, which makes the app print the wall-clock time
when its window is first exposed and quit (gui/app.py), and takes the time
from just before the process was started. Then times `python -c "import
tensorflow"` and `python -c "import keras"` the same way: what a window
that waited for Keras would cost. The runs alternate; medians are printed.
Settings and runs go to a temporary folder; Qt's offscreen platform unless
QT_QPA_PLATFORM says otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import ROOT, machine, median, table  # noqa: E402


def seconds_to(command: list[str], env: dict) -> tuple[float, dict]:
    """Wall seconds until the command's window was shown (its probe line) or it ended."""
    started = time.time()
    done = subprocess.run([sys.executable, *command], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or (command == ["main.py"] and not lines):
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    probe = json.loads(lines[-1]) if lines else {}
    return probe.get("shown_at", time.time()) - started, probe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="startup_"))
    env = dict(os.environ, CIFAR_STUDIO_STARTUP_PROBE="1", XDG_CONFIG_HOME=str(work / "config"),
               CIFAR_STUDIO_HOME=str(work / "store"), TF_CPP_MIN_LOG_LEVEL="2")
    env.setdefault("QT_QPA_PLATFORM", "offscreen")
    commands = {"window shown (python main.py)": ["main.py"],
                "python -c 'import tensorflow'": ["-c", "import tensorflow"],
                "python -c 'import keras'": ["-c", "import keras"]}
    times: dict[str, list[float]] = {name: [] for name in commands}
    imported = False
    for _ in range(args.repeat):
        for name, command in commands.items():
            elapsed, probe = seconds_to(command, env)
            times[name].append(elapsed)
            imported |= bool(probe.get("keras_imported") or probe.get("tensorflow_imported"))
    window = median(times["window shown (python main.py)"])
    rows = [[name, median(values), min(values), max(values), window / median(values)]
            for name, values in times.items()]
    print(f"{args.repeat} runs each, platform {env['QT_QPA_PLATFORM']}, {machine()} at the end")
    print(table(rows, ["what", "median s", "min s", "max s", "window / this"]))
    print(f"Keras or TensorFlow imported when the window was shown: {'yes' if imported else 'no'}")


if __name__ == "__main__":
    main()
