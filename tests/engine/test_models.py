"""The model zoo against the seeds' exact models, with real Keras.

Pretrained bases are built with random weights (no ImageNet file can be
downloaded here); weights files are made from such bases.
"""

import zipfile

import h5py
import keras
import numpy as np
import pytest

from engine import models
from engine.config import MOST_TRAINABLE_LAYERS, ModelConfig, preset
from engine.errors import ModelError

CIFAR = (32, 32, 3)


def images(count=4, shape=CIFAR, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(count, *shape), dtype=np.uint8)


def predict(model, x):
    """Inference without predict()'s graph tracing, which costs seconds for ResNet50."""
    return keras.ops.convert_to_numpy(model(x, training=False))


def model_config(architecture, **settings):
    settings.setdefault("weights", "none")
    return ModelConfig(architecture=architecture, **settings)


@pytest.mark.parametrize(
    "architecture, settings, total, trainable",
    [
        ("simcnn", {}, 123_210, 122_890),
        ("cnn", {}, 356_810, 356_810),
        ("resnet50", {}, 26_215_818, 2_628_106),
        ("resnet50", {"head": "linear", "input_size": 32}, 23_608_202, 20_490),
        ("vgg16", {}, 14_719_818, 5_130),
        ("vgg16", {"head": "dense256", "trainable_layers": 10}, 14_848_586, 13_703_178),
        ("mobilenetv2", {}, 2_270_794, 12_810),
    ],
)
def test_seed_models_have_their_exact_parameter_counts(architecture, settings, total, trainable):
    cfg = model_config(architecture, **settings)
    model = models.build_model(cfg, CIFAR, 10)
    counts = models.param_counts(model)
    assert counts == {"total": total, "trainable": trainable, "non_trainable": total - trainable}
    assert counts["total"] == model.count_params()
    assert models.estimate_param_counts(cfg, CIFAR, 10) == counts
    assert sum(row[2] for row in models.describe_model(model)) == total


def test_simcnn_is_the_papers_layer_stack():
    model = models.build_model(model_config("simcnn"), CIFAR, 10)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == [
        "InputLayer", "Rescaling",
        "Conv2D", "BatchNormalization", "MaxPooling2D",
        "Conv2D", "BatchNormalization", "MaxPooling2D",
        "Conv2D", "BatchNormalization",
        "Flatten", "Dense", "Dense",
    ]
    assert model.name == "simcnn"
    assert models.param_counts(model)["non_trainable"] == 320


def test_cifar_is_upsampled_seven_times_for_resnet50_and_resized_to_other_sizes():
    cfg = model_config("resnet50", head="linear")
    assert models.resolved_input_size(cfg, CIFAR) == 224
    upsample = models.build_model(cfg, CIFAR, 10).get_layer("upsample")
    assert tuple(upsample.size) == (7, 7)
    model = models.build_model(model_config("vgg16", input_size=40), CIFAR, 10)
    assert model.get_layer("resize").output.shape[1:3] == (40, 40)


def test_small_bases_default_to_the_data_size_and_at_least_32():
    assert models.resolved_input_size(model_config("vgg16"), CIFAR) == 32
    assert models.resolved_input_size(model_config("mobilenetv2", input_size=96), CIFAR) == 96
    assert models.resolved_input_size(model_config("simcnn", input_size=96), CIFAR) == 32
    model = models.build_model(model_config("vgg16"), (28, 28, 3), 10)
    assert model.get_layer("resize").output.shape[1:3] == (32, 32)


