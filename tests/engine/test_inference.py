"""Opening model files safely and classifying image files."""

import keras
import numpy as np
import pytest
from PIL import Image

from engine.errors import ModelError
from engine.inference import CIFAR10_CLASSES, Classifier, image_files, load_model_safely, write_class_names


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
    assert classifier.class_names == CIFAR10_CLASSES
    assert classifier.scale == "1"  # no Rescaling inside: fed x / 255 like in the notebook
    image = write_image(tmp_path / "big.png", size=(300, 200))
    [result] = classifier.classify([image], top_k=3)
    assert result.error == "" and len(result.labels) == 3
    expected = model.predict(classifier.load_image(image)[None].astype("float32") / 255, verbose=0)[0]
    assert result.labels[0] == CIFAR10_CLASSES[int(expected.argmax())]
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
