"""The Classify tab, driven as a user would: real Keras models saved by plain Keras, real pictures."""

from __future__ import annotations

import csv
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent
from PySide6.QtWidgets import QFileDialog

from engine.config import RunConfig
from engine.datasets import decode_image
from engine.inference import write_class_names
from engine.runs import RunStore
from gui.concurrent import TaskRunner
from gui.tabs.classify import DISAGREE_COLOR, ClassifyTab

WAIT_MS = 60_000
NAMES = ["cat", "dog", "eel", "fox"]


@pytest.fixture
def tab(qtbot):
    runner = TaskRunner()
    tab = ClassifyTab(runner)
    qtbot.addWidget(tab)
    tab.resize(1000, 700)
    tab.show()
    qtbot.waitExposed(tab)
    yield tab
    runner.shutdown()
    assert runner.threads() == []


def conv_model(seed=0, rescale=True, outputs=4):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs) if rescale else inputs
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(6, 3, activation="relu")(x))
    return keras.Model(inputs, keras.layers.Dense(outputs, activation="softmax")(x), name=f"net{seed}")


def brightness_model(always=None):
    """Fed 0..1 (no scaling inside): "dog" for bright pictures and "cat" for dark ones, or always one class."""
    inputs = keras.Input((32, 32, 3))
    dense = keras.layers.Dense(4, activation="softmax")
    model = keras.Model(inputs, dense(keras.layers.GlobalAveragePooling2D()(inputs)))
    kernel, bias = np.zeros((3, 4), "float32"), np.zeros(4, "float32")
    if always is None:
        kernel[:, 1], bias[1] = 10.0, -15.0
    else:
        bias[always] = 5.0
    bias[2:] -= 3.0
    dense.set_weights([kernel, bias])
    return model


def save(model, path, names=NAMES):
    model.save(path)
    if names:
        write_class_names(path, names)
    return path


def pictures(folder, count, seed=0, size=(50, 40), bright=()):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    files = []
    for i in range(count):
        low, high = (150, 256) if i in bright else (0, 100)
        path = folder / f"{i:03d}.png"
        Image.fromarray(rng.integers(low, high, (size[1], size[0], 3), dtype=np.uint8)).save(path)
        files.append(path)
    return files


def open_model(qtbot, tab, path, slot="A"):
    with qtbot.waitSignal(tab.model_opened, timeout=WAIT_MS):
        tab.open_model(path, slot)


def classify(qtbot, tab, paths, outcome="done"):
    with qtbot.waitSignal(tab.job_finished, timeout=WAIT_MS) as blocker:
        tab.add_images(paths)
    assert blocker.args == [outcome]


def results(tab, slot="A"):
    return [tab.pictures.prediction(row, slot) for row in range(tab.pictures.rowCount())]


def test_a_plain_keras_model_opens_and_gives_what_predict_gives(qtbot, tab, tmp_path):
    model = conv_model()
    path = save(model, tmp_path / "notebook.keras")
    open_model(qtbot, tab, path)
    box = tab.slots["A"]
    info = box.info.text()
    assert "net0 (notebook.keras)" in info and "input 32 x 32 x 3; 4 classes" in info
    assert "class names (from the file): cat, dog, eel, fox" in info
    assert f"{model.count_params():,} parameters" in info
    assert not box.preprocessing.isEnabled() and box.preprocessing.currentText() == "inside the model"
    assert box.reason.text().startswith("inside the model (Rescaling x / 255)")

    files = pictures(tmp_path / "pictures", 7, size=(64, 48))
    classify(qtbot, tab, [tmp_path / "pictures"])
    assert tab.pictures.paths == [str(f) for f in files]
    images = np.stack([decode_image(f, (32, 32)) for f in files]).astype("float32")
    expected = model.predict(images, verbose=0)
    for prediction, row in zip(results(tab), expected):
        best = np.argsort(-row)[:4]
        assert prediction.labels == [NAMES[i] for i in best]
        np.testing.assert_allclose(prediction.probabilities, row[best], rtol=1e-5, atol=1e-6)
    first = tab.pictures.index(0, 1).data()
    top = results(tab)[0]
    assert first.startswith(f"{top.labels[0]} {top.probabilities[0]:.1%}\n")
    pixmap = tab.pictures.index(0, 0).data(Qt.DecorationRole)
    assert pixmap is not None and not pixmap.isNull()
    assert tab.pictures.thumbnails[0].shape == (32, 32, 3)  # what the model saw
    assert "Classified 7 pictures with A" in tab.status.text()


