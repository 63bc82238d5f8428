"""The headless command line, run in-process (Ctrl-C: in a subprocess) on a tiny image folder."""

import configparser
import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
from PIL import Image

import cli
import main
from cli.commands import train_config
from engine.config import RunConfig, preset
from engine.runs import RunStore
from toydata import CLASS_NAMES, toy_images, write_toy_folder


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("CIFAR_STUDIO_HOME", str(tmp_path / "store"))
    return tmp_path / "store"


@pytest.fixture
def image_folder(tmp_path):
    """train/ and test/ with one subfolder per class, as a user would have."""
    return write_toy_folder(tmp_path / "pictures")


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def settings_for(*argv) -> RunConfig:
    return train_config(cli.build_parser().parse_args(["train", *argv]))


def test_main_py_hands_arguments_to_the_cli(store, capsys):
    assert main.main(["runs"]) == 0
    assert "no runs yet" in capsys.readouterr().out


def test_a_preset_applies_to_the_model_given():
    assert settings_for() == preset("Paper Table 1")
    config = settings_for("--preset", "ResNet50-02", "--model", "vgg16", "--set", "epochs=3")
    assert config.model.architecture == "vgg16" and config.model.trainable_layers == -1
    assert (config.training.batch_size, config.training.epochs, config.preset) == (64, 3, "ResNet50-02")
    assert settings_for("--preset", "SimCNN best").model.architecture == "simcnn"


