"""`training.distribution=multiworker`: two `main.py train` workers on 127.0.0.1
train one run together (TensorFlow's MultiWorkerMirroredStrategy, TF_CONFIG)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import main
from engine.config import RunConfig
from engine.distribute import multiworker_cluster, weights_digest
from engine.errors import ConfigError
from engine.runs import RunStore
from engine.training import Trainer
from toydata import write_toy_folder


def _tf_config(workers, index):
    return json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})


def test_tf_config_is_read_and_bad_ones_are_refused_with_what_to_set():
    cluster = multiworker_cluster({"TF_CONFIG": _tf_config(["a:1", "b:2"], 1)})
    assert cluster.workers == ("a:1", "b:2") and cluster.index == 1 and not cluster.chief
    assert multiworker_cluster({"TF_CONFIG": _tf_config(["a:1", "b:2"], 0)}).chief
    for environ, words in [
        ({}, "needs TF_CONFIG"),
        ({"TF_CONFIG": "{not json"}, "not a cluster TensorFlow can use"),
        ({"TF_CONFIG": json.dumps({"cluster": {"worker": ["a:1"]}})}, "not a cluster TensorFlow can use"),
        ({"TF_CONFIG": _tf_config(["a:1", "b:2"], 2)}, "index"),
        ({"TF_CONFIG": _tf_config([], 0)}, "host:port"),
        ({"TF_CONFIG": json.dumps({"cluster": {"worker": ["a:1"], "ps": ["c:3"]},
                                   "task": {"type": "worker", "index": 0}})}, "other jobs"),
    ]:
        with pytest.raises(ConfigError, match=words):
            multiworker_cluster(environ)


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def test_two_workers_train_one_run_in_step_and_only_the_chief_writes_it(tmp_path):
    """Two replicas; both workers end with the same weights (the digest each
    prints is that of the chief's saved model, read back by plain Keras),
    equal within float tolerance to one process's run on the same global
    batch; the second worker leaves no store. The CNN: SimCNN's batch
    normalization, synchronized across the workers, computes the batch's
    moments in another order, and its weights differ from one process's by
    up to 2e-4 after an epoch (the two workers' still match each other)."""
    import keras

    data = write_toy_folder(tmp_path / "toy", splits=(("train", 96, 1), ("test", 32, 2)))
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    stores = [tmp_path / "store0", tmp_path / "store1"]
    command = [sys.executable, str(Path(main.__file__)), "train", "--preset", "Paper Table 1", "--model", "cnn",
               "--data", str(data), "--set", "training.distribution=multiworker", "--set", "epochs=1",
               "--set", "batch_size=16", "--set", "steps_per_epoch=auto", "--set", "validation_steps=all"]
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  env={**os.environ, "CIFAR_STUDIO_HOME": str(stores[i]),
                                       "TF_CONFIG": _tf_config(workers, i)})
                 for i in range(2)]
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=240)[0])
    finally:
        for process in processes:
            process.kill()
    for process, out in zip(processes, outputs):
        assert process.returncode == 0, out[-3000:]
    chief, other = outputs
    assert "with MultiWorkerMirroredStrategy, 2 replicas in sync" in chief
    assert "worker 0 of 2" in chief and "worker 1 of 2" in other and "the chief (worker 0) wrote the run" in other
    digests = [re.search(r"digest ([0-9a-f]{16})", out).group(1) for out in outputs]
    assert digests[0] == digests[1]

    store = RunStore(stores[0])
    (record,) = store.list_runs()
    assert record.status == "finished"
    saved = keras.saving.load_model(store.model_path(record.run_id), compile=False)
    assert weights_digest(saved) == digests[0]
    assert not stores[1].exists()  # the second worker's store: not even an index made

    config = RunConfig.from_dict(json.loads((store.run_dir(record.run_id) / "config.json").read_text()))
    config.training.distribution = "none"
    alone = RunStore(tmp_path / "alone")
    result = Trainer(config, store=alone).run()
    assert result.status == "finished", result.reason
    single = keras.saving.load_model(alone.model_path(result.run_id), compile=False)
    for together, by_itself in zip(saved.get_weights(), single.get_weights()):
        np.testing.assert_allclose(together, by_itself, rtol=1e-4, atol=1e-5)


def test_a_lost_worker_is_said_in_one_line_and_other_errors_are_left_alone():
    from engine.training import _lost_worker

    class UnavailableError(Exception):
        pass

    text = ("Graph execution error:\n\nDetected at node sgd/CollectiveReduceV2 defined at ...\n"
            "Collective ops is aborted by: recvmsg:Connection reset by peer\nAdditional GRPC error information")
    said = _lost_worker(UnavailableError(text))
    assert said.startswith("another worker stopped or cannot be reached (Collective ops is aborted by: "
                           "recvmsg:Connection reset by peer)") and "\n" not in said
    assert _lost_worker(ValueError("Collective ops is aborted by: x")) == ""
    assert _lost_worker(UnavailableError("name resolution failed")) == ""
