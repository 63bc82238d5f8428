"""Where a SimCNN training step's time goes, one TensorFlow kernel at a time.

Usage: python benchmarks/bench_kernels.py [--calls 200] [--repeats 7]

Times, at batch 32 on this CPU, each kernel of SimCNN's training step run
alone (each convolution forward with bias and ReLU, its filter gradient
and its input gradient; batch norm's fused forward kernel; the
predictions' softmax), next to a large matrix product for this machine's
peak, and the same math done another way, to show why the engine does not
do it that way:

- the first convolution with its 3 input channels padded with zeros to 4,
  8 or 16 (the same sums, more of them), or written as image patches times a
  matrix (TensorFlow's patch op);
- each convolution as its 9 shifted views of the input side by side times a
  matrix (patches built from slices, so no patch op);
- the input gradients of the second and third convolution as a forward
  convolution of the zero-padded output gradient with the filter flipped
  and transposed;
- the second convolution in the channels-first layout (NCHW);
- softmax of the 32x10 predictions from plain ops (exp, max, sum, divide)
  instead of TensorFlow's oneDNN kernel.

Each figure is the median over --repeats of one graph call that runs the
kernel --calls times in a loop (each call depends on the last, so none is
skipped). "loop alone" is that loop with only the dependency in it. A
kernel's time inside a real step is often longer: there two kernels may
share the two cores (benchmarks/bench_train.py measures whole epochs).
A last table checks that each other way gives the engine's way's result.
TensorFlow only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import machine, table  # noqa: E402

BATCH = 32
CONVS = {"conv1": (32, 3, 32), "conv2": (15, 32, 64), "conv3": (6, 64, 64)}  # input side, in, out channels


def looped(tf, kernel, x, calls: int):
    """A graph function that runs kernel(x + acc) `calls` times, each after the last."""

    @tf.function
    def run():
        acc = tf.zeros(())
        for _ in tf.range(calls):
            acc += tf.reshape(kernel(x + acc), [-1])[0]
        return acc

    return run


def timed(run, calls: int, repeats: int) -> float:
    """Milliseconds per kernel call: the median of `repeats` graph calls."""
    run()  # trace and warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) / calls * 1e3


def conv_kernels(tf, side: int, cin: int, cout: int, fmt: str = "NHWC"):
    """(name, function of x, input, flops) for one 3x3 valid convolution's three kernels."""
    out = side - 2
    shape = (BATCH, side, side, cin) if fmt == "NHWC" else (BATCH, cin, side, side)
    grad_shape = (BATCH, out, out, cout) if fmt == "NHWC" else (BATCH, cout, out, out)
    x = tf.random.normal(shape)
    w = tf.random.normal((3, 3, cin, cout))
    b = tf.zeros((cout,))
    dy = tf.random.normal(grad_shape)
    flops = 2 * BATCH * out * out * cout * 9 * cin
    strides = [1, 1, 1, 1]
    return [
        ("forward, bias, ReLU",
         lambda t: tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(t, w, 1, "VALID", data_format=fmt), b, data_format=fmt)),
         x, flops),
        ("filter gradient",
         lambda t: tf.raw_ops.Conv2DBackpropFilter(input=t, filter_sizes=[3, 3, cin, cout], out_backprop=dy,
                                                   strides=strides, padding="VALID", data_format=fmt),
         x, flops),
        ("input gradient",
         lambda t: tf.raw_ops.Conv2DBackpropInput(input_sizes=list(shape), filter=w, out_backprop=t,
                                                  strides=strides, padding="VALID", data_format=fmt),
         dy, flops),
    ]


def shifted(tf, t, out: int):
    """The 9 shifted out x out views of t (3x3 windows) side by side: (batch, out, out, 9 * channels)."""
    return tf.concat([t[:, i:i + out, j:j + out, :] for i in range(3) for j in range(3)], axis=-1)


def patch_op(tf, t, out: int):
    """TensorFlow's patch op on t (3x3 windows): (batch, out, out, 9 * channels)."""
    return tf.image.extract_patches(t, [1, 3, 3, 1], [1, 1, 1, 1], [1, 1, 1, 1], "VALID")


