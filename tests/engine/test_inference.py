"""Opening model files safely and classifying image files."""

import zipfile

import keras
import numpy as np
import pytest
from PIL import Image

from datasetfiles import write_gradient_png16, write_rotated_jpeg
from engine.config import DatasetConfig
from engine.datasets import cifar10_class_names, load_dataset
from engine.errors import EngineError, ModelError
from engine.inference import (
    PREPROCESSING_CHOICES, Classifier, PredictionCsv, batch_warnings, check_csv_path, classify_in_chunks,
    image_files, is_model_file, load_model_safely, write_class_names,
)


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


def biased_model(winner=3, outputs=10):
    """Every picture gives class `winner`: what a wrong pixel scaling often looks like."""
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    dense = keras.layers.Dense(outputs, activation="softmax")
    model = keras.Model(inputs, dense(x))
    bias = np.zeros(outputs, "float32")
    bias[winner] = 5.0
    dense.set_weights([np.zeros((3, outputs), "float32"), bias])
    return model


def random_pictures(folder, count, seed=0, size=(40, 30)):
    folder.mkdir(parents=True, exist_ok=True)
    return [write_image(folder / f"{i:03d}.png", size=size, seed=seed + i) for i in range(count)]


def test_model_info_of_an_app_model(tmp_path):
    """Names from the file, parameters as Keras counts them, the Rescaling found inside."""
    path = tmp_path / "app.keras"
    model = notebook_model(outputs=3, rescale=True)
    model.save(path)
    write_class_names(path, ["cat", "dog", "eel"])
    info = Classifier(path).info
    assert info.name == model.name and info.input_shape == (32, 32, 3) and info.image_size == (32, 32)
    assert info.class_names == ["cat", "dog", "eel"] and info.names_source == "from the file"
    assert info.num_classes == 3 and info.parameters == model.count_params()
    assert info.inside == "Rescaling x / 255" and info.preprocessing == "inside"
    assert "inside the model" in info.reason and "0..255" in info.reason
    assert any("3 classes" in line for line in info.lines())


def test_names_fall_back_to_cifar10_or_numbers_and_say_so(tmp_path):
    ten, five = tmp_path / "ten.h5", tmp_path / "five.h5"
    notebook_model(outputs=10).save(ten)
    notebook_model(outputs=5).save(five)
    write_class_names(five, ["a", "b"])  # names that do not fit the outputs are not used
    assert Classifier(ten).info.names_source == "CIFAR-10's names (the file has none; it has 10 outputs)"
    info = Classifier(five).info
    assert info.class_names == [f"class {i}" for i in range(5)]
    assert info.names_source.startswith("class 0…") and "2 names do not fit its 5 outputs" in info.names_source


def test_preprocessing_nested_inside_a_submodel_is_found(tmp_path):
    """A Normalization in a nested preprocessing model, after augmentation: still inside."""
    inputs = keras.Input((32, 32, 3))
    prepare = keras.Sequential([keras.layers.RandomFlip("horizontal"),
                                keras.layers.Normalization(mean=(120.0, 110.0, 100.0), variance=(4.0, 4.0, 4.0))],
                               name="prepare")
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(prepare(inputs)))
    path = tmp_path / "nested.keras"
    keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x)).save(path)
    classifier = Classifier(path)
    assert classifier.preprocessing == "inside"
    assert classifier.info.inside == "Normalization: mean 120, 110, 100, std 2, 2, 2"


def test_a_pretrained_base_without_preprocessing_defaults_to_what_it_was_trained_on(tmp_path):
    inputs = keras.Input((32, 32, 3))
    base = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(4, 3)], name="resnet50")
    x = keras.layers.GlobalAveragePooling2D()(base(inputs))
    path = tmp_path / "transfer.h5"
    keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x)).save(path)
    classifier = Classifier(path)
    assert classifier.preprocessing == "caffe" and classifier.info.inside == ""
    assert "resnet50" in classifier.preprocessing_reason
    plain = tmp_path / "plain.h5"
    notebook_model().save(plain)
    assert Classifier(plain).preprocessing == "unit"
    assert "x / 255" in Classifier(plain).preprocessing_reason


