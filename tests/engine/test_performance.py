"""The Trainer's speed levers keep the math: input stream, fused batch norm,
steps per call, mixed precision and several devices. Never timed here
(benchmarks/ measures speed)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

from engine.train_step import batch_norm_layers, fused_batch_norm
from engine.pipeline import ShuffledBatches, Stream, batches_per_pass, training_stream
from engine.runs import RunStore
from engine.training import SpeedSettings, Trainer, auto_steps_per_execution, steps_per_call
from toydata import toy_config, toy_dataset

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
TENSORFLOW = keras.backend.backend() == "tensorflow"


def test_steps_per_call_divides_the_epoch():
    assert steps_per_call(550, 50) == 50
    assert steps_per_call(1407, 50) == 21  # 1407 = 3 * 7 * 67
    assert steps_per_call(10, 64) == 10
    assert steps_per_call(7, 1) == 1


def test_the_work_of_a_step_sets_how_many_steps_a_call_runs():
    from engine import models
    from engine.config import ModelConfig

    model = models.build_model(ModelConfig(architecture="simcnn"), (32, 32, 3), 10)
    # conv1 30*30*32 outputs of 3*3*3 inputs, conv2 13*13*64 of 3*3*32, conv3 4*4*64 of 3*3*64, dense 1024*64 + 64*10
    expected = 30 * 30 * 32 * 27 + 13 * 13 * 64 * 288 + 4 * 4 * 64 * 576 + 1024 * 64 + 64 * 10
    assert models.multiply_accumulates(model) == expected == 4_548_608
    assert auto_steps_per_execution(expected, 32, most=50) == 50  # small steps: as many as allowed
    assert auto_steps_per_execution(expected, 256, most=50) == 7
    assert auto_steps_per_execution(3_858_551_808, 64, most=50) == 1  # ResNet50 at 224: one step is plenty


def make_stream(kind, x, y, batch, steps, seed):
    if kind == "pydataset":
        return Stream(ShuffledBatches(x, y, batch, steps, seed))
    return training_stream(x, y, batch, steps, seed, gather_in_step=kind == "gathered in the step")


def stream_labels(stream, batches):
    return [labels for _, labels in stream.batches(batches)]


@pytest.mark.parametrize("kind", ["gathered in the step", "gathered by tf.data", "pydataset"])
def test_each_pass_of_the_stream_is_a_new_order_of_every_image_once(kind):
    count, batch = 50, 8
    x = np.arange(count, dtype=np.uint8).reshape(count, 1, 1, 1)
    y = np.arange(count)
    per_pass = batches_per_pass(count, batch)
    stream = make_stream(kind, x, y, batch, 5, 7)
    batches = stream.batches(2 * per_pass)
    labels = [b[1] for b in batches]

    assert [len(b) for b in labels[:per_pass]] == [8] * 6 + [2]  # a partial batch ends each pass, as Keras'
    for images, targets in batches:
        np.testing.assert_array_equal(images.reshape(-1), targets)  # each image with its own label
    first = np.concatenate(labels[:per_pass])
    second = np.concatenate(labels[per_pass:])
    assert sorted(first) == sorted(second) == list(range(count))
    assert not np.array_equal(first, second)
    again = np.concatenate(stream_labels(make_stream(kind, x, y, batch, 5, 7), per_pass))
    np.testing.assert_array_equal(again, first)  # seeded: the same order on a new stream
    if kind == "gathered in the step":
        assert stream.to_batch is not None and stream.feed.element_spec.dtype == "int64"  # indices, not images


def test_every_epoch_has_exactly_steps_per_epoch(tmp_path):
    """Seven steps of 16 from 160 images: arrays given to fit would end the
    second epoch after three steps ("Your input ran out of data")."""
    trainer = Trainer(toy_config(epochs=3, steps_per_epoch=7), store=RunStore(tmp_path), dataset=toy_dataset())
    result = trainer.run()
    assert result.status == "finished", result.reason
    assert int(trainer.model.optimizer.iterations.numpy()) == 21


def simcnn():
    from engine import models
    from engine.config import ModelConfig

    return models.build_model(ModelConfig(architecture="simcnn"), (32, 32, 3), 4)


def conv_bn(dtype="float32"):
    """Conv - BN - dense: no ReLU or max pooling, whose ties would let two
    correct implementations route a gradient to different elements."""
    keras.config.set_dtype_policy(dtype)
    try:
        inputs = keras.Input((8, 8, 3))
        x = keras.layers.Conv2D(4, 3)(inputs)
        x = keras.layers.BatchNormalization(momentum=0.9)(x)
        outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(x))
        return keras.Model(inputs, outputs)
    finally:
        keras.config.set_dtype_policy("float32")


@pytest.mark.skipif(not TENSORFLOW, reason="the fused kernel is TensorFlow's")
def test_fused_batch_norm_matches_a_float64_reference():
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(16, 8, 8, 3))
    y = rng.integers(0, 3, size=16)
    loss = keras.losses.SparseCategoricalCrossentropy()

    def step(model, images):
        with tf.GradientTape() as tape:
            value = loss(y, model(images, training=True))
        return value, tape.gradient(value, model.trainable_variables), model.non_trainable_weights

    keras.utils.set_random_seed(3)
    model = conv_bn()
    reference = conv_bn("float64")
    reference.set_weights([w.astype(np.float64) for w in model.get_weights()])
    with fused_batch_norm(model) as fused:
        assert len(fused) == 1
        value, grads, moving = step(model, x.astype(np.float32))
    value64, grads64, moving64 = step(reference, x)

    assert float(value) == pytest.approx(float(value64), rel=1e-5)
    assert len(grads) == 6
    for g, g64 in zip(grads, grads64):
        g, g64 = g.numpy(), g64.numpy()
        assert np.linalg.norm(g - g64) <= 1e-4 * np.linalg.norm(g64) + 1e-7
    for m, m64 in zip(moving, moving64):
        np.testing.assert_allclose(m.numpy(), m64.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not TENSORFLOW, reason="the fused kernel is TensorFlow's")
def test_fused_batch_norm_leaves_the_saved_model_as_it_was(tmp_path):
    model = simcnn()
    config = model.get_config()
    with fused_batch_norm(model) as fused:
        assert len(fused) == 3
        model.save(tmp_path / "during.h5")
    assert all("call" not in vars(layer) for layer in batch_norm_layers(model))
    assert model.get_config() == config
    plain = keras.models.load_model(tmp_path / "during.h5")
    assert [type(layer).__name__ for layer in plain.layers] == [type(layer).__name__ for layer in model.layers]


@pytest.mark.skipif(not TENSORFLOW, reason="the in-step gather is the TensorFlow stream's")
def test_gathering_in_the_step_trains_the_same_weights_and_leaves_the_model_plain(tmp_path):
    weights = {}
    for gather in (True, False):
        speed = SpeedSettings(gather_in_step=gather)
        trainer = Trainer(toy_config(epochs=2, steps_per_epoch=7), store=RunStore(tmp_path / str(gather)),
                          dataset=toy_dataset(), speed=speed)
        result = trainer.run()
        assert result.status == "finished", result.reason
        model = trainer.model
        assert "train_step" not in vars(model) and model.train_function is None
        weights[gather] = model.get_weights()
    for a, b in zip(weights[True], weights[False]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # A later fit of the same model trains on the batches it is given.
    model.fit(np.zeros((8, 32, 32, 3), "uint8"), np.zeros(8, "int64"), epochs=1, verbose=0)


@pytest.mark.skipif(not TENSORFLOW, reason="XLA through TensorFlow's jit_compile")
def test_the_stop_gate_keeps_its_cond_out_of_xla():
    """XLA compiles the step inside the gate's cond, not the cond (which
    made SimCNN's epoch under XLA about 9x longer). Read from the traced graph."""
    import tensorflow as tf

    from engine.train_step import StepGate

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"], jit_compile=True)
    with StepGate().guarding(model):
        assert model.jit_compile is False  # Keras' own function around the step: no XLA
        spec = (tf.TensorSpec((8, 4), "float32"), tf.TensorSpec((8,), "int64"))
        graph = tf.function(model.train_step).get_concrete_function(spec).graph.as_graph_def()
    assert model.jit_compile is True
    assert "If" in {node.op for node in graph.node}
    compiled = [f for f in graph.library.function if f.attr["_XlaMustCompile"].b]
    assert len(compiled) == 1  # the step
    assert not any("If" in node.op for node in compiled[0].node_def)


