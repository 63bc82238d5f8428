"""Time from process start to the window shown, next to `import tensorflow`.

Starts `python main.py` (no arguments: the window) with
CIFAR_STUDIO_STARTUP_PROBE=1, which makes the app print the wall-clock time
when its window is first exposed and quit (gui/app.py), and takes the time
from just before the process was started. Then times `python -c "import
tensorflow"` and `python -c "import keras"` the same way. Runs alternate, and
the medians are printed. Settings and runs go to a temporary folder; the
offscreen platform is used unless QT_QPA_PLATFORM says otherwise.

    python benchmarks/startup.py --repeat 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def time_window(env: dict) -> tuple[float, dict]:
    started = time.time()
    done = subprocess.run([sys.executable, "main.py"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"the app did not report its window:\n{done.stderr[-2000:]}")
    probe = json.loads(lines[-1])
    return probe["shown_at"] - started, probe


def time_import(module: str, env: dict) -> float:
    started = time.time()
    subprocess.run([sys.executable, "-c", f"import {module}"], cwd=REPO, env=env, check=True,
                   capture_output=True, timeout=300)
    return time.time() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="startup_"))
    env = dict(os.environ, CIFAR_STUDIO_STARTUP_PROBE="1", XDG_CONFIG_HOME=str(work / "config"),
               CIFAR_STUDIO_HOME=str(work / "store"), TF_CPP_MIN_LOG_LEVEL="2")
    env.setdefault("QT_QPA_PLATFORM", "offscreen")
    times = {"window shown (python main.py)": [], "python -c 'import tensorflow'": [],
             "python -c 'import keras'": []}
    probes = []
    for _ in range(args.repeat):
        shown, probe = time_window(env)
        times["window shown (python main.py)"].append(shown)
        probes.append(probe)
        times["python -c 'import tensorflow'"].append(time_import("tensorflow", env))
        times["python -c 'import keras'"].append(time_import("keras", env))
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.2f}; platform {env['QT_QPA_PLATFORM']}")
    for name, values in times.items():
        print(f"{name:32s} median {statistics.median(values):5.2f} s   "
              f"(min {min(values):.2f}, max {max(values):.2f}, n={len(values)})")
    imported = any(p["keras_imported"] or p["tensorflow_imported"] for p in probes)
    print(f"Keras or TensorFlow imported when the window was shown: {'yes' if imported else 'no'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