@pytest.mark.parametrize("choice", PREPROCESSING_CHOICES)
def test_each_preprocessing_choice_feeds_what_keras_would(tmp_path, choice):
    """Each choice's probabilities equal model.predict on the pixels scaled as Keras' own helpers scale them."""
    path = tmp_path / "m.h5"
    model = notebook_model()
    model.save(path)
    classifier = Classifier(path).with_preprocessing(choice)
    assert classifier.preprocessing == choice
    assert ("as chosen" in classifier.preprocessing_reason) == (choice != "unit")  # unit is this model's default
    images = np.random.default_rng(3).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    x = images.astype("float32")
    scaled = {"unit": x / 255, "symmetric": x / 127.5 - 1, "raw": x,
              "caffe": keras.applications.imagenet_utils.preprocess_input(x.copy(), mode="caffe")}[choice]
    np.testing.assert_allclose(classifier.model_input(images), scaled, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(classifier.predict_arrays(images), model.predict(scaled, verbose=0),
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ModelError, match="not one of"):
        classifier.with_preprocessing("inside")


def test_chunks_come_one_at_a_time_and_stop_when_asked(tmp_path):
    """The second chunk is decoded only when asked for: a file spoiled after the first chunk shows it."""
    path = tmp_path / "m.h5"
    notebook_model(rescale=True).save(path)
    classifier = Classifier(path)
    files = random_pictures(tmp_path / "pictures", 10)
    chunks = classify_in_chunks([classifier], files, chunk_size=4, thumbnail_size=16)
    first = next(chunks)
    assert first.start == 0 and first.paths == [str(f) for f in files[:4]]
    assert all(p.error == "" and len(p.labels) == 5 for p in first.predictions[0])
    assert all(t.shape == (16, 16, 3) and t.dtype == np.uint8 for t in first.thumbnails)
    files[5].write_bytes(b"spoiled after the first chunk")
    second = next(chunks)
    assert second.start == 4 and "005.png is not an image file" in second.predictions[0][1].error
    assert second.thumbnails[1] is None and second.thumbnails[0] is not None
    asked = []
    stopped = list(classify_in_chunks([classifier], files, chunk_size=4, should_stop=lambda: asked.append(1) or
                                      len(asked) > 2))
    assert len(stopped) == 2


def test_two_models_of_different_sizes_classify_the_same_files(tmp_path):
    small, large = tmp_path / "small.h5", tmp_path / "large.keras"
    small_model, large_model = notebook_model(rescale=True), notebook_model(size=48)
    small_model.save(small)
    large_model.save(large)
    a, b = Classifier(small), Classifier(large)
    files = random_pictures(tmp_path / "pictures", 5)
    [chunk] = classify_in_chunks([a, b], files, top_k=10)
    for classifier, model, predictions in ((a, small_model, chunk.predictions[0]),
                                           (b, large_model, chunk.predictions[1])):
        images = np.stack([classifier.load_image(f) for f in files])
        expected = model.predict(classifier.model_input(images), verbose=0)
        for prediction, row in zip(predictions, expected):
            by_name = dict(zip(prediction.labels, prediction.probabilities))
            np.testing.assert_allclose([by_name[n] for n in classifier.class_names], row, rtol=1e-5, atol=1e-6)


def test_a_model_that_outputs_nan_says_so(tmp_path):
    model = biased_model()
    dense = model.layers[-1]
    dense.set_weights([np.full((3, 10), np.nan, "float32"), np.zeros(10, "float32")])
    path = tmp_path / "broken.keras"
    model.save(path)
    classifier = Classifier(path)
    results = classifier.classify(random_pictures(tmp_path / "pictures", 3))
    assert all("broken.keras gave NaN" in r.error and not r.labels and not r.probabilities for r in results)
    [warning] = batch_warnings(results, classifier)
    assert "gave NaN (not a number) for 3 of 3 images" in warning and "nan%" not in warning


def test_a_sigmoid_output_is_two_classes(tmp_path):
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))
    path = tmp_path / "binary.h5"
    model.save(path)
    write_class_names(path, ["dog", "cat"])
    classifier = Classifier(path)
    assert classifier.info.sigmoid and classifier.class_names == ["dog", "cat"]
    assert classifier.info.names_source == "from the file"
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    p = model.predict(images.astype("float32"), verbose=0)[:, 0]
    np.testing.assert_allclose(classifier.predict_arrays(images), np.stack([1 - p, p], axis=1), rtol=1e-5)