@pytest.mark.skipif(not TENSORFLOW, reason="XLA through TensorFlow's jit_compile")
def test_under_xla_the_gated_multi_step_call_trains_as_one_step_per_call(tmp_path):
    """XLA (Keras' "auto" choice on GPUs) compiles the step inside the stop
    gate: the same weights as Keras' own XLA step without a gate."""
    weights = {}
    for per_call in (5, 1):
        trainer = Trainer(toy_config(epochs=1, steps_per_epoch=10, steps_per_execution=per_call),
                          store=RunStore(tmp_path / str(per_call)), dataset=toy_dataset(),
                          speed=SpeedSettings(jit_compile=True))
        result = trainer.run()
        assert result.status == "finished", result.reason
        assert trainer.model.jit_compile is True  # as compiled, once fit is done
        weights[per_call] = trainer.model.get_weights()
    assert int(trainer.model.optimizer.iterations.numpy()) == 10
    for a, b in zip(weights[5], weights[1]):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)  # the same XLA step (0 here; 2e-5 with the cond inside)


def test_speed_levers_off_still_train(tmp_path):
    speed = SpeedSettings(stream_input=False, fused_batch_norm=False)
    result = Trainer(toy_config(), store=RunStore(tmp_path), dataset=toy_dataset(), speed=speed).run()
    assert result.status == "finished", result.reason


