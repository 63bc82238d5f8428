"""A corpus of bad inputs against the command line: each gets its one-line
message, and nothing already in the run store changes.

The store holds one real run (trained once for the module); every case then
runs in-process through `cli.main` and the store's files are compared byte
for byte before and after.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import cli
from datasetfiles import write_gradient_png16, write_rotated_jpeg
from engine.runs import RunStore
from toydata import toy_images, write_toy_folder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A store with one run, its image folder, and the bad files of the corpus."""
    root = tmp_path_factory.mktemp("corpus")
    store = root / "store"
    folder = root / "pictures"
    write_toy_folder(folder, (("train", 48, 1), ("test", 16, 2)))
    previous = os.environ.get("CIFAR_STUDIO_HOME")
    os.environ["CIFAR_STUDIO_HOME"] = str(store)
    try:
        assert cli.main(["train", "--data", str(folder), "--name", "kept", "--set", "epochs=1",
                         "--set", "steps_per_epoch=auto", "--set", "validation_steps=all"]) == 0
    finally:
        if previous is None:
            os.environ.pop("CIFAR_STUDIO_HOME")
        else:
            os.environ["CIFAR_STUDIO_HOME"] = previous
    model = RunStore(store).model_path(RunStore(store).list_runs()[0].run_id)

    bad = root / "bad"
    bad.mkdir()
    (bad / "truncated.h5").write_bytes(model.read_bytes()[:4000])
    (bad / "folder.h5").mkdir()
    (bad / "text.keras").write_text("not a zip")
    (bad / "notes.png").write_text("a text file named like an image")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(bad / "good.png")
    write_gradient_png16(str(bad / "deep.png"))
    write_rotated_jpeg(bad / "rotated.jpg")
    (bad / "latin1.json").write_bytes('{"name": "caf\xe9"}'.encode("latin-1"))
    (bad / "huge.json").write_text(json.dumps({"version": 2, "training": {"epochs": 10 ** 30}}))
    (bad / "list.json").write_text("[1, 2, 3]")
    (bad / "empty").mkdir()
    (bad / "no_images" / "cat").mkdir(parents=True)
    (bad / "cifar-10-python.tar.gz").write_bytes(b"\x1f\x8b not really gzip")
    other = root / "other_classes"
    for name in ("apple", "pear", "plum", "fig"):
        (other / "test" / name).mkdir(parents=True)
        (other / "train" / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(toy_images(1, seed=i)[0][0]).save(other / "test" / name / f"{i}.png")
            Image.fromarray(toy_images(1, seed=i)[0][0]).save(other / "train" / name / f"{i}.png")
    return {"store": store, "folder": folder, "bad": bad, "model": model, "other": other}


def snapshot(store: Path) -> dict[str, str]:
    return {str(path.relative_to(store)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(store.rglob("*")) if path.is_file()}


def run(capsys, store: Path, *argv: str) -> tuple[int, str, str]:
    code = cli.main(["--store", str(store), *argv])
    out, err = capsys.readouterr()
    return code, out, err


# (arguments with {bad}, {model}, {folder}, {other} filled in; a part of the message)
REFUSED = [
    (["predict", "{bad}/truncated.h5", "{bad}/good.png"], "truncated.h5"),
    (["predict", "{bad}/folder.h5", "{bad}/good.png"], "is a folder"),
    (["predict", "{bad}/text.keras", "{bad}/good.png"], "not a Keras model file"),
    (["predict", "{model}", "{bad}/good.png", "--csv", "{bad}/no/such/out.csv"], "does not exist"),
    (["train", "--data", "{bad}/empty"], "empty"),
    (["train", "--data", "{bad}/no_images"], "no images in them"),
    (["train", "--data", "{bad}/cifar-10-python.tar.gz"], "cifar-10-python.tar.gz"),
    (["train", "--data", "{bad}/missing"], "no such file or folder"),
    (["train", "--data", "{folder}", "--config", "{bad}/latin1.json"], "not UTF-8 text"),
    (["train", "--data", "{folder}", "--config", "{bad}/huge.json"], "Epochs (training.epochs)"),
    (["train", "--data", "{folder}", "--config", "{bad}/list.json"], "list.json"),
    (["train", "--data", "{folder}", "--set", "epochs=inf"], "is not a whole number"),
    (["train", "--data", "{folder}", "--set", "learning_rate=-1"], "Learning rate (training.learning_rate)"),
    (["train", "--data", "{folder}", "--set", "batch_size=0"], "Batch size (training.batch_size) = 0"),
    (["train", "--data", "{folder}", "--set", "__class__=1"], "unknown setting '__class__'"),
    (["evaluate", "kept", "--data", "{other}"], "classes"),
    (["show", "no-such-run"], "no run 'no-such-run'"),
    (["delete", ""], "no run given"),
    (["rename", "kept", "   "], "cannot be empty"),
]


@pytest.mark.parametrize("argv, message", REFUSED, ids=[" ".join(a[:2]) + f" {i}" for i, (a, _) in
                                                        enumerate(REFUSED)])
def test_a_bad_input_gets_one_line_and_changes_nothing_saved(corpus, capsys, argv, message):
    before = snapshot(corpus["store"])
    filled = [part.format(**{key: corpus[key] for key in ("bad", "model", "folder", "other")}) for part in argv]
    code, out, err = run(capsys, corpus["store"], *filled)
    lines = err.strip().splitlines()
    assert code == 2 and lines[-1].startswith("error: ") and message in lines[-1], err
    assert "Traceback" not in err
    assert snapshot(corpus["store"]) == before


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_per_file_problems_leave_the_rest_of_the_batch_classified(corpus, capsys, monkeypatch):
    before = snapshot(corpus["store"])
    bad = corpus["bad"]
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(bad / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1500)  # 64x64 is over it, the others are not
    code, out, err = run(capsys, corpus["store"], "predict", str(corpus["model"]), str(bad / "notes.png"),
                         str(bad / "good.png"), str(bad / "bomb.png"), str(bad / "deep.png"), str(bad / "rotated.jpg"))
    assert code == 0, err
    assert "notes.png is not an image file this app can read" in out
    assert "bomb.png is too large to decode safely" in out
    for name in ("good.png", "deep.png", "rotated.jpg"):
        assert any(name in line and "%" in line for line in out.splitlines()), out
    assert "Traceback" not in err
    assert snapshot(corpus["store"]) == before
