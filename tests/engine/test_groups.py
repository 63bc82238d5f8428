"""Groups of runs: the seeds' settings, real queued runs on toy data, and `main.py queue`."""

import os
import signal

import pytest

import cli
import cli.queue
from engine import models
from engine.config import MACHINE_KEYS, RunConfig
from engine.errors import ConfigError
from engine.events import Listener
from engine.groups import GROUPS, QueuedRun, group_configs, run_group
from engine.runs import RunStore
from engine.training import Trainer
from toydata import toy_dataset, write_toy_folder

QUICK = ["epochs=2", "steps_per_epoch=auto", "validation_steps=all", "batch_size=16", "learning_rate=0.002"]
TOY_GROUP = [
    QueuedRun("SimCNN", "simcnn", "Paper Table 1"),
    QueuedRun("CNN", "cnn", "Seed 2 (Adam)"),
    QueuedRun("SimCNN again", "simcnn", "Seed 2 (Adam)"),
]


def base() -> RunConfig:
    config = RunConfig()
    config.dataset.source, config.dataset.path, config.dataset.train_subset = "folder", "/data/pictures", 500
    config.training.precision, config.training.steps_per_execution = "mixed_float16", 7
    config.training.epochs = 99  # not a machine setting: the presets set it
    return config


def test_seed_1_is_the_first_seeds_three_runs():
    configs = group_configs("Seed 1", base())
    assert [c.name for c in configs] == ["Seed 1 · SimCNN (Paper Table 1)", "Seed 1 · ResNet50 (Paper Table 1)",
                                         "Seed 1 · ResNet50 (ResNet50-02)"]
    assert [c.model.architecture for c in configs] == ["simcnn", "resnet50", "resnet50"]
    assert [c.preset for c in configs] == ["Paper Table 1", "Paper Table 1", "ResNet50-02"]
    assert [(c.training.batch_size, c.training.epochs, c.training.learning_rate) for c in configs] == [
        (32, 25, 0.01), (32, 25, 0.01), (64, 30, 0.005)]
    assert configs[2].model.trainable_layers == -1 and configs[2].model.weights == "imagenet"  # the whole ResNet50
    for config in configs:
        assert config.dataset == base().dataset
        assert all(getattr(config.training, key) == getattr(base().training, key) for key in MACHINE_KEYS)


def test_seed_3_is_the_second_seeds_table_with_its_parameter_counts():
    configs = group_configs("Seed 3", base())
    assert [c.model.architecture for c in configs] == ["cnn", "vgg16", "resnet50", "mobilenetv2", "vgg16"]
    assert [c.preset for c in configs] == ["Seed 2 (Adam)"] * 4 + ["VGG16 fine-tune"]
    assert all((c.training.batch_size, c.training.optimizer, c.training.epochs) == (64, "adam", 10) for c in configs)
    assert all((c.model.trainable_layers, c.model.head, c.model.input_size) == (0, "linear", 32)
               for c in configs[1:4])
    assert (configs[4].model.trainable_layers, configs[4].model.head, configs[4].model.input_size) == (10, "dense256",
                                                                                                        32)
    counts = []
    for config in configs:  # random weights: the same counts, no download (about 3 s for the five)
        config.model.weights = "none"
        counts.append(models.param_counts(models.build_model(config.model, (32, 32, 3), 10))["total"])
    assert counts == [356_810, 14_719_818, 23_608_202, 2_270_794, 14_848_586]  # DESIGN.md's comparison table


def test_overrides_apply_to_every_run_of_both_groups():
    overrides = ["epochs=2", "model.input_size=64", "train_subset=100", "training.optimizer=rmsprop"]
    for group in GROUPS:
        configs = group_configs(group, base(), overrides)
        assert len(configs) == len(GROUPS[group])
        for config in configs:
            assert (config.training.epochs, config.model.input_size, config.dataset.train_subset,
                    config.training.optimizer) == (2, 64, 100, "rmsprop")


@pytest.mark.parametrize("overrides, words", [
    (["epochs=0"], ["group 'Seed 3'", "run 'CNN from scratch'", "epochs=0", "training.epochs"]),
    (["epochs=1", "no_such=3"], ["group 'Seed 3'", "override 'no_such=3'", "unknown setting 'no_such'"]),
    (["batch_size"], ["group 'Seed 3'", "'batch_size' is not KEY=VALUE"]),
    (["model.input_size=16"], ["run 'CNN from scratch' with model.input_size=16", "Input size"]),
])
def test_a_bad_override_is_refused_naming_the_group_and_the_override(overrides, words):
    with pytest.raises(ConfigError) as caught:
        group_configs("Seed 3", base(), overrides)
    assert all(word in str(caught.value) for word in words), str(caught.value)


def test_an_unknown_group_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown group 'Seed 2'; choose one of 'Seed 1', 'Seed 3'"):
        group_configs("Seed 2", base())


class Recorder(Listener):
    """Names of the runs as they start; Stop (of the run and the queue) at the second run's first epoch."""

    def __init__(self):
        self.started, self.trainers, self.stopped = [], [], False

    def on_run_started(self, event):
        self.started.append(event.name)

    def on_epoch_ended(self, event):
        if len(self.started) == 2 and not self.stopped:
            self.stopped = True
            self.trainers[-1].request_stop()