def test_mixed_precision_trains_with_a_float32_softmax_and_saves_a_plain_model(tmp_path):
    store = RunStore(tmp_path)
    data = toy_dataset()
    trainer = Trainer(toy_config(precision="mixed_float16"), store=store, dataset=data)
    result = trainer.run()
    assert result.status == "finished", result.reason
    model = trainer.model
    assert model.get_layer("conv1").compute_dtype == "float16"
    assert model.get_layer("conv1").variable_dtype == "float32"
    assert model.get_layer("predictions").compute_dtype == "float32"
    assert type(model.optimizer).__name__ == "LossScaleOptimizer"
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored
    plain = keras.models.load_model(store.model_path(result.run_id))
    probabilities = plain.predict(data.x_test[:8], verbose=0)
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-3)


DISTRIBUTED = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    sys.path[:0] = [{root!r}, {here!r}]
    from engine.events import Listener
    from engine.runs import RunStore
    from test_performance import toy_config
    from toydata import toy_config, toy_dataset
    from engine.training import Trainer

    class Logs(Listener):
        def __init__(self):
            self.lines = []
        def on_log(self, text):
            self.lines.append(text)

    out = {{}}
    for architecture, distribution in [("cnn", "none"), ("cnn", "mirrored"), ("simcnn", "mirrored")]:
        config = toy_config(epochs=1, optimizer="sgd", learning_rate=0.05, distribution=distribution)
        config.model.architecture = architecture
        listener = Logs()
        trainer = Trainer(config, listener, RunStore({store!r}), dataset=toy_dataset(train=96, val=16, test=16))
        result = trainer.run()
        name = architecture + "-" + distribution
        out[name] = {{"status": result.status, "reason": result.reason, "log": listener.lines,
                     "loss": result.test_metrics.get("loss")}}
        np.savez({store!r} + "/" + name + ".npz", *trainer.model.get_weights())
    print("RESULT" + json.dumps(out))
""")


@pytest.mark.skipif(not TENSORFLOW, reason="two logical CPU devices are set up through TensorFlow")
def test_mirrored_on_two_cpu_devices_agrees_with_one_device(tmp_path):
    """The second seed's CNN has no batch norm, so two devices (8 images
    each) compute the same step as one (16 images); a second mirrored run in
    the same process works too (SimCNN, batch norm per device)."""
    script = DISTRIBUTED.format(root=str(ROOT), here=str(HERE), store=str(tmp_path))
    process = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                             env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    lines = [line for line in process.stdout.splitlines() if line.startswith("RESULT")]
    assert process.returncode == 0 and lines, process.stderr[-3000:]
    out = json.loads(lines[0][len("RESULT"):])
    for name, run in out.items():
        assert run["status"] == "finished", (name, run["reason"])
    assert out["cnn-mirrored"]["log"] == ["Training on 2 devices (/device:CPU:0, /device:CPU:1) with MirroredStrategy"]
    assert out["cnn-none"]["log"] == []
    one, two = np.load(tmp_path / "cnn-none.npz"), np.load(tmp_path / "cnn-mirrored.npz")
    assert len(one.files) == 10
    for name in one.files:
        np.testing.assert_allclose(two[name], one[name], rtol=1e-4, atol=1e-6)
    assert out["cnn-mirrored"]["loss"] == pytest.approx(out["cnn-none"]["loss"], rel=1e-4)


SPINNING = textwrap.dedent("""
    import json
    import keras
    from engine.system import prepare_tensorflow
    from tensorflow.python.eager import context
    first = prepare_tensorflow(cpus={cpus})
    keras.ops.convert_to_tensor(1.0)  # the runtime starts
    print(json.dumps({{"first": first, "off": context.context().config.experimental.disable_thread_spinning,
                      "later": prepare_tensorflow()}}))
""")


@pytest.mark.skipif(not TENSORFLOW, reason="thread spinning is TensorFlow's setting")
@pytest.mark.parametrize("cpus, choice, off", [(2, "auto", True), (16, "auto", False), (2, "on", False),
                                               (16, "off", True)])
def test_idle_threads_sleep_on_small_machines_unless_asked(cpus, choice, off):
    env = {**os.environ, "CIFAR_STUDIO_THREAD_SPINNING": choice, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", SPINNING.format(cpus=cpus)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"first": off, "off": off, "later": None}  # once started, the runtime is left as it is
