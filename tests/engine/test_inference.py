"""Opening model files safely and classifying image files."""

import keras
import numpy as np
import pytest
from PIL import Image

from datasetfiles import write_gradient_png16, write_rotated_jpeg
from engine.config import DatasetConfig
from engine.datasets import cifar10_class_names, load_dataset
from engine.errors import ModelError
from engine.inference import Classifier, image_files, load_model_safely, write_class_names


def notebook_model(outputs=10, size=32, rescale=False):
    """What a user builds in a notebook: plain Keras, inputs scaled by x / 255 outside."""
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs) if rescale else inputs
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(outputs, activation="softmax")(x))


def write_image(path, size=(50, 40), mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode).save(path)
    return path


@pytest.mark.parametrize("suffix", [".h5", ".keras"])
def test_a_plain_keras_model_opens_and_gets_cifar10_names(tmp_path, suffix):
    path = tmp_path / f"notebook{suffix}"
    model = notebook_model()
    model.save(path)
    classifier = Classifier(path)
    assert classifier.class_names == cifar10_class_names()
    assert classifier.scale == "1"  # no Rescaling inside: fed x / 255 like in the notebook
    image = write_image(tmp_path / "big.png", size=(300, 200))
    [result] = classifier.classify([image], top_k=3)
    assert result.error == "" and len(result.labels) == 3
    expected = model.predict(classifier.load_image(image)[None].astype("float32") / 255, verbose=0)[0]
    assert result.labels[0] == cifar10_class_names()[int(expected.argmax())]
    assert result.probabilities[0] == pytest.approx(float(expected.max()), rel=1e-5)


def test_many_images_in_chunks_score_as_plain_predict(tmp_path):
    """More images than one chunk, the last one partial: the chunked path
    gives what plain Keras gives for the whole set."""
    path = tmp_path / "notebook.h5"
    model = notebook_model()
    model.save(path)
    images = np.random.default_rng(1).integers(0, 256, (45, 32, 32, 3), dtype=np.uint8)
    probs = Classifier(path).predict_arrays(images, batch_size=16)
    expected = model.predict(images.astype("float32") / 255, verbose=0)
    assert probs.shape == (45, 10)
    np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("suffix", [".h5", ".keras"])
def test_class_names_travel_inside_the_file(tmp_path, suffix):
    path = tmp_path / f"app{suffix}"
    notebook_model(outputs=3, rescale=True).save(path)
    write_class_names(path, ["cat", "dog", "eel"])
    classifier = Classifier(path)
    assert classifier.class_names == ["cat", "dog", "eel"]
    assert classifier.scale == "255"
    keras.models.load_model(path)  # the file is still a plain Keras model


def test_a_lambda_layer_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Lambda(lambda t: t * 2)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(x)))
    for suffix in (".h5", ".keras"):
        path = tmp_path / f"lambda{suffix}"
        model.save(path)
        with pytest.raises(ModelError, match="Lambda layer"):
            load_model_safely(path)
    assert not marker.exists()


@pytest.mark.parametrize("name, content, message", [
    ("notes.h5", b"just some text", "not an HDF5 file"),
    ("notes.keras", b"just some text", "not a .keras zip"),
    ("picture.png", None, "not a Keras model file"),
    ("missing.h5", "absent", "no such file"),
])
def test_files_that_are_not_models(tmp_path, name, content, message):
    path = tmp_path / name
    if content is None:
        write_image(path)
    elif content != "absent":
        path.write_bytes(content)
    with pytest.raises(ModelError, match=message):
        Classifier(path)


def test_weights_only_and_wrong_shape_models_are_explained(tmp_path):
    weights = tmp_path / "only.weights.h5"
    notebook_model().save_weights(weights)
    renamed = tmp_path / "only.h5"
    weights.rename(renamed)
    with pytest.raises(ModelError, match="weights only"):
        Classifier(renamed)

    inputs = keras.Input((784,))
    flat = tmp_path / "flat.h5"
    keras.Model(inputs, keras.layers.Dense(10)(inputs)).save(flat)
    with pytest.raises(ModelError, match=r"takes inputs of shape \(784,\), not images"):
        Classifier(flat)


