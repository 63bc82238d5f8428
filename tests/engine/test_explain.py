"""Grad-CAM on the app's models, on TensorFlow in-process and on PyTorch and JAX in subprocesses.

Keras picks its backend once per process, so the other backends run the same
checks in a subprocess, on a model trained here and saved: their heatmaps
must equal TensorFlow's. Each is skipped where its backend is not installed
(CI installs torch; see .ci/run).
"""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

from engine.config import ModelConfig
from engine.errors import ModelError
from engine.explain import Explainer, ExplainError, grad_cam, jet, overlay
from engine.models import build_model
from toydata import toy_images

HERE = Path(__file__).parent
ROOT = HERE.parents[1]


def peak_in_square(heatmap: np.ndarray, label: int) -> bool:
    """Whether the map's hottest pixel lies in the quadrant the toy class's bright square fills."""
    row, col = np.unravel_index(int(heatmap.argmax()), heatmap.shape)
    half_h, half_w = heatmap.shape[0] // 2, heatmap.shape[1] // 2
    return divmod(int(label), 2) == (row // half_h, col // half_w)


@pytest.fixture(scope="module")
def toy_model(tmp_path_factory):
    """The second seed's CNN trained on the toy quadrants until it is clearly right, saved as .keras,
    with TensorFlow's Grad-CAM of its test images beside it."""
    keras.utils.set_random_seed(0)
    x, y = toy_images(320, seed=1)
    model = build_model(ModelConfig(architecture="cnn", weights="none"), (32, 32, 3), 4)
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=6, batch_size=16, verbose=0)
    x_test, y_test = toy_images(40, seed=3)
    folder = tmp_path_factory.mktemp("toy_model")
    model.save(folder / "cnn.keras")
    cams = [grad_cam(model, image) for image in x_test]
    np.savez(folder / "expected.npz", x=x_test, y=y_test, heatmaps=np.stack([c.heatmap for c in cams]),
             classes=np.array([c.class_index for c in cams]))
    return model, folder, x_test, y_test, cams


def test_on_the_toy_task_the_map_peaks_in_the_bright_square(toy_model):
    model, _, x_test, y_test, cams = toy_model
    predicted = np.array([c.class_index for c in cams])
    assert (predicted == y_test).mean() >= 0.9  # trained until clearly right
    right = [(c, label) for c, label in zip(cams, y_test) if c.class_index == label]
    inside = [peak_in_square(c.heatmap, label) for c, label in right]
    assert np.mean(inside) >= 0.8, f"{sum(inside)} of {len(right)} maps peak in the square"
    for cam in cams:
        assert cam.heatmap.shape == (32, 32) and cam.heatmap.dtype == np.float32
        assert cam.heatmap.min() >= 0.0 and cam.heatmap.max() == pytest.approx(1.0)
        assert cam.layer_name == "conv3" and cam.feature_size == (4, 4)
    np.testing.assert_allclose(np.stack([c.probabilities for c in cams]), model.predict(x_test, verbose=0),
                               atol=1e-5)
    classic = grad_cam(model, x_test[0], method="gradcam")  # channel weights averaged over the map
    assert classic.method == "gradcam" and classic.heatmap.shape == (32, 32)
    assert 0.0 <= classic.heatmap.min() and classic.heatmap.max() <= 1.0


def test_where_the_head_pools_the_map_both_methods_give_the_same_map():
    """Where the explained map is the one the head averages (as the pretrained bases' last blocks at
    their usual input sizes), every position has the same gradient, so the element-wise weighting is
    Grad-CAM's own."""
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.Conv2D(16, 3, activation="relu", name="last")(x)
    x = keras.layers.Dense(8, activation="relu")(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(x))
    image = toy_images(1)[0][0]
    element_wise, averaged = grad_cam(model, image), grad_cam(model, image, method="gradcam")
    np.testing.assert_allclose(element_wise.heatmap, averaged.heatmap, atol=1e-4)


@pytest.mark.parametrize("architecture, layer", [
    ("simcnn", "conv3"),  # flat: the last map is 4x4 (its batch normalisation is centred, not rectified)
    ("mobilenetv2", "block_6_expand_relu"),  # inside the nested base: the next block halves 4x4 to 2x2
    ("vgg16", "block4_conv3"),
])
def test_the_layer_is_the_last_convolutional_map_of_at_least_4x4(architecture, layer):
    config = ModelConfig(architecture=architecture, weights="none", input_size=32 if architecture != "simcnn" else 0)
    model = build_model(config, (32, 32, 3), 4)
    image = toy_images(1)[0][0]
    cam = grad_cam(model, image)
    assert cam.layer_name == layer and cam.feature_size == (4, 4)
    assert cam.heatmap.shape == (32, 32) and cam.heatmap.dtype == np.float32
    assert 0.0 <= cam.heatmap.min() and cam.heatmap.max() <= 1.0
    np.testing.assert_allclose(cam.probabilities, model.predict(image[None], verbose=0)[0], atol=1e-5)
    assert cam.class_index == int(cam.probabilities.argmax())
    other = grad_cam(model, image, class_index=(cam.class_index + 1) % 4)
    assert other.class_index == (cam.class_index + 1) % 4 and other.layer_name == layer


def test_an_image_of_another_size_is_resized_for_the_model_and_the_map_has_its_size(toy_model):
    model, _, x_test, _, _ = toy_model
    big = np.repeat(np.repeat(x_test[0], 3, axis=0), 2, axis=1)  # 96 x 64
    cam = grad_cam(model, big)
    assert cam.heatmap.shape == (96, 64) and 0.0 <= cam.heatmap.min() and cam.heatmap.max() <= 1.0
    assert cam.class_index == grad_cam(model, x_test[0]).class_index