def test_a_config_file_keeps_its_settings_unless_a_preset_is_given(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(preset("Seed 2 (Adam)", "mobilenetv2").to_json())
    assert settings_for("--config", str(path)) == preset("Seed 2 (Adam)", "mobilenetv2")
    config = settings_for("--config", str(path), "--preset", "VGG16 fine-tune")
    assert config.model.architecture == "mobilenetv2" and config.training.learning_rate == 1e-4


def test_train_predict_evaluate_runs_show_rename_delete(store, image_folder, capsys, tmp_path):
    code, out, err = run(capsys, "train", "--preset", "Paper Table 1", "--model", "simcnn",
                         "--data", str(image_folder), "--set", "epochs=2", "--set", "steps_per_epoch=auto",
                         "--set", "batch_size=16", "--set", "optimizer=adam", "--set", "learning_rate=0.002",
                         "--name", "cli run")
    assert code == 0, err
    assert "Epoch 2/2" in out and "test accuracy" in out
    run_id = out.split("run ")[-1].split()[0]
    model_path = store / "runs" / run_id / "model.h5"
    plain = keras.models.load_model(model_path)
    assert plain.output_shape == (None, 4)
    with h5py.File(model_path) as handle:
        assert "top_left" in handle.attrs["class_names"]

    code, out, _ = run(capsys, "runs")
    assert code == 0 and "cli run" in out and "finished" in out and "2/2" in out

    report = tmp_path / "predictions.csv"
    code, out, _ = run(capsys, "predict", str(model_path), str(image_folder / "test" / "top_left"), "--top", "2",
                       "--csv", str(report))
    assert code == 0
    with report.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 10 and all(row["class_1"] in CLASS_NAMES for row in rows)

    first = sorted((image_folder / "test" / "top_left").iterdir())[0]
    code, out, _ = run(capsys, "predict", run_id, str(first))
    assert code == 0 and out.startswith(str(image_folder))

    (store / "runs" / run_id / "predictions.npz").unlink()
    code, out, _ = run(capsys, "evaluate", "cli run")
    assert code == 0 and "test split (40 images)" in out and "macro" in out
    assert (store / "runs" / run_id / "predictions.npz").exists()  # written through the store again

    (store / "runs.db").unlink()
    code, out, err = run(capsys, "runs", "--rebuild")
    assert code == 0 and "cli run" in out and "finished" in out
    assert "rebuilt" in (out + err).lower()

    code, out, _ = run(capsys, "show", run_id[:15])
    assert code == 0 and "val_accuracy" in out and '"architecture": "simcnn"' in out
    confusion = RunStore(store).predictions(run_id)["confusion"]
    table = out.split("confusion matrix (rows: true class, columns: predicted):\n")[1].splitlines()
    names = sorted(CLASS_NAMES)  # a folder's classes, in its subfolders' order
    assert table[0].split() == ["bot_le", "bot_ri", "top_le", "top_ri"]  # the names cut to fit, words kept apart
    for name, line, row in zip(names, table[1:], confusion):
        assert line.split() == [name, *(str(n) for n in row)]
    if confusion.sum() > np.trace(confusion):
        assert "most confused (true -> predicted: images):" in out

    overlay = tmp_path / "overlay.png"
    code, out, err = run(capsys, "explain", run_id, str(first), "--out", str(overlay))
    assert code == 0, err
    assert "explained '" in out and "layer conv3 (4x4 feature map, hirescam)" in out
    assert Image.open(overlay).size == (256, 256)
    code, out, _ = run(capsys, "explain", str(model_path), str(first), "--class", "bottom_right", "--out",
                       str(overlay), "--method", "gradcam")
    assert code == 0 and "explained 'bottom_right' (class 1)" in out and "gradcam" in out

    assert run(capsys, "rename", run_id, "better name")[0] == 0
    assert run(capsys, "delete", "better name")[0] == 0
    assert "no runs yet" in run(capsys, "runs")[1]


@pytest.mark.parametrize("argv, message", [
    (["train", "--data", "/nowhere/at/all"], "--data /nowhere/at/all: no such file or folder"),
    (["train", "--data", "cifar10", "--set", "epochs=ten"], "Epochs (training.epochs) = 'ten' is not a whole number"),
    (["train", "--data", "cifar10", "--set", "learning_rate=-1"],
     "Learning rate (training.learning_rate) = -1.0 is out of range"),
    (["train", "--data", "cifar10", "--set", "nonsense"], "expected KEY=VALUE"),
    (["evaluate", "no-such-run"], "no run 'no-such-run'"),
    (["predict", "missing.h5", "x.png"], "missing.h5: no such file"),
    (["explain", "missing.h5", "x.png"], "missing.h5: no such file"),
    (["explain", "no-such-run", "x.png"], "no run 'no-such-run'"),
])
def test_errors_are_one_line_and_exit_status_2(store, capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert err.startswith("error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_a_corrupt_dataset_fails_cleanly(store, tmp_path, capsys):
    archive = tmp_path / "cifar-10-python.tar.gz"
    archive.write_bytes(b"\x1f\x8b not really gzip")
    code, _, err = run(capsys, "train", "--data", str(archive), "--set", "epochs=1")
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err


def test_a_non_model_file_is_refused(store, tmp_path, capsys):
    fake = tmp_path / "model.h5"
    fake.write_text("hello")
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    code, _, err = run(capsys, "predict", str(fake), str(image))
    assert code == 2 and "not a Keras model file" in err


def test_explain_says_in_one_line_what_it_cannot_do(store, tmp_path, capsys):
    image = tmp_path / "a.png"
    Image.fromarray(toy_images(1)[0][0]).save(image)
    inputs = keras.Input((32, 32, 3))
    dense = keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(keras.layers.Flatten()(inputs)))
    dense.save(tmp_path / "dense.keras")
    conv = keras.Sequential([inputs, keras.layers.Conv2D(4, 3), keras.layers.GlobalAveragePooling2D(),
                             keras.layers.Dense(4, activation="softmax")])
    conv.save(tmp_path / "conv.keras")
    for argv, message in (
        (["explain", str(tmp_path / "dense.keras"), str(image)], "has no convolution layer"),
        (["explain", str(tmp_path / "conv.keras"), str(image), "--class", "dog"], "--class dog: no such class"),
        (["explain", str(tmp_path / "conv.keras"), str(image), "--class", "9"], "the model has 4 classes (0..3)"),
        (["explain", str(tmp_path / "conv.keras"), str(tmp_path / "none.png")], "none.png: no such file"),
        (["explain", str(tmp_path / "conv.keras"), str(image), "--out", str(tmp_path / "o.jpg")], "written as PNG"),
        (["explain", str(tmp_path / "conv.keras"), str(image), "--out", str(tmp_path / "no" / "o.png")],
         "does not exist"),
    ):
        code, _, err = run(capsys, *argv)
        assert code == 2 and err.startswith("error: ") and message in err, err
        assert err.count("\n") == 1 and "Traceback" not in err
    code, out, _ = run(capsys, "explain", str(tmp_path / "conv.keras"), str(image), "--class", "2",
                       "--out", str(tmp_path / "o.png"))
    assert code == 0 and "explained 'class 2' (class 2)" in out and (tmp_path / "o.png").exists()


def test_ctrl_c_stops_after_the_batch_in_flight_and_saves_the_run(store, image_folder):
    """The first Ctrl-C in `main.py train` ends the run as stopped, with its
    model saved, also while ten steps run per graph call."""
    command = [sys.executable, str(Path(main.__file__)), "train", "--preset", "Paper Table 1", "--model", "simcnn",
               "--data", str(image_folder), "--set", "epochs=200", "--set", "steps_per_epoch=auto",
               "--set", "batch_size=4", "--set", "steps_per_execution=9"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "CIFAR_STUDIO_HOME": str(store)})
    try:
        for line in process.stdout:
            if line.startswith("Epoch 1/200"):
                process.send_signal(signal.SIGINT)
                break
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 0, err[-2000:]
    assert "stopping after this batch" in err and "stopped: stopped by the user" in out
    record = RunStore(store).list_runs()[0]
    assert record.status == "stopped" and record.epochs_done < 200
    assert RunStore(store).model_path(record.run_id).exists()


def test_setup_cfg_packages_the_cli_beside_main_py():
    """An installed cifar-studio (entry point main:main) finds the cli package."""
    from setuptools import find_packages

    setup = configparser.ConfigParser()
    setup.read(Path(main.__file__).with_name("setup.cfg"))
    include = [name.strip() for name in setup["options.packages.find"]["include"].split(",")]
    assert "cli" in find_packages(where=str(Path(main.__file__).parent), include=include)
    assert setup["options"]["py_modules"].strip() == "main"


@pytest.mark.parametrize("argv, message", [
    (["--set", "epochs=inf"], "Epochs (training.epochs) = 'inf' is not a whole number"),
    (["--set", "learning_rate=nan"], "Learning rate (training.learning_rate) = nan is out of range"),
    (["--set", "batch_size=1e400"], "Batch size (training.batch_size) = '1e400' is not a whole number"),
    (["--set", "epochs=" + "9" * 400], "Epochs (training.epochs) = 9999999999999999999999999999999999999... is out"),
    (["--set", "__class__=1"], "unknown setting '__class__'"),
    (["--set", "training.__dict__=1"], "unknown setting 'training.__dict__'"),
    (["--set", "training.copy=1"], "unknown setting 'training.copy'"),
    (["--set", "to_json=x"], "unknown setting 'to_json'"),
])
def test_settings_python_cannot_convert_are_one_line_and_exit_status_2(store, capsys, argv, message):
    code, out, err = run(capsys, "train", "--data", "cifar10", *argv)
    assert code == 2
    assert err.startswith("error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("content, message", [
    (b"\xff\xfe{\x00}\x00", "config.json: not UTF-8 text (byte 0 cannot be read)"),
    (b'{"name": "caf\xe9"}', "config.json: not UTF-8 text (byte 13 cannot be read)"),
    (b'{"training": {"epochs": 1e309}}', "config.json: Epochs (training.epochs) = inf is not a whole number"),
    (b'{"training": {"epochs": ' + b"9" * 400 + b"}}", "Epochs (training.epochs) = 99999"),
    (b'{"training": {"epochs": ' + b"9" * 5000 + b"}}", "config.json: settings are not usable JSON: a number"),
    (b'{"training": {"learning_rate": [1]}}', "Learning rate (training.learning_rate) = [1] is not a number"),
    (b'{"training": {"epochs": null}}', "Epochs (training.epochs) = None is not a whole number"),
    (b'{"training": {"optimizer": {}}}', "Optimizer (training.optimizer) = {} is not text"),
    (b'{"training": {"__class__": 1}}', "config.json: unknown setting 'training.__class__'"),
    (b"{nope", "config.json: settings are not valid JSON"),
])
def test_a_config_file_python_cannot_read_is_one_line_and_exit_status_2(store, tmp_path, capsys, content, message):
    path = tmp_path / "config.json"
    path.write_bytes(content)
    code, out, err = run(capsys, "train", "--data", "cifar10", "--config", str(path))
    assert code == 2
    assert err.startswith("error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def _copy_folder(source: Path, target: Path, rename: dict[str, str] | None = None, extra: str = "") -> Path:
    """The image folder again, with class folders renamed and/or one more class (a copy of the first)."""
    import shutil

    for split in ("train", "test"):
        for folder in sorted((source / split).iterdir()):
            shutil.copytree(folder, target / split / (rename or {}).get(folder.name, folder.name))
        if extra:
            shutil.copytree(min((source / split).iterdir()), target / split / extra)
    return target


def test_names_that_are_not_utf8_or_hold_control_characters_are_shown_escaped(store, image_folder, capsys,
                                                                               tmp_path):
    """--name with an escape sequence, a newline and a byte that is not UTF-8 (as $'\\xff' arrives): the run is
    stored and listed, `runs`, `show` and `predict` print the escaped form and no raw control character;
    evaluating on a dataset whose classes are not the model's is refused in one line."""
    name = "a\x1b[31mb\nc" + os.fsdecode(b"\xff")
    shown = "a\\x1b[31mb\\nc\\xff"
    code, out, err = run(capsys, "train", "--preset", "Paper Table 1", "--model", "simcnn",
                         "--data", str(image_folder), "--set", "epochs=1", "--set", "batch_size=32",
                         "--set", "steps_per_epoch=auto", "--name", name)
    assert code == 0, err
    assert shown in out and "\x1b" not in out
    records = RunStore(store).list_runs()
    assert [r.name for r in records] == ["a\x1b[31mb\nc\\xff"]  # kept, with the stray byte made visible
    run_id = records[0].run_id

    for argv in (["runs"], ["show", run_id], ["evaluate", run_id]):
        code, out, err = run(capsys, *argv)
        assert code == 0, err
        assert shown in out and "\x1b" not in out + err and "\udcff" not in out, argv
    code, _, err = run(capsys, "show", name)  # the name as the shell passes it finds the run
    assert code == 0, err

    renamed = _copy_folder(image_folder, tmp_path / "renamed", rename={"top_left": "cat", "top_right": "dog"})
    extra = _copy_folder(image_folder, tmp_path / "extra", extra="zebra")
    for folder, message in ((renamed, "but the dataset has 4 classes [bottom_left, bottom_right, cat, dog]"),
                            (extra, "but the dataset has 5 classes [")):
        code, out, err = run(capsys, "evaluate", run_id, "--data", str(folder))
        assert code == 2 and err.startswith("error: ") and "was trained on 4 classes [" in err and message in err
        assert err.count("\n") == 1 and "Traceback" not in err

    pictures = tmp_path / "odd"
    pictures.mkdir()
    first = min((image_folder / "test" / "top_left").iterdir())
    try:
        odd = pictures / os.fsdecode(b"\xff\x1b[2Jx.png")
        odd.write_bytes(first.read_bytes())
    except (OSError, UnicodeEncodeError):
        pytest.skip("this filesystem refuses names that are not UTF-8")
    (pictures / "line\nbreak.png").write_bytes(first.read_bytes())
    report = tmp_path / "odd.csv"
    code, out, err = run(capsys, "predict", run_id, str(pictures), "--csv", str(report))
    assert code == 0, err
    assert "\\xff\\x1b[2Jx.png: " in out and "line\\nbreak.png: " in out
    assert "\x1b" not in out and "\udcff" not in out and len(out.strip().splitlines()) == 3  # two images, "wrote"
    rows = report.read_text(encoding="utf-8")
    assert "\\xff" in rows


def test_output_paths_are_refused_before_the_model_is_loaded(store, tmp_path, capsys):
    """--csv and --out that cannot be written fail at once (the model file here is not even a model: loading it
    would say so), in one line with exit status 2."""
    fake = tmp_path / "model.h5"
    fake.write_text("hello")
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    cases = [
        (["predict", str(fake), str(image), "--csv", str(tmp_path)], "is a folder"),
        (["predict", str(fake), str(image), "--csv", str(tmp_path / "no" / "p.csv")], "does not exist"),
        (["predict", str(fake), str(image), "--csv", str(image)], "looks like an image or model file"),
        (["explain", str(fake), str(image), "--out", str(tmp_path)], "written as PNG"),
        (["explain", str(fake), str(image), "--out", str(tmp_path / "d.png")], "give a file name ending in .png"),
        (["explain", str(fake), str(image), "--out", str(tmp_path / "no" / "o.png")], "does not exist"),
        (["explain", str(fake), str(image), "--out", str(image)], "is one of the files being read"),
    ]
    (tmp_path / "d.png").mkdir()
    if os.geteuid() != 0:  # root writes anywhere
        cases += [(["predict", str(fake), str(image), "--csv", str(locked / "p.csv")], "no permission"),
                  (["explain", str(fake), str(image), "--out", str(locked / "o.png")], "no permission")]
    try:
        for argv, message in cases:
            code, out, err = run(capsys, *argv)
            assert code == 2 and err.startswith("error: ") and message in err, (argv, err)
            assert err.count("\n") == 1 and "not a Keras model file" not in err and not out
    finally:
        locked.chmod(0o700)


def test_ctrl_c_while_the_data_loads_stops_that_run_and_reports_no_other(store, image_folder, capsys, monkeypatch):
    from cli import commands

    run(capsys, "train", "--data", str(image_folder), "--set", "epochs=1", "--set", "steps_per_epoch=auto",
        "--set", "validation_steps=all", "--name", "earlier")

    class CtrlCWhileLoading(commands.ConsoleListener):
        def on_stage(self, event):
            super().on_stage(event)
            if event.stage == "data":
                os.kill(os.getpid(), signal.SIGINT)  # the real signal, through the CLI's own handler

    monkeypatch.setattr(commands, "ConsoleListener", CtrlCWhileLoading)
    code, out, err = run(capsys, "train", "--data", str(image_folder), "--set", "epochs=1",
                         "--set", "steps_per_epoch=auto", "--name", "interrupted")
    assert code == 130, err
    assert "stopped before training started: no run was made" in err and "earlier" not in out + err
    assert [r.name for r in RunStore(store).list_runs()] == ["earlier"]