def test_non_image_files_get_a_message_and_the_rest_are_classified(tmp_path):
    path = tmp_path / "m.h5"
    notebook_model(rescale=True).save(path)
    folder = tmp_path / "pictures"
    folder.mkdir()
    write_image(folder / "a.jpg")
    write_image(folder / "b.png", mode="L")
    (folder / "c.png").write_text("not really a png")
    files = image_files([folder])
    assert [f.name for f in files] == ["a.jpg", "b.png", "c.png"]
    results = Classifier(path).classify(files)
    assert [bool(r.error) for r in results] == [False, False, True]
    assert "c.png is not an image file" in results[2].error


def test_a_picture_reaches_the_model_as_it_did_in_training(tmp_path):
    """A JPEG turned by EXIF and a 16-bit PNG: Classify feeds the pixels an image folder gave for training."""
    photo = write_rotated_jpeg(tmp_path / "pictures" / "cat" / "turned.jpg", size=(48, 24))
    deep = tmp_path / "pictures" / "dog" / "deep.png"
    write_gradient_png16(deep, width=64, height=64)
    ds = load_dataset(DatasetConfig(source="folder", path=str(tmp_path / "pictures"), validation_split=0.0))
    trained_on = [ds.x_train[list(ds.y_train).index(label)] for label in (0, 1)]
    path = tmp_path / "m.h5"
    model = notebook_model(rescale=True)
    model.save(path)
    classifier = Classifier(path)
    for file, pixels in zip((photo, deep), trained_on):
        np.testing.assert_array_equal(classifier.load_image(file), pixels)
    assert trained_on[0][:, 16:].mean() > 200 and trained_on[0][:, :16].mean() < 50
    assert 100 < trained_on[1].mean() < 155
    results = classifier.classify([photo, deep], top_k=10)
    expected = model.predict(np.stack(trained_on).astype("float32"), verbose=0)
    for result, row in zip(results, expected):
        assert result.error == ""
        by_name = dict(zip(result.labels, result.probabilities))
        np.testing.assert_allclose([by_name[name] for name in cifar10_class_names()], row, rtol=1e-5, atol=1e-6)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_one_bad_file_among_good_ones_gets_its_own_error(tmp_path, monkeypatch):
    path = tmp_path / "m.h5"
    notebook_model(rescale=True).save(path)
    good = [write_image(tmp_path / "a.png", seed=1), write_image(tmp_path / "d.jpg", seed=2)]
    bomb = write_image(tmp_path / "b.png", size=(60, 60))
    truncated = tmp_path / "c.png"
    truncated.write_bytes(write_image(tmp_path / "whole.png", size=(40, 40)).read_bytes()[:300])
    classifier = Classifier(path)
    alone = classifier.classify(good)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)
    results = classifier.classify([good[0], bomb, truncated, good[1]])
    assert [r.path for r in results] == [str(good[0]), str(bomb), str(truncated), str(good[1])]
    assert "b.png is too large to decode safely" in results[1].error and not results[1].labels
    assert "c.png is not an image file" in results[2].error and not results[2].labels
    for result, expected in zip((results[0], results[3]), alone):
        assert result.error == "" and result.labels == expected.labels
        assert result.probabilities == pytest.approx(expected.probabilities)


def test_folders_expand_to_the_files_a_dataset_folder_reads(tmp_path):
    for name in ("a.JPG", "b.pgm", "c.txt", "d.webp"):
        (tmp_path / name).write_bytes(b"")
    assert [f.name for f in image_files([tmp_path])] == ["a.JPG", "b.pgm", "d.webp"]


def test_a_grayscale_model_gets_the_pictures_gray_levels(tmp_path):
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(keras.layers.Rescaling(1 / 255)(inputs)))
    path = tmp_path / "fashion.h5"
    keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x)).save(path)
    Image.new("L", (40, 40), 77).save(tmp_path / "gray.png")
    classifier = Classifier(path)
    image = classifier.load_image(tmp_path / "gray.png")
    assert image.shape == (28, 28, 1) and (image == 77).all()
    [result] = classifier.classify([tmp_path / "gray.png"])
    assert result.error == "" and len(result.labels) == 3