def patches_conv(tf, side: int, cin: int, cout: int, patches):
    """A convolution's forward and filter gradient as patches times a matrix (im2col),
    the patches built by `patches` (patch_op or shifted)."""
    out = side - 2
    x = tf.random.normal((BATCH, side, side, cin))
    w = tf.random.normal((9 * cin, cout))
    b = tf.zeros((cout,))
    dy = tf.random.normal((BATCH * out * out, cout))

    def rows(t):
        return tf.reshape(patches(tf, t, out), (-1, 9 * cin))

    return [("forward, bias, ReLU", lambda t: tf.nn.relu(tf.nn.bias_add(tf.matmul(rows(t), w), b)), x),
            ("filter gradient", lambda t: tf.matmul(rows(t), dy, transpose_a=True), x)]


def flipped(tf, w):
    """The filter that turns an output gradient into the input gradient by a forward convolution."""
    return tf.transpose(tf.reverse(w, [0, 1]), (0, 1, 3, 2))


def input_gradient_as_forward(tf, side: int, cin: int, cout: int):
    """(function of dy, dy): a 3x3 valid convolution's input gradient as a forward
    convolution of the output gradient, zero-padded by 2, with the flipped filter.
    The filter is a variable, as in training, so the flip is timed too."""
    w = tf.Variable(tf.random.normal((3, 3, cin, cout)))
    dy = tf.random.normal((BATCH, side - 2, side - 2, cout))
    return lambda t: tf.nn.conv2d(t, flipped(tf, w), 1, [[0, 0], [2, 2], [2, 2], [0, 0]]), dy