@pytest.fixture(scope="module")
def queued(tmp_path_factory):
    """The toy group trained by run_group, stopped (the run and the queue) during its second run."""
    store = RunStore(tmp_path_factory.mktemp("queued"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(GROUPS, "Toy", TOY_GROUP)
        configs = group_configs("Toy", RunConfig(), QUICK)
    recorder = Recorder()
    results = run_group(configs, store, recorder, should_stop=lambda: recorder.stopped,
                        on_trainer=recorder.trainers.append, dataset=toy_dataset())
    return store, configs, recorder, results


def test_a_group_runs_in_order_with_the_overrides_applied(queued):
    store, configs, recorder, results = queued
    assert recorder.started == ["Toy · SimCNN", "Toy · CNN"]
    assert [type(t) for t in recorder.trainers] == [Trainer, Trainer]
    runs = sorted(store.list_runs(), key=lambda r: r.created)
    assert [r.run_id for r in runs] == [r.run_id for r in results]
    saved = [store.config(r.run_id) for r in runs]
    assert [c.model.architecture for c in saved] == ["simcnn", "cnn"]
    assert [c.preset for c in saved] == ["Paper Table 1", "Seed 2 (Adam)"]
    assert [c.training.optimizer for c in saved] == ["sgd", "adam"]  # the presets' own
    assert all((c.training.epochs, c.training.batch_size, c.training.learning_rate, c.training.steps_per_epoch)
               == (2, 16, 0.002, 0) for c in saved)  # the overrides, in each run
    assert results[0].status == "finished" and results[0].epochs_done == 2 and results[0].test_metrics


def test_stopping_keeps_the_current_run_and_cancels_the_rest(queued):
    store, configs, recorder, results = queued
    assert len(configs) == 3 and len(results) == 2  # the third never started
    assert results[1].status == "stopped" and results[1].epochs_done == 1
    record = store.get(results[1].run_id)
    assert record.status == "stopped" and store.model_path(record.run_id).exists()
    assert len(store.list_runs()) == 2


@pytest.fixture
def image_folder(tmp_path):
    return write_toy_folder(tmp_path / "pictures")


def queue(capsys, *argv):
    code = cli.main(["queue", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_queue_reports_a_failed_run_at_the_end_and_trains_the_others(image_folder, monkeypatch, capsys):
    broken = QueuedRun("broken", "vgg16", "Seed 2 (Adam)", {"weights": "file", "weights_file": "/no/such.h5"})
    monkeypatch.setitem(GROUPS, "Toy", [broken, *TOY_GROUP[:2]])
    code, out, err = queue(capsys, "Toy", "--data", str(image_folder), *(f"--set={item}" for item in QUICK),
                           "--set", "epochs=1")
    assert code == 2
    assert out.startswith("Toy: 3 runs, one after the other, each saved as it ends:\n  1. Toy · broken\n"
                          "  2. Toy · SimCNN\n  3. Toy · CNN\n")
    assert out.count("Loading the dataset") == 1  # loaded once, for the three runs
    table = out[out.index("name "):].splitlines()
    assert [row.split()[3:5] for row in table[2:5]] == [["failed", "-"], ["finished", row_accuracy(table[3])],
                                                        ["finished", row_accuracy(table[4])]]
    assert "the run failed: The weights file /no/such.h5 does not exist" in out  # said as it happened
    assert err.count("\n") == 1 and err.startswith("error: 1 of 3 runs of 'Toy' failed ('Toy · broken'); the first "
                                                   "because: The weights file /no/such.h5 does not exist")
    runs = RunStore().list_runs()
    assert sorted(r.name for r in runs) == ["Toy · CNN", "Toy · SimCNN"]
    assert all(r.status == "finished" and r.epochs_done == 1 for r in runs)


def row_accuracy(row: str) -> str:
    accuracy = row.split()[4]
    assert 0 <= float(accuracy) <= 1
    return accuracy


class InterruptingListener(cli.queue.QueueListener):
    """The console listener, with a real Ctrl-C (SIGINT to this process) at the first epoch's end."""

    def on_epoch_ended(self, event):
        super().on_epoch_ended(event)
        if event.epoch == 1:
            os.kill(os.getpid(), signal.SIGINT)


def test_ctrl_c_stops_the_current_run_keeps_it_and_cancels_the_queue(image_folder, monkeypatch, capsys):
    monkeypatch.setitem(GROUPS, "Toy", TOY_GROUP[1:])
    monkeypatch.setattr(cli.queue, "QueueListener", InterruptingListener)
    handler = signal.getsignal(signal.SIGINT)
    code, out, err = queue(capsys, "Toy", "--data", str(image_folder), *(f"--set={item}" for item in QUICK))
    assert code == 0, err
    assert signal.getsignal(signal.SIGINT) is handler
    assert "stopping this run after its batch; it is kept, and the rest of the queue is cancelled" in err
    rows = out[out.index("name "):].splitlines()[2:4]
    assert rows[0].startswith("Toy · CNN ") and rows[0].split()[3] == "stopped"
    assert rows[1].split()[4:7] == ["not", "run", "-"]
    assert "the queue was cancelled: 1 of 2 runs not started" in out
    [record] = RunStore().list_runs()
    assert (record.name, record.status, record.epochs_done) == ("Toy · CNN", "stopped", 1)


def test_queue_refuses_an_unknown_group_and_a_bad_override_before_training(image_folder, capsys):
    code, out, err = queue(capsys, "No such")
    assert code == 2 and out == ""
    assert err == "error: unknown group 'No such'; choose one of 'Seed 1', 'Seed 3'\n"
    code, out, err = queue(capsys, "Seed 3", "--data", str(image_folder), "--set", "epochs=0")
    assert code == 2 and out == "" and err.count("\n") == 1 and "epochs=0" in err
    assert RunStore().list_runs() == []