def test_uint8_images_give_softmax_probabilities():
    model = models.build_model(model_config("simcnn"), CIFAR, 10)
    probabilities = model.predict(images(), verbose=0)
    assert probabilities.shape == (4, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(predict(model, images()), probabilities, rtol=1e-5, atol=1e-6)


def test_augmentation_is_active_in_training_only():
    model = models.build_model(model_config("simcnn"), CIFAR, 10, augmentation="flip_crop", seed=1)
    assert models.param_counts(model)["total"] == 123_210
    assert [layer.name for layer in model.layers[1:3]] == ["augment_flip", "augment_shift"]
    x = images(8)
    first = model.predict(x, verbose=0)
    np.testing.assert_array_equal(first, model.predict(x, verbose=0))
    trained = keras.ops.convert_to_numpy(model(x, training=True))
    assert not np.allclose(first, trained)


def test_resnet50_02_preset_trains_the_whole_network_as_the_seed():
    """The seed's summary: 26,162,698 trainable, 53,120 non-trainable (the
    moving statistics of batch normalization)."""
    cfg = preset("ResNet50-02", "resnet50").model
    cfg.weights = "none"
    counts = models.estimate_param_counts(cfg, CIFAR, 10)
    assert counts == {"total": 26_215_818, "trainable": 26_162_698, "non_trainable": 53_120}


def test_fine_tuned_layers_keep_batch_norm_in_inference_mode():
    cfg = model_config("resnet50", input_size=32, trainable_layers=MOST_TRAINABLE_LAYERS)
    model = models.build_model(cfg, CIFAR, 10)
    counts = models.param_counts(model)
    assert counts["non_trainable"] == 2 * 53_120  # batch norm: statistics, scale and offset
    assert models.estimate_param_counts(cfg, CIFAR, 10) == counts
    x = images(2)
    trained = keras.ops.convert_to_numpy(model(x, training=True))
    np.testing.assert_allclose(trained, predict(model, x), rtol=1e-5, atol=1e-6)


def test_training_every_layer_trains_batch_norm_too():
    model = models.build_model(model_config("resnet50", input_size=32, trainable_layers=-1), CIFAR, 10)
    assert models.param_counts(model)["non_trainable"] == 53_120
    base = model.get_layer("resnet50")
    assert all(layer.trainable for layer in base.layers if isinstance(layer, keras.layers.BatchNormalization))


def test_frozen_base_trains_only_the_head():
    model = models.build_model(model_config("vgg16"), CIFAR, 10)
    assert not model.get_layer("vgg16").trainable
    assert [w.path for w in model.trainable_weights] == ["predictions/kernel", "predictions/bias"]


def tiny_fit(model, x):
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    model.fit(x, np.arange(len(x)) % 10, batch_size=len(x), epochs=1, verbose=0)


@pytest.mark.parametrize(
    "cfg, augmentation",
    [
        (model_config("simcnn"), "flip_crop"),
        (model_config("resnet50", input_size=32), "flip"),
    ],
    ids=["simcnn", "resnet50"],
)
def test_saved_models_open_with_plain_keras_and_predict_the_same(tmp_path, cfg, augmentation):
    model = models.build_model(cfg, CIFAR, 10, augmentation=augmentation, seed=3)
    x = images(4)
    if cfg.architecture == "simcnn":
        tiny_fit(model, x)
    expected = predict(model, x)
    # .keras first: a legacy .h5 save drops the optimizer from the live model's
    # compile config in Keras 3.15 (fixed upstream in keras-team/keras#23475).
    for suffix in (".keras", ".h5"):
        path = tmp_path / f"model{suffix}"
        model.save(path)
        if suffix == ".h5":
            with h5py.File(path, "r") as f:
                assert "model_config" in f.attrs
        else:
            assert "config.json" in zipfile.ZipFile(path).namelist()
        loaded = keras.models.load_model(path)
        assert models.param_counts(loaded) == models.param_counts(model)
        np.testing.assert_allclose(predict(loaded, x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "architecture, application, preprocess_input",
    [
        ("resnet50", keras.applications.ResNet50, keras.applications.resnet50.preprocess_input),
        ("vgg16", keras.applications.VGG16, keras.applications.vgg16.preprocess_input),
    ],
)
def test_in_model_caffe_preprocessing_equals_preprocess_input(tmp_path, architecture, application, preprocess_input):
    """RGB input minus the RGB mean into a channel-reversed first conv is preprocess_input's BGR."""
    keras.utils.set_random_seed(7)
    reference = application(include_top=False, weights=None, input_shape=CIFAR)
    weights_file = tmp_path / f"{architecture}_notop.h5"
    reference.save(weights_file)  # the layout of Keras' downloaded weights files
    cfg = model_config(architecture, weights="file", weights_file=str(weights_file), input_size=32)
    model = models.build_model(cfg, CIFAR, 10)
    head_input = model.get_layer("flatten" if architecture == "vgg16" else "pool").input
    features = keras.Model(model.input, head_input)
    x = images(4, seed=1)
    ours = predict(features, x)
    expected = predict(reference, preprocess_input(x.astype("float32")))
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_keras_weights_file_loads_into_the_base(tmp_path):
    reference = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=CIFAR)
    weights_file = tmp_path / "mobilenetv2.weights.h5"
    reference.save_weights(weights_file)
    cfg = model_config("mobilenetv2", weights="file", weights_file=str(weights_file))
    base = models.build_model(cfg, CIFAR, 10).get_layer("mobilenetv2")
    for loaded, saved in zip(base.get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(loaded, saved)


def test_missing_or_wrong_weights_file_names_the_file(tmp_path):
    missing = tmp_path / "nowhere_notop.h5"
    with pytest.raises(ModelError, match="nowhere_notop.h5 does not exist.*resnet50_weights_tf_dim_ordering"):
        models.build_model(model_config("resnet50", weights="file", weights_file=str(missing)), CIFAR, 10)

    text = tmp_path / "weights.txt"
    text.write_text("not weights")
    with pytest.raises(ModelError, match="weights.txt is not an .h5 or .keras file"):
        models.build_model(model_config("mobilenetv2", weights="file", weights_file=str(text)), CIFAR, 10)

    garbage = tmp_path / "garbage.h5"
    garbage.write_text("not an HDF5 file")
    with pytest.raises(ModelError, match="garbage.h5 does not fit VGG16"):
        models.build_model(model_config("vgg16", weights="file", weights_file=str(garbage)), CIFAR, 10)

    other = tmp_path / "vgg16_notop.h5"
    keras.applications.VGG16(include_top=False, weights=None, input_shape=CIFAR).save(other)
    with pytest.raises(ModelError, match="vgg16_notop.h5 does not fit ResNet50.*include_top=False"):
        models.build_model(model_config("resnet50", weights="file", weights_file=str(other), input_size=32), CIFAR, 10)


def test_imagenet_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(models, "IMAGENET_BASE_URL", (tmp_path / "offline").as_uri() + "/")
    monkeypatch.setattr(models, "WEIGHTS_CACHE_DIR", str(tmp_path / "cache"))
    cfg = model_config("resnet50", weights="imagenet", input_size=32)
    with pytest.raises(ModelError) as caught:
        models.build_model(cfg, CIFAR, 10)
    assert str(caught.value) == (
        "Could not download the ImageNet weights for ResNet50 (no internet connection?). "
        "Use a local weights file (weights: file) or train without pretrained weights (weights: none)."
    )
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_imagenet_weights_come_from_keras_cache(tmp_path, monkeypatch):
    """keras.applications' own file name in the cache is used without a download."""
    monkeypatch.setattr(models, "IMAGENET_BASE_URL", (tmp_path / "offline").as_uri() + "/")
    monkeypatch.setattr(models, "WEIGHTS_CACHE_DIR", str(tmp_path / "cache"))
    cached = tmp_path / "cache" / "models" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
    cached.parent.mkdir(parents=True)
    reference = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=CIFAR)
    reference.save(cached)
    model = models.build_model(model_config("mobilenetv2", weights="imagenet"), CIFAR, 10)
    for loaded, saved in zip(model.get_layer("mobilenetv2").get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(loaded, saved)


def test_grayscale_images_are_repeated_to_rgb_for_pretrained_bases():
    model = models.build_model(model_config("vgg16"), (32, 32, 1), 10)
    assert model.get_layer("gray_to_rgb").output.shape[-1] == 3
    assert models.param_counts(model)["total"] == 14_719_818
    gray = images(2, shape=(32, 32, 1))
    rgb = np.repeat(gray, 3, axis=-1)
    rgb_model = keras.Model(model.get_layer("imagenet_mean").input, model.output)
    np.testing.assert_allclose(predict(model, gray), predict(rgb_model, rgb.astype("float32")), rtol=1e-5, atol=1e-6)
    assert models.param_counts(models.build_model(model_config("simcnn"), (32, 32, 1), 10))["total"] == 122_634


@pytest.mark.parametrize(
    "architecture, shape, settings, message",
    [
        ("resnet50", (32, 32, 4), {}, "4 channels"),
        ("mobilenetv2", (32, 32, 2), {}, "2 channels"),
        ("vgg16", CIFAR, {"input_size": 16}, "at least 32"),
        ("simcnn", (16, 16, 3), {}, "too small for simcnn"),
        ("simcnn", CIFAR, {"head": "huge"}, "Unknown head"),
        ("bogus", CIFAR, {}, "Unknown architecture"),
    ],
)
def test_unusable_settings_are_model_errors(architecture, shape, settings, message):
    with pytest.raises(ModelError, match=message):
        models.build_model(model_config(architecture, **settings), shape, 10)


def test_unknown_augmentation_and_single_class_are_model_errors():
    with pytest.raises(ModelError, match="augmentation"):
        models.build_model(model_config("simcnn"), CIFAR, 10, augmentation="rotate")
    with pytest.raises(ModelError, match="at least 2 classes"):
        models.build_model(model_config("simcnn"), CIFAR, 1)


def test_a_seeded_build_gets_its_weights_while_another_thread_counts_parameters():
    """The window counts parameters (and opens model files) on other threads while a run builds its
    model; Keras draws each layer's initial seed from Python's global random, so without the app's
    lock the run would start from other weights than its seed gives."""
    import threading

    cfg = ModelConfig(architecture="cnn")

    def build():
        with models.making_layers(42):
            return [np.asarray(w) for w in models.build_model(cfg, (32, 32, 3), 10).weights]

    alone = build()
    done = threading.Event()

    def count_again_and_again():
        while not done.is_set():
            models._estimate.__wrapped__("cnn", 0, 0, "default", (32, 32, 3), 10)  # not the cached answer

    counter = threading.Thread(target=count_again_and_again)
    counter.start()
    try:
        beside = [build() for _ in range(3)]
    finally:
        done.set()
        counter.join()
    for weights in beside:
        for a, b in zip(alone, weights):
            np.testing.assert_array_equal(a, b)