def test_a_model_without_scaling_inside_gets_a_choice_and_a_reason(qtbot, tab, tmp_path):
    model = conv_model(rescale=False)
    path = save(model, tmp_path / "raw.h5", names=None)
    open_model(qtbot, tab, path)
    box = tab.slots["A"]
    assert box.preprocessing.isEnabled() and box.preprocessing.currentText() == "0..1 (default)"
    assert [box.preprocessing.itemText(i) for i in range(box.preprocessing.count())] == [
        "0..1 (default)", "-1..1", "ImageNet (caffe-style: BGR, mean subtracted)", "none (0..255)"]
    assert "x / 255" in box.reason.text()
    assert "class 0… (the file has none)" in box.info.text()
    files = pictures(tmp_path / "pictures", 3)
    classify(qtbot, tab, files)
    with qtbot.waitSignal(tab.job_finished, timeout=WAIT_MS):
        box.preprocessing.setCurrentIndex(1)
        box.preprocessing.activated.emit(1)
    assert box.reason.text().startswith("-1..1, as chosen")
    images = np.stack([decode_image(f, (32, 32)) for f in files]).astype("float32")
    expected = model.predict(images / 127.5 - 1, verbose=0)
    for prediction, row in zip(results(tab), expected):
        assert prediction.probabilities[0] == pytest.approx(float(row.max()), rel=1e-5)


def test_a_folder_goes_to_a_csv_with_a_row_per_file(qtbot, tab, tmp_path, monkeypatch):
    open_model(qtbot, tab, save(conv_model(), tmp_path / "m.h5"))
    files = pictures(tmp_path / "pictures", 9)
    (tmp_path / "pictures" / "zz.png").write_text("not a picture")
    target = tmp_path / "out.csv"
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(tmp_path / "pictures"))
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(target), "CSV files (*.csv)"))
    with qtbot.waitSignal(tab.csv_written, timeout=WAIT_MS) as blocker:
        tab.csv_button.click()
    assert blocker.args == [str(target), 10]
    rows = list(csv.DictReader(target.open()))
    assert [r["file"] for r in rows] == [str(f) for f in files] + [str(tmp_path / "pictures" / "zz.png")]
    assert all(r["top_class"] in NAMES and r["error"] == "" for r in rows[:9])
    assert "zz.png is not an image file" in rows[9]["error"]
    assert f"Wrote 10 rows to {target}" in tab.status.text() and "1 could not be read" in tab.status.text()
    assert tab.progress.value() == 1000 and tab.speed.text().endswith("images/s")
    assert [p.top for p in results(tab)[:9]] == [r["top_class"] for r in rows[:9]]

    tab.classify_folder_to_csv(tmp_path / "pictures", tmp_path / "missing" / "out.csv")
    assert "does not exist" in tab.status.text() and tab.job is None


def test_a_long_folder_to_csv_can_be_cancelled(qtbot, tab, tmp_path):
    open_model(qtbot, tab, save(conv_model(), tmp_path / "m.h5"))
    pictures(tmp_path / "many", 400, size=(8, 8))
    target = tmp_path / "many.csv"
    cancel_once = []
    tab.progress.valueChanged.connect(lambda value: value and not cancel_once and
                                      (cancel_once.append(value), tab.cancel_button.click()))
    with qtbot.waitSignal(tab.job_finished, timeout=WAIT_MS) as blocker:
        tab.classify_folder_to_csv(tmp_path / "many", target)
    assert blocker.args == ["cancelled"]
    written = list(csv.DictReader(target.open()))
    assert 0 < len(written) < 400
    classified = sum(1 for p in results(tab) if p is not None)
    assert classified == len(written) and len(tab.pictures.paths) == 400
    assert f"Stopped after {classified:,} of 400 images" in tab.status.text()
    assert not tab.cancel_button.isEnabled()


def test_two_models_side_by_side_highlight_where_they_disagree(qtbot, tab, tmp_path):
    open_model(qtbot, tab, save(brightness_model(always=0), tmp_path / "always_cat.h5"))
    bright = {1, 4, 5, 9, 13}
    files = pictures(tmp_path / "pictures", 16, bright=bright)
    classify(qtbot, tab, files)
    assert "A: every picture came out as 'cat'" in tab.status.text()
    assert "pixel scaling may be wrong" in tab.status.text()
    assert tab.table.isColumnHidden(2)
    with qtbot.waitSignal(tab.job_finished, timeout=WAIT_MS):
        open_model(qtbot, tab, save(brightness_model(), tmp_path / "by_brightness.h5"), "B")
    assert not tab.table.isColumnHidden(2)
    assert [r.top for r in results(tab, "B")] == ["dog" if i in bright else "cat" for i in range(16)]
    assert [r.top for r in results(tab, "A")] == ["cat"] * 16  # A's answers were kept, not redone wrong
    assert tab.pictures.disagreeing() == bright
    assert tab.disagreement.text() == "A and B disagree on 5 of 16 images"
    assert tab.pictures.index(1, 0).data(Qt.BackgroundRole) == DISAGREE_COLOR
    assert tab.pictures.index(0, 2).data(Qt.BackgroundRole) is None
    assert tab.pictures.headerData(2, Qt.Horizontal) == f"B: {tab.classifiers['B'].info.name} (by_brightness.h5)"
    tab.close_model("B")
    assert tab.table.isColumnHidden(2) and tab.disagreement.text() == ""