def agreement(tf) -> dict[str, float]:
    """Largest difference between each other way's forward result and the engine's
    way's, relative to the largest value: the same math, up to rounding."""
    x = tf.random.uniform((BATCH, 32, 32, 3))
    w = tf.random.normal((3, 3, 3, 32))
    reference = tf.nn.conv2d(x, w, 1, "VALID")

    def gap(other, ref=reference):
        return float(tf.reduce_max(tf.abs(other - ref)) / tf.reduce_max(tf.abs(ref)))

    found = {}
    for cin in (4, 8, 16):
        wide_x = tf.pad(x, [[0, 0], [0, 0], [0, 0], [0, cin - 3]])
        wide_w = tf.pad(w, [[0, 0], [0, 0], [0, cin - 3], [0, 0]])
        padded = tf.nn.conv2d(wide_x, wide_w, 1, "VALID")
        found[f"conv1, input padded to {cin} channels"] = gap(padded)
    for label, patches in (("patches", patch_op), ("shifted views", shifted)):
        found[f"conv1, as {label} times a matrix"] = gap(tf.reshape(
            tf.matmul(tf.reshape(patches(tf, x, 30), (-1, 27)), tf.reshape(w, (27, 32))), reference.shape))
    for side, cin, cout in (CONVS["conv2"], CONVS["conv3"]):
        w2 = tf.random.normal((3, 3, cin, cout))
        dy = tf.random.normal((BATCH, side - 2, side - 2, cout))
        dx = tf.raw_ops.Conv2DBackpropInput(input_sizes=[BATCH, side, side, cin], filter=w2, out_backprop=dy,
                                            strides=[1, 1, 1, 1], padding="VALID")
        found[f"{side}x{side}x{cin} input gradient as a forward convolution"] = gap(
            tf.nn.conv2d(dy, flipped(tf, w2), 1, [[0, 0], [2, 2], [2, 2], [0, 0]]), dx)
    first = tf.nn.conv2d(tf.transpose(x, (0, 3, 1, 2)), w, 1, "VALID", data_format="NCHW")
    found["channels first (NCHW)"] = gap(tf.transpose(first, (0, 2, 3, 1)))
    logits = tf.random.normal((BATCH, 10)) * 5
    e = tf.exp(logits - tf.reduce_max(logits, axis=-1, keepdims=True))
    found["softmax from plain ops"] = gap(e / tf.reduce_sum(e, axis=-1, keepdims=True), tf.nn.softmax(logits))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200, help="kernel calls per timed graph call")
    parser.add_argument("--repeats", type=int, default=7, help="timed graph calls per kernel (median)")
    args = parser.parse_args()
    if os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow":
        sys.exit("bench_kernels.py times TensorFlow's kernels; run it with KERAS_BACKEND unset or tensorflow")
    import tensorflow as tf

    from engine.system import prepare_tensorflow

    prepare_tensorflow()  # the engine's thread settings

    def ms(kernel, x):
        return timed(looped(tf, kernel, x, args.calls), args.calls, args.repeats)

    rows = []
    big = tf.random.normal((1024, 1024))
    peak_ms = ms(lambda t: tf.matmul(t, big), big)
    rows.append(["matrix product 1024x1024 (this CPU's peak)", peak_ms, 2 * 1024 ** 3 / peak_ms / 1e6, ""])
    rows.append(["loop alone (the dependency only, 32x32x32x3)", ms(lambda t: t, tf.zeros((BATCH, 32, 32, 3))), "", ""])
    baseline = {}
    for name, (side, cin, cout) in CONVS.items():
        for kind, kernel, x, flops in conv_kernels(tf, side, cin, cout):
            t = ms(kernel, x)
            baseline[(name, kind)] = t
            rows.append([f"{name} {kind}", t, flops / t / 1e6, ""])
    for cin in (4, 8, 16):
        for kind, kernel, x, _ in conv_kernels(tf, 32, cin, 32)[:2]:
            t = ms(kernel, x)
            rows.append([f"conv1 {kind}, input padded to {cin} channels", t, "", t / baseline[("conv1", kind)]])
    for kind, kernel, x in patches_conv(tf, *CONVS["conv1"], patch_op):
        t = ms(kernel, x)
        rows.append([f"conv1 {kind}, as patches times a matrix", t, "", t / baseline[("conv1", kind)]])
    for name, (side, cin, cout) in CONVS.items():
        for kind, kernel, x in patches_conv(tf, side, cin, cout, shifted):
            t = ms(kernel, x)
            rows.append([f"{name} {kind}, as shifted views times a matrix", t, "", t / baseline[(name, kind)]])
    for name in ("conv2", "conv3"):
        kernel, dy = input_gradient_as_forward(tf, *CONVS[name])
        t = ms(kernel, dy)
        rows.append([f"{name} input gradient as a forward convolution", t, "", t / baseline[(name, "input gradient")]])
    for kind, kernel, x, flops in conv_kernels(tf, 15, 32, 64, fmt="NCHW"):
        t = ms(kernel, x)
        rows.append([f"conv2 {kind}, channels first (NCHW)", t, flops / t / 1e6, t / baseline[("conv2", kind)]])
    for side, channels in ((30, 32), (13, 64), (4, 64)):
        x = tf.random.normal((BATCH, side, side, channels))
        ones, zeros = tf.ones((channels,)), tf.zeros((channels,))

        def norm(t):
            return tf.raw_ops.FusedBatchNormV3(x=t, scale=ones, offset=zeros, mean=zeros, variance=ones,
                                               epsilon=1.001e-3, is_training=True)[0]

        rows.append([f"fused batch norm forward, {side}x{side}x{channels}", ms(norm, x), "", ""])
    logits = tf.random.normal((BATCH, 10))
    onednn = ms(tf.nn.softmax, logits)

    def plain_softmax(t):
        e = tf.exp(t - tf.reduce_max(t, axis=-1, keepdims=True))
        return e / tf.reduce_sum(e, axis=-1, keepdims=True)

    plain = ms(plain_softmax, logits)
    rows.append(["softmax 32x10 (TensorFlow's oneDNN kernel)", onednn, "", ""])
    rows.append(["softmax 32x10 from plain ops", plain, "", plain / onednn])
    print(f"\nSimCNN's training kernels at batch {BATCH}, each alone, {machine()}")
    print(table(rows, ["kernel", "ms a call", "GFLOP/s", "time / the engine's way"]))
    print("\nthe same math: largest difference from the engine's way's result, relative to its largest value")
    print(table([[name, f"{value:.1e}"] for name, value in agreement(tf).items()], ["other way", "difference"]))


if __name__ == "__main__":
    main()