def test_logits_are_shown_as_probabilities(tmp_path):
    inputs = keras.Input((32, 32, 3))
    model = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(inputs)))
    path = tmp_path / "logits.h5"
    model.save(path)
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    logits = model.predict(images.astype("float32") / 255, verbose=0)
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(Classifier(path).predict_arrays(images), expected, rtol=1e-5, atol=1e-6)


def test_every_picture_the_same_class_suggests_the_scaling(tmp_path):
    path = tmp_path / "biased.h5"
    biased_model(winner=3).save(path)
    classifier = Classifier(path)
    results = classifier.classify(random_pictures(tmp_path / "pictures", 5))
    [warning] = batch_warnings(results, classifier)
    assert warning.startswith("every picture came out as 'cat'") and "pixel scaling may be wrong" in warning
    assert batch_warnings(results[:3], classifier) == []  # three pictures of one class say little


def test_a_csv_gets_a_row_per_file_as_results_come(tmp_path):
    path = tmp_path / "m.h5"
    notebook_model(rescale=True).save(path)
    classifier = Classifier(path)
    files = random_pictures(tmp_path / "pictures", 5)
    files[2].write_bytes(b"no picture")
    target = check_csv_path(tmp_path / "out.csv", files)
    with PredictionCsv(target) as table:
        for chunk in classify_in_chunks([classifier], files, chunk_size=2):
            table.write(chunk.paths, chunk.predictions)
            assert len((tmp_path / "out.csv").read_text().splitlines()) == 1 + chunk.start + len(chunk.paths)
    import csv

    rows = list(csv.DictReader(target.open()))
    assert [r["file"] for r in rows] == [str(f) for f in files]
    assert "002.png is not an image file" in rows[2]["error"] and rows[2]["top_class"] == ""
    expected = classifier.classify(files, top_k=5)
    for row, prediction in zip(rows, expected):
        if not prediction.error:
            assert row["top_class"] == row["class_1"] == prediction.labels[0]
            assert float(row["probability_5"]) == pytest.approx(prediction.probabilities[4], abs=1e-6)
    with PredictionCsv(tmp_path / "two.csv", top_k=2, models=("A", "B")) as table:
        table.write([str(files[0])], [expected[:1], expected[:1]])
    header = (tmp_path / "two.csv").read_text().splitlines()[0].split(",")
    assert header[:3] == ["file", "A_top_class", "A_probability"] and header[-1] == "B_error"


def test_a_csv_path_is_checked_before_any_work(tmp_path):
    picture = write_image(tmp_path / "a.png")
    (tmp_path / "taken.csv").write_text("")
    for target, message in ((tmp_path, "is a folder"), (tmp_path / "missing" / "x.csv", "does not exist"),
                            (tmp_path / "b.jpg", "looks like an image"), ("", "no CSV file given")):
        with pytest.raises(EngineError, match=message):
            check_csv_path(target)
    with pytest.raises(EngineError, match="is one of the files being read"):
        check_csv_path(tmp_path / "taken.csv", [picture, tmp_path / "taken.csv"])
    assert check_csv_path(tmp_path / "taken.csv", [picture]) == tmp_path / "taken.csv"


def test_more_models_that_are_not_image_classifiers(tmp_path):
    first, second = keras.Input((32, 32, 3)), keras.Input((32, 32, 3))
    flat = keras.layers.Flatten()(keras.layers.Add()([first, second]))
    keras.Model([first, second], keras.layers.Dense(10)(flat)).save(tmp_path / "two_inputs.keras")
    with pytest.raises(ModelError, match="two_inputs.keras has 2 inputs"):
        Classifier(tmp_path / "two_inputs.keras")
    flat = keras.layers.Flatten()(first)
    keras.Model(first, [keras.layers.Dense(10)(flat), keras.layers.Dense(2)(flat)]).save(tmp_path / "heads.h5")
    with pytest.raises(ModelError, match="heads.h5 has 2 outputs"):
        Classifier(tmp_path / "heads.h5")
    with zipfile.ZipFile(tmp_path / "archive.keras", "w") as archive:
        archive.writestr("notes.txt", "hello")
    with pytest.raises(ModelError, match="archive.keras is a zip archive but not a saved Keras model"):
        Classifier(tmp_path / "archive.keras")
    (tmp_path / "folder.h5").mkdir()
    with pytest.raises(ModelError, match="folder.h5 is a folder"):
        Classifier(tmp_path / "folder.h5")
    assert is_model_file("x.KERAS") and is_model_file("y.h5") and not is_model_file("z.png")