def test_dropping_a_model_and_a_folder_opens_and_classifies(qtbot, tab, tmp_path):
    model_path = save(conv_model(), tmp_path / "dropped.keras")
    pictures(tmp_path / "pictures", 4)

    def drop(paths, widget):
        mime = QMimeData()
        mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
        position = QPointF(widget.mapTo(tab, widget.rect().center()))
        tab.dropEvent(QDropEvent(position, Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier))

    with qtbot.waitSignal(tab.job_finished, timeout=WAIT_MS):
        drop([model_path, tmp_path / "pictures"], tab.table)
    assert tab.classifiers["A"].path == model_path and len(results(tab)) == 4
    with qtbot.waitSignal(tab.model_opened, timeout=WAIT_MS) as opened:
        drop([model_path], tab.slots["B"])
    assert opened.args[0] == "B"


def test_a_run_of_the_store_opens_from_the_list(qtbot, tab, tmp_path):
    store = RunStore()
    record = store.create_run(RunConfig(name="quadrants"))
    save(conv_model(), store.run_dir(record.run_id) / "model.h5", names=["a", "b", "c", "d"])
    combo = tab.slots["A"].run_combo
    tab.refresh_runs()
    index = combo.findData(record.run_id)
    assert index > 0 and combo.itemText(index).startswith("quadrants · simcnn")
    with qtbot.waitSignal(tab.model_opened, timeout=WAIT_MS) as opened:
        combo.setCurrentIndex(index)
        combo.activated.emit(index)
    assert opened.args[1].class_names == ["a", "b", "c", "d"]

    empty = store.create_run(RunConfig(name="no model"))
    tab.open_run(empty.run_id)
    assert "has no saved model" in tab.status.text()


def lambda_model(path, marker):
    """A Lambda whose code would leave `marker` behind if it ever ran (the path is a constant of its code)."""
    code = eval(f"lambda t: (__import__('pathlib').Path({str(marker)!r}).write_text('ran'), t * 2)[1]")
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Lambda(code)(inputs)
    keras.Model(inputs, keras.layers.Dense(4)(keras.layers.Flatten()(x))).save(path)
    assert marker.exists()  # building the model ran it once; opening it must not
    marker.unlink()


def weights_only(path):
    conv_model().save_weights(path.with_name("w.weights.h5"))
    path.with_name("w.weights.h5").rename(path)


def flat_input(path):
    inputs = keras.Input((784,))
    keras.Model(inputs, keras.layers.Dense(4)(inputs)).save(path)


def two_inputs(path):
    a, b = keras.Input((32, 32, 3)), keras.Input((32, 32, 3))
    keras.Model([a, b], keras.layers.Dense(4)(keras.layers.Flatten()(keras.layers.Add()([a, b])))).save(path)