def test_where_grad_cam_cannot_help_it_says_so():
    inputs = keras.Input((32, 32, 3))
    dense = keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(keras.layers.Flatten()(inputs)),
                        name="dense_only")
    with pytest.raises(ExplainError, match="dense_only has no convolution layer"):
        grad_cam(dense, np.zeros((32, 32, 3), np.uint8))

    small = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, strides=8, padding="same", name="strided")(small)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="one_by_one")(x)
    tiny = keras.Model(small, keras.layers.Dense(4, activation="softmax")(keras.layers.Flatten()(x)), name="tiny")
    with pytest.raises(ExplainError, match=r"at most 2x2 \(layer strided\).*at least 4x4"):
        grad_cam(tiny, np.zeros((16, 16, 3), np.uint8))

    model = build_model(ModelConfig(architecture="simcnn", weights="none"), (32, 32, 3), 4)
    with pytest.raises(ExplainError, match="class 7 is out of range"):
        grad_cam(model, np.zeros((32, 32, 3), np.uint8), class_index=7)
    with pytest.raises(ExplainError, match="no layer named 'nope'"):
        Explainer(model, layer_name="nope")
    assert issubclass(ExplainError, ModelError)  # the CLI and the window show it as any model error


def test_a_layer_can_be_named_and_a_sequential_model_is_followed():
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Rescaling(1 / 255),
                              keras.layers.Conv2D(8, 3, activation="relu", name="first"),
                              keras.layers.MaxPooling2D(), keras.layers.Conv2D(8, 3, activation="relu", name="second"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3, activation="softmax")])
    image = toy_images(1)[0][0]
    assert grad_cam(model, image).layer_name == "second"
    named = grad_cam(model, image, layer_name="first")
    assert named.layer_name == "first" and named.feature_size == (30, 30) and named.heatmap.shape == (32, 32)


def test_the_overlay_is_the_image_blended_with_a_jet_map_and_enlarged():
    image = np.full((32, 32, 3), 128, np.uint8)
    heatmap = np.zeros((32, 32), np.float32)
    heatmap[:16, :16] = 1.0
    picture = overlay(image, heatmap, min_side=256)
    assert picture.shape == (256, 256, 3) and picture.dtype == np.uint8
    hot, cold = picture[40, 40].astype(int), picture[200, 200].astype(int)
    assert hot[0] > hot[2] and cold[2] > cold[0]  # red where the map is 1, blue where it is 0
    assert overlay(image, heatmap).shape == (32, 32, 3)
    np.testing.assert_array_equal(jet(np.array([0.0, 1.0]))[:, 1], [0, 0])


SCRIPT = textwrap.dedent("""
    import json, sys
    sys.path[:0] = [{root!r}, {here!r}]
    import keras
    import numpy as np
    from engine.config import ModelConfig
    from engine.explain import ExplainError, grad_cam
    from engine.inference import load_model_safely
    from engine.models import build_model

    model = load_model_safely({folder!r} + "/cnn.keras")
    expected = np.load({folder!r} + "/expected.npz")
    cams = [grad_cam(model, image) for image in expected["x"]]
    base = build_model(ModelConfig(architecture="mobilenetv2", weights="none", input_size=32), (32, 32, 3), 4)
    nested = grad_cam(base, expected["x"][0])
    inputs = keras.Input((32, 32, 3))
    dense = keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(keras.layers.Flatten()(inputs)))
    try:
        grad_cam(dense, expected["x"][0])
        refused = ""
    except ExplainError as exc:
        refused = str(exc)
    print("RESULT" + json.dumps({{
        "backend": keras.backend.backend(),
        "largest_difference": float(np.abs(np.stack([c.heatmap for c in cams]) - expected["heatmaps"]).max()),
        "same_classes": [c.class_index for c in cams] == expected["classes"].tolist(),
        "layers": sorted({{c.layer_name for c in cams}}),
        "nested": [nested.layer_name, list(nested.heatmap.shape), float(nested.heatmap.min()),
                   float(nested.heatmap.max())],
        "refused": refused,
    }}))
""")


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_other_backends_give_the_same_maps(toy_model, backend):
    """The same saved model explained on PyTorch (torch.autograd) and JAX (jax.grad) gives TensorFlow's
    maps; a nested base and a model without convolutions behave as on TensorFlow."""
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    _, folder, _, _, _ = toy_model
    script = SCRIPT.format(root=str(ROOT), here=str(HERE), folder=str(folder))
    env = {**os.environ, "KERAS_BACKEND": backend, "CUDA_VISIBLE_DEVICES": "", "JAX_PLATFORMS": "cpu"}
    process = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, env=env,
                             check=False)
    lines = [line for line in process.stdout.splitlines() if line.startswith("RESULT")]
    assert process.returncode == 0 and lines, process.stderr[-3000:]
    out = json.loads(lines[0][len("RESULT"):])

    assert out["backend"] == backend
    assert out["same_classes"] and out["layers"] == ["conv3"]
    assert out["largest_difference"] < 1e-3
    layer, shape, low, high = out["nested"]
    assert layer == "block_6_expand_relu" and shape == [32, 32] and 0.0 <= low and high <= 1.0
    assert "has no convolution layer" in out["refused"]
