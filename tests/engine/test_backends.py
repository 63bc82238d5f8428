"""The engine stays backend-neutral: a small training under KERAS_BACKEND=torch.

Runs in a subprocess, since Keras picks its backend once per process. Skipped
where torch is not installed (CI installs torch==2.13.0 in .ci/run).
"""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

HERE = Path(__file__).parent
ROOT = HERE.parents[1]

SCRIPT = textwrap.dedent("""
    import json, sys
    sys.path[:0] = [{root!r}, {here!r}]
    import keras
    import numpy as np
    from engine.config import preset
    from engine.runs import RunStore
    from engine.training import Trainer
    from toydata import toy_dataset

    def config(**training):
        c = preset("Paper Table 1")
        c.name = "torch"
        t = c.training
        t.epochs, t.validation_steps, t.optimizer, t.learning_rate, t.batch_size = 3, 0, "adam", 2e-3, 16
        t.steps_per_epoch = 7  # 10 batches a pass: epochs cross passes
        for key, value in training.items():
            setattr(t, key, value)
        return c

    store = RunStore({store!r})
    trainer = Trainer(config(), store=store, dataset=toy_dataset())
    result = trainer.run()
    plain = keras.models.load_model(store.model_path(result.run_id)) if result.status == "finished" else None
    mirrored = Trainer(config(distribution="mirrored"), store=store, dataset=toy_dataset()).run()
    print("RESULT" + json.dumps({{
        "backend": keras.backend.backend(), "status": result.status, "reason": result.reason,
        "accuracy": result.test_metrics.get("accuracy"),
        "steps": int(keras.ops.convert_to_numpy(trainer.model.optimizer.iterations)),
        "loads": plain is not None and plain.count_params() == trainer.model.count_params(),
        "mirrored": [mirrored.status, mirrored.reason],
    }}))
""")


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
def test_a_small_training_runs_on_the_torch_backend(tmp_path):
    script = SCRIPT.format(root=str(ROOT), here=str(HERE), store=str(tmp_path))
    env = {**os.environ, "KERAS_BACKEND": "torch", "CUDA_VISIBLE_DEVICES": ""}
    process = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, env=env)
    lines = [line for line in process.stdout.splitlines() if line.startswith("RESULT")]
    assert process.returncode == 0 and lines, process.stderr[-3000:]
    out = json.loads(lines[0][len("RESULT"):])

    assert out["backend"] == "torch"
    assert out["status"] == "finished", out["reason"]
    assert out["accuracy"] > 0.6  # four classes: chance is 0.25
    assert out["steps"] == 21  # every epoch has its 7 steps
    assert out["loads"]
    status, reason = out["mirrored"]
    assert status == "failed" and "needs the TensorFlow or JAX backend" in reason