@pytest.mark.parametrize("name, make, message", [
    ("notes.h5", lambda p, m: p.write_text("just text"), "notes.h5 is not a Keras model file (not an HDF5 file)"),
    ("picture.png", lambda p, m: Image.new("RGB", (8, 8)).save(p), "picture.png is not a Keras model file"),
    ("weights.h5", lambda p, m: weights_only(p), "weights.h5 holds weights only, not a whole model"),
    ("flat.keras", lambda p, m: flat_input(p), "flat.keras takes inputs of shape (784,), not images"),
    ("two.keras", lambda p, m: two_inputs(p), "two.keras has 2 inputs; an image classifier has one"),
    ("lambda.keras", lambda_model, "lambda.keras contains a Lambda layer with Python code"),
])
def test_a_bad_model_file_gets_its_message_and_the_open_model_stays(qtbot, tab, tmp_path, name, make, message):
    good = save(conv_model(), tmp_path / "good.h5")
    open_model(qtbot, tab, good)
    info = tab.slots["A"].info.text()
    marker = tmp_path / "lambda_ran"
    make(tmp_path / name, marker)
    tab.open_model(tmp_path / name)
    qtbot.waitUntil(lambda: message in tab.status.text(), timeout=WAIT_MS)
    assert "Traceback" not in tab.status.text()
    assert tab.classifiers["A"].path == good and tab.slots["A"].info.text() == info
    assert not marker.exists()
    classify(qtbot, tab, pictures(tmp_path / "pictures", 2))  # the open model still works
    assert all(r.labels for r in results(tab))


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_bad_pictures_get_their_message_and_the_rest_are_classified(qtbot, tab, tmp_path, monkeypatch):
    open_model(qtbot, tab, save(conv_model(), tmp_path / "m.h5"))
    folder = tmp_path / "pictures"
    good = pictures(folder, 3, size=(40, 40))
    (folder / "fake.png").write_text("not really a png")
    (folder / "cut.png").write_bytes(good[0].read_bytes()[:200])
    Image.new("RGB", (80, 80)).save(folder / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)  # 80 x 80 is a bomb now, 40 x 40 is not
    classify(qtbot, tab, [folder, tmp_path / "absent.jpg"])
    by_name = {Path(p.path).name: p for p in results(tab)}
    assert "cut.png is not an image file" in by_name["cut.png"].error
    assert "fake.png is not an image file" in by_name["fake.png"].error
    assert "huge.png is too large to decode safely" in by_name["huge.png"].error
    assert "no such file" in by_name["absent.jpg"].error
    assert all(by_name[f.name].labels and not by_name[f.name].error for f in good)
    texts = {Path(p.path).name: tab.pictures.index(row, 1).data() for row, p in enumerate(results(tab))}
    assert "too large to decode safely" in texts["huge.png"]
    assert tab.pictures.index(0, 1).data(Qt.ForegroundRole) is None
    assert "4 could not be read" in tab.status.text() and "Classified 7 pictures" in tab.status.text()


def test_a_model_that_outputs_nan_is_said_to_be_broken(qtbot, tab, tmp_path):
    model = brightness_model()
    model.layers[-1].set_weights([np.full((3, 4), np.nan, "float32"), np.zeros(4, "float32")])
    open_model(qtbot, tab, save(model, tmp_path / "broken.keras"))
    classify(qtbot, tab, pictures(tmp_path / "pictures", 3))
    cells = [tab.pictures.index(row, 1).data() for row in range(3)]
    assert all("broken.keras gave NaN (not a number)" in cell for cell in cells)
    assert "nan%" not in " ".join(cells).lower() and "nan%" not in tab.status.text().lower()
    assert "gave NaN (not a number) for 3 of 3 images" in tab.status.text()


def test_pictures_before_a_model_wait_for_one(qtbot, tab, tmp_path):
    pictures(tmp_path / "pictures", 3)
    tab.add_images([tmp_path / "pictures"])
    qtbot.waitUntil(lambda: tab.pictures.rowCount() == 3, timeout=WAIT_MS)
    assert "open a model to classify them" in tab.status.text()
    assert tab.pictures.index(0, 1).data() == ""
    with qtbot.waitSignal(tab.job_finished, timeout=WAIT_MS):
        tab.open_model(save(conv_model(), tmp_path / "m.h5"))
    assert all(r.labels for r in results(tab))
    tab.classify_folder_to_csv(tmp_path / "pictures", tmp_path / "pictures" / "000.png")
    assert "looks like an image" in tab.status.text()
    tab.clear_images()
    assert tab.pictures.rowCount() == 0


def test_a_model_opened_during_a_csv_joins_after_it(qtbot, tab, tmp_path):
    """The CSV keeps the models it started with (one consistent file); B's column fills in afterwards."""
    open_model(qtbot, tab, save(conv_model(), tmp_path / "a.h5"))
    pictures(tmp_path / "many", 300, size=(8, 8))
    b_path = save(conv_model(seed=1), tmp_path / "b.h5")
    opened = []
    tab.progress.valueChanged.connect(lambda value: value and not opened and
                                      (opened.append(value), tab.open_model(b_path, "B")))
    with qtbot.waitSignal(tab.csv_written, timeout=WAIT_MS):
        tab.classify_folder_to_csv(tmp_path / "many", tmp_path / "many.csv")
    header = (tmp_path / "many.csv").read_text().splitlines()[0]
    assert header.startswith("file,top_class,probability,") and "B_" not in header
    qtbot.waitUntil(lambda: all(p is not None for p in results(tab, "B")), timeout=WAIT_MS)
    assert all(p is not None and p.labels for p in results(tab, "A"))
