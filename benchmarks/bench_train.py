"""Training speed: the engine's Trainer against a plain Keras script.

Usage:
    python benchmarks/bench_train.py [--data FOLDER] [--rounds 8]
    python benchmarks/bench_train.py --full-epoch      # 1,407 steps: all 45,000 images
    python benchmarks/bench_train.py --with-bf16       # and the engine in mixed bfloat16
    python benchmarks/bench_train.py --fresh [--pairs 3] [--epochs 2]   # whole trials alternated
    python benchmarks/bench_train.py --levers          # each speed lever on its own
    python benchmarks/bench_train.py --also spin       # and levers as interleaved sides of their own
    python benchmarks/bench_train.py --with-torch      # and SimCNN by hand in PyTorch (the same math)

SimCNN with the Paper Table 1 settings (batch 32, SGD lr 0.01, 550 steps per
epoch, 1 validation step) on the 50,000 real CIFAR-10 JPEGs, 45,000 for
training and 5,000 held out. "plain" is what a notebook does: the same
architecture fed float32 x / 255 numpy arrays through `model.fit(...,
shuffle=True)`. "engine" is engine.training.Trainer with the preset, its
callbacks (progress, CSV history, best-model checkpoint, run store) and its
own input stream, as the GUI and the CLI run it. With --with-torch, the
same model written by hand in PyTorch takes turns too: what the same math
costs here in another framework.

By default each side trains in its own live process and they take turns
one epoch at a time (plain, engine, then engine, plain, ...; each waits at
the end of an epoch while the other runs one), so epochs seconds apart are
compared and the machine's drift over minutes weighs on both alike. Plain
Keras' input runs out every third epoch of 550 steps, which then ends
early: those rounds are left out. With --fresh, whole trials are alternated
instead (plain, engine, plain, engine, ...), each in a fresh process.

Epoch time runs from the start of fit (or the end of the previous epoch, or
the side's next turn) to the end of the epoch, validation and the engine's
checkpointing included; the first epoch also traces the graph, so the
ratios are taken on the later ("steady") epochs: the median of the
per-round ratios, the ratio of the medians, and the best (least disturbed)
epoch of each side. CPU seconds (all threads) are shown too. Accuracy is
measured on the whole held-out split after training, for both, to show the
same math.

--levers runs the engine with one lever changed at a time, round robin with
the full engine, and the plain script with one thing changed (input dtype,
shuffling, a per-batch callback, the fused batch norm kernel) or with the
engine's fast paths all at once, round robin with plain.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (add_interleave_arguments, epoch_turn, find_images, interleave, load_images,  # noqa: E402
                    machine, median, report, run_in_subprocess, spread, table)

BATCH = 32
LEARNING_RATE = 0.01
TABLE1_STEPS = 550

BF16_SPEC = {"precision": "mixed_bfloat16"}  # a lever, and a side of its own with --with-bf16
ENGINE_LEVERS = {
    "engine": {},
    "engine, arrays to fit (no input stream)": {"stream": False},
    "engine, tf.data gathers each batch (no gather in the step)": {"gather": False},
    "engine, idle threads spin (TensorFlow's default)": {"env": {"CIFAR_STUDIO_THREAD_SPINNING": "on"}},
    "engine, Keras batch norm (no fused kernel)": {"fused": False},
    "engine, neither stream nor fused batch norm": {"stream": False, "fused": False},
    "engine, one step per call (steps_per_execution 1)": {"spe": 1},
    "engine, steps_per_execution 10 (the earlier default)": {"spe": 10},
    "engine, XLA (jit_compile=True)": {"jit": True},
    "engine, XLA, tf.data gathers each batch": {"jit": True, "gather": False},
    "engine, XLA calling oneDNN for convolutions and matrix products":
        {"jit": True, "env": {"XLA_FLAGS": "--xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_custom_call=true"}},
    "engine, XLA handing subgraphs to XNNPACK":
        {"jit": True, "env": {"XLA_FLAGS": "--xla_cpu_experimental_xnn_graph_fusion_mode="
                                            "XNN_GRAPH_FUSION_MODE_GREEDY"}},
    "engine, 1 inter-op thread": {"inter_op": 1},
    "engine, 1 intra-op thread": {"intra_op": 1},
    "engine, oneDNN off (TF_ENABLE_ONEDNN_OPTS=0)": {"env": {"TF_ENABLE_ONEDNN_OPTS": "0"}},
    "engine, oneDNN work on the calling thread too": {"env": {"TF_ONEDNN_THREADPOOL_USE_CALLER_THREAD": "true"}},
    "engine, every oneDNN primitive cached": {"env": {"TF_MKL_OPTIMIZE_PRIMITIVE_MEMUSE": "false"}},
    "engine, oneDNN's AVX2 kernels (not AVX-512)": {"env": {"ONEDNN_MAX_CPU_ISA": "AVX2"}},
    "engine, mixed_bfloat16 (bf16 math, not the same)": BF16_SPEC,
}
TORCH_SIDE = "PyTorch by hand (the same layers, channels last)"
PLAIN_LEVERS = {
    "plain": {},
    "plain, uint8 input (Rescaling in the model)": {"input": "uint8"},
    "plain, no shuffling": {"shuffle": False},
    "plain, a per-batch callback (not async-safe)": {"batch_callback": True},
    "plain, fused batch norm (engine/fastpaths.py)": {"fused": True},
    "plain, with the engine's fast paths (uint8 arrays, fused batch norm, 50 steps a call)":
        {"input": "uint8", "fused": True, "spe": 50},
}


# -- one trial (in its own process) ----------------------------------------


class EpochClock:
    """Wall and CPU seconds (and training steps) of each epoch: from the
    start of fit or the end of the previous epoch (in an interleaved run,
    from this process's next turn) to the end of the epoch."""

    def __init__(self):
        self.mark_wall = self.mark_cpu = 0.0
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.steps: list[int | None] = []

    def start(self):
        self.mark_wall, self.mark_cpu = time.perf_counter(), time.process_time()

    def tick(self, steps: int | None = None):
        wall, cpu = time.perf_counter() - self.mark_wall, time.process_time() - self.mark_cpu
        self.wall.append(wall)
        self.cpu.append(cpu)
        self.steps.append(steps)
        epoch_turn({"wall": wall, "cpu": cpu, "steps": steps})
        self.start()

    def epochs(self) -> tuple[list[float], list[float]]:
        return self.wall, self.cpu


def set_threads(spec: dict) -> None:
    """Before TensorFlow starts its runtime: thread pools are fixed then."""
    if "inter_op" in spec or "intra_op" in spec:
        import tensorflow as tf

        if "inter_op" in spec:
            tf.config.threading.set_inter_op_parallelism_threads(spec["inter_op"])
        if "intra_op" in spec:
            tf.config.threading.set_intra_op_parallelism_threads(spec["intra_op"])


def plain_simcnn(keras, rescale: bool):
    """SimCNN as the seeds wrote it (the input scaled outside the model)."""
    from keras import layers

    inputs = keras.Input((32, 32, 3))
    x = layers.Rescaling(1.0 / 255)(inputs) if rescale else inputs
    for index, filters in enumerate((32, 64, 64)):
        x = layers.Conv2D(filters, 3, activation="relu")(x)
        x = layers.BatchNormalization()(x)
        if index < 2:
            x = layers.MaxPooling2D()(x)
    x = layers.Dense(64, activation="relu")(layers.Flatten()(x))
    return keras.Model(inputs, layers.Dense(10, activation="softmax")(x))


def plain_trial(spec: dict, data) -> dict:
    import contextlib

    import keras

    from engine.fastpaths import fused_batch_norm

    keras.utils.set_random_seed(spec["seed"])
    uint8 = spec.get("input") == "uint8"
    x, x_val = (data.x_train, data.x_val) if uint8 else (data.x_train.astype("float32") / 255,
                                                          data.x_val.astype("float32") / 255)
    model = plain_simcnn(keras, rescale=uint8)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=LEARNING_RATE),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  steps_per_execution=spec.get("spe", 1))
    clock = EpochClock()

    class Clock(keras.callbacks.Callback):
        done = 0

        def on_epoch_end(self, epoch, logs=None):
            steps = int(self.model.optimizer.iterations.numpy())
            clock.tick(steps - Clock.done)
            Clock.done = steps

    class PerBatch(keras.callbacks.Callback):
        """What a hand-written progress callback usually is: reads the logs
        every batch, which makes Keras wait for each step."""

        def on_train_batch_end(self, batch, logs=None):
            self.last = float(logs["loss"])

    callbacks = [Clock()] + ([PerBatch()] if spec.get("batch_callback") else [])
    fused = fused_batch_norm(model) if spec.get("fused") else contextlib.nullcontext()
    history = None
    with fused:
        clock.start()
        history = model.fit(x, data.y_train, batch_size=BATCH, epochs=spec["epochs"],
                            steps_per_epoch=spec["steps"] or None, validation_data=(x_val, data.y_val),
                            validation_steps=1, shuffle=spec.get("shuffle", True), callbacks=callbacks, verbose=0)
    wall, cpu = clock.epochs()
    held_out = model.evaluate(x_val, data.y_val, batch_size=256, verbose=0, return_dict=True)
    return {"wall": wall, "cpu": cpu, "train_accuracy": history.history["accuracy"][-1],
            "val_accuracy": held_out["accuracy"], "params": model.count_params()}


def engine_trial(spec: dict, data, folder: str) -> dict:
    from engine.config import DatasetConfig, preset
    from engine.events import Listener
    from engine.runs import RunStore
    from engine.training import SpeedSettings, Trainer

    config = preset("Paper Table 1")
    config.name = "bench"
    config.dataset = DatasetConfig(source="folder", path=folder, validation_split=0.1)
    t = config.training
    t.epochs, t.steps_per_epoch, t.seed = spec["epochs"], spec["steps"], spec["seed"]
    t.steps_per_execution = spec.get("spe", 0)  # 0: the engine's automatic choice (50 for SimCNN at batch 32)
    t.precision = spec.get("precision", "float32")
    speed = SpeedSettings(stream_input=spec.get("stream", True), gather_in_step=spec.get("gather", True),
                          fused_batch_norm=spec.get("fused", True),
                          jit_compile=spec.get("jit", "auto"))
    clock = EpochClock()

    class Timing(Listener):
        last_logs: dict = {}
        trainer = None
        done = 0

        def on_stage(self, event):
            if event.stage == "train":
                clock.start()

        def on_epoch_ended(self, event):
            Timing.last_logs = event.logs
            steps = int(Timing.trainer.model.optimizer.iterations.numpy())
            clock.tick(steps - Timing.done)
            Timing.done = steps

        def on_log(self, text):
            print(text, file=sys.stderr)

    with tempfile.TemporaryDirectory() as folder_for_runs:
        trainer = Timing.trainer = Trainer(config, Timing(), RunStore(folder_for_runs), dataset=data, speed=speed)
        result = trainer.run()
        if result.status != "finished":
            raise SystemExit(f"engine run {result.status}: {result.reason}")
        params = trainer.model.count_params()
    wall, cpu = clock.epochs()
    return {"wall": wall, "cpu": cpu, "train_accuracy": Timing.last_logs.get("accuracy"),
            "val_accuracy": result.test_metrics["accuracy"], "params": params}


def torch_trial(spec: dict, data) -> dict:
    """SimCNN written by hand in PyTorch, trained the same way: what the
    same math costs on this machine in another framework (both run oneDNN's
    convolutions on CPU), a reference for the engine's step. The same layers,
    Keras' initialisation and batch norm settings, uint8 batches scaled in
    the step, channels-last memory (NCHW took 1.9x as long here); batches
    from a fresh shuffle of the images each pass, as the engine's stream."""
    import numpy as np
    import torch
    from torch import nn

    torch.manual_seed(spec["seed"])
    layers = []
    for index, (inputs, filters) in enumerate(((3, 32), (32, 64), (64, 64))):
        layers += [nn.Conv2d(inputs, filters, 3), nn.ReLU(), nn.BatchNorm2d(filters, eps=1e-3, momentum=0.01)]
        if index < 2:
            layers.append(nn.MaxPool2d(2))
    model = nn.Sequential(*layers, nn.Flatten(), nn.Linear(64 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10))
    for layer in model:
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(layer.weight)  # Keras' glorot_uniform and zero bias
            nn.init.zeros_(layer.bias)
    model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)
    loss_fn = nn.CrossEntropyLoss()  # on logits: Keras' softmax then cross-entropy, in one
    # Keras flattens height, width, channels; PyTorch channels, height, width.
    # The order of the dense layer's inputs does not change the math or the time.

    def batches(images, labels, shuffle):
        rng = np.random.default_rng(spec["seed"])
        while True:
            order = rng.permutation(len(labels)) if shuffle else np.arange(len(labels))
            for start in range(0, len(order) - BATCH + 1 if shuffle else len(order), BATCH):
                index = order[start:start + BATCH]
                # NHWC uint8 seen as NCHW: the channels-last layout, no copy.
                yield torch.from_numpy(images[index]).permute(0, 3, 1, 2), torch.from_numpy(labels[index])
            if not shuffle:
                return

    stream = batches(data.x_train, data.y_train.astype("int64"), shuffle=True)
    steps = spec["steps"] or len(data.y_train) // BATCH
    clock = EpochClock()
    clock.start()
    for _ in range(spec["epochs"]):
        model.train()
        correct = seen = 0
        for _ in range(steps):
            x, y = next(stream)
            optimizer.zero_grad(set_to_none=True)
            logits = model(x.float() / 255)
            loss_fn(logits, y).backward()
            optimizer.step()
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
        model.eval()
        with torch.no_grad():  # the one validation step of Paper Table 1
            model(torch.from_numpy(data.x_val[:BATCH]).permute(0, 3, 1, 2).float() / 255)
        clock.tick(steps)
    with torch.no_grad():
        right = sum(int((model(x.float() / 255).argmax(1) == y).sum())
                    for x, y in batches(data.x_val, data.y_val.astype("int64"), shuffle=False))
    wall, cpu = clock.epochs()
    params = sum(p.numel() for p in model.parameters()) + sum(
        b.numel() for name, b in model.named_buffers() if "running" in name)  # Keras counts those too
    return {"wall": wall, "cpu": cpu, "train_accuracy": correct / seen, "val_accuracy": right / len(data.y_val),
            "params": params}


def trial(spec: dict) -> None:
    os.environ.update(spec.get("env", {}))  # an interleaved side's environment, before TensorFlow starts
    set_threads(spec)
    data = load_images(spec["data"])
    runs = {"plain": plain_trial, "torch": torch_trial}
    result = runs[spec["side"]](spec, data) if spec["side"] in runs else engine_trial(spec, data, spec["data"])
    report(result)


# -- the orchestration (the parent process) --------------------------------


def measure(name: str, spec: dict, base: dict) -> dict:
    full = {**base, **{k: v for k, v in spec.items() if k != "env"}}
    full["side"] = "plain" if name.startswith("plain") else "engine"
    result = run_in_subprocess(__file__, full, env=spec.get("env"))
    steady = result["wall"][1:] or result["wall"]
    steady_cpu = result["cpu"][1:] or result["cpu"]
    result.update(name=name, steady=median(steady), steady_cpu=median(steady_cpu))
    print(f"  {name}: first epoch {result['wall'][0]:.2f} s, steady epoch {result['steady']:.2f} s "
          f"({result['steady_cpu']:.2f} CPU s), held-out accuracy {result['val_accuracy']:.4f}", flush=True)
    each = zip(result["wall"], result["cpu"])
    print("    each epoch, s (CPU s): " + ", ".join(f"{w:.1f} ({c:.1f})" for w, c in each), flush=True)
    return result


def summary(results: list[dict], names: list[str], reference: str) -> str:
    rows = []
    ref = [r for r in results if r["name"] == reference]
    ref_wall, ref_cpu = median(r["steady"] for r in ref), median(r["steady_cpu"] for r in ref)
    ref_best = min(r["steady"] for r in ref)
    for name in names:
        mine = [r for r in results if r["name"] == name]
        wall = [r["steady"] for r in mine]
        rows.append([
            name, len(mine), median(r["wall"][0] for r in mine), median(wall), min(wall),
            median(r["steady_cpu"] for r in mine), median(wall) / ref_wall, min(wall) / ref_best,
            median(r["steady_cpu"] for r in mine) / ref_cpu,
            median(r["train_accuracy"] for r in mine), median(r["val_accuracy"] for r in mine),
        ])
    return table(rows, ["run", "trials", "epoch 1 s", "steady epoch s", "best s", "CPU s", f"wall / {reference}",
                        "best / best", f"CPU / {reference}", "train acc", "held-out acc"])


def compare(args, base: dict) -> None:
    sides = {"plain": {}, "engine": {}}
    if args.with_bf16:
        sides["engine, mixed_bfloat16"] = BF16_SPEC
    results = []
    for pair in range(args.pairs):
        seeded = {**base, "seed": pair}
        print(f"pair {pair + 1} of {args.pairs}", flush=True)
        for name, spec in sides.items():
            results.append(measure(name, spec, seeded))
    steps = base["steps"] or "all (1,407)"
    print(f"\nSimCNN, batch {BATCH}, SGD lr {LEARNING_RATE}, {steps} steps per epoch, {base['epochs']} epochs, "
          f"{machine()}")
    print(summary(results, list(sides), "plain"))
    plain = [r for r in results if r["name"] == "plain"]
    for name in list(sides)[1:]:
        ratios = [e["steady"] / p["steady"] for p, e in zip(plain, [r for r in results if r["name"] == name])]
        print(f"{name} / plain per pair (steady epoch, wall): " + ", ".join(f"{r:.3f}" for r in ratios)
              + spread(ratios))
    params = {r["params"] for r in results}
    print(f"parameters: {', '.join(str(p) for p in sorted(params))} (the same model on both sides)")


def compare_interleaved(args, base: dict) -> None:
    """One live process per side, alternated epoch by epoch (common.interleave)."""
    sides = {"plain": {"side": "plain"}, "engine": {"side": "engine"}}
    if args.with_bf16:
        sides["engine, mixed_bfloat16"] = {"side": "engine", **BF16_SPEC}
    if args.with_torch:
        if importlib.util.find_spec("torch"):  # the side imports it in its own process
            sides[TORCH_SIDE] = {"side": "torch"}
        else:
            print("--with-torch: PyTorch is not installed here (pip install torch), so that side is left out")
    for wanted in args.also or []:
        for name, spec in {**ENGINE_LEVERS, **PLAIN_LEVERS}.items():
            if wanted in name and name not in ("plain", "engine"):
                sides[name] = {"side": "plain" if name.startswith("plain") else "engine", **spec}
    specs = {name: {**base, **spec, "seed": 0, "epochs": args.rounds + 1} for name, spec in sides.items()}
    print(f"{args.rounds} rounds of one epoch per side, after each side's first epoch (graph tracing)", flush=True)
    results = interleave(__file__, specs, args.rounds)
    steps = base["steps"] or 1407
    # Plain Keras ends every third epoch of 550 steps early (its input runs
    # out): those rounds are left out rather than compared per step.
    full = [all(results[name]["epoch_records"][r]["steps"] == steps for name in sides)
            for r in range(1, args.rounds + 1)]
    rounds = [r for r, ok in zip(range(1, args.rounds + 1), full) if ok]

    def walls(name):
        return [results[name]["epoch_records"][r]["wall"] for r in rounds]

    def cpus(name):
        return [results[name]["epoch_records"][r]["cpu"] for r in rounds]

    plain_wall, plain_cpu = walls("plain"), cpus("plain")
    rows = []
    for name in sides:
        wall, cpu = walls(name), cpus(name)
        per_round = [w / p for w, p in zip(wall, plain_wall)]
        rows.append([name, len(wall), median(wall), min(wall), median(cpu), median(per_round),
                     median(wall) / median(plain_wall), min(wall) / min(plain_wall), median(cpu) / median(plain_cpu),
                     max(record["cpu_while_paused"] for record in results[name]["epoch_records"][1:]),
                     results[name]["train_accuracy"], results[name]["val_accuracy"]])
    print(f"\nSimCNN, batch {BATCH}, SGD lr {LEARNING_RATE}, {steps} steps per epoch, epochs alternated in one run, "
          f"{machine()}")
    left_out = args.rounds - len(rounds)
    if left_out:
        print(f"({left_out} of {args.rounds} rounds left out: plain Keras' input ran out and ended that epoch early)")
    print(table(rows, ["run", "epochs", "epoch s", "best s", "CPU s", "per-round ratio", "median / median",
                       "best / best", "CPU / plain", "most CPU s while paused", "train acc", "held-out acc"]))
    for name in list(sides)[1:]:
        per_round = [w / p for w, p in zip(walls(name), plain_wall)]
        print(f"{name} / plain per round (wall): " + ", ".join(f"{r:.3f}" for r in per_round) + spread(per_round))
    # The round after a short one starts plain Keras' new input iterator
    # (it re-creates it after running out), which sometimes stalls for
    # many seconds here: real time plain Keras takes, but shown apart too.
    steady = [i for i, r in enumerate(rounds) if r == 1 or full[r - 2]]
    if len(steady) < len(rounds) and steady:
        for name in list(sides)[1:]:
            per_round = [walls(name)[i] / plain_wall[i] for i in steady]
            print(f"{name} / plain, leaving out too the {len(rounds) - len(steady)} rounds after plain's input "
                  f"ran out: per-round median {median(per_round):.3f} over {len(steady)} rounds")
    for name in list(sides)[2:]:
        if sides[name]["side"] in ("engine", "torch"):
            per_round = [w / e for w, e in zip(walls(name), walls("engine"))]
            cpu = [c / e for c, e in zip(cpus(name), cpus("engine"))]
            print(f"{name} / engine per round: wall median {median(per_round):.3f}, CPU median {median(cpu):.3f}; "
                  + ", ".join(f"{r:.3f}" for r in per_round))
    print(f"parameters: {', '.join(str(p) for p in sorted({r['params'] for r in results.values()}))} "
          "(the same model on both sides)")


def levers(args, base: dict) -> None:
    groups = [list(ENGINE_LEVERS), list(PLAIN_LEVERS)]
    chosen = [g for g in groups if not args.only or any(args.only in name for name in g)]
    results = []
    for round_number in range(args.pairs):
        print(f"round {round_number + 1} of {args.pairs}", flush=True)
        for group in chosen:
            for name in group:
                if args.only and name != group[0] and args.only not in name:
                    continue
                spec = ENGINE_LEVERS.get(name, PLAIN_LEVERS.get(name))
                results.append(measure(name, spec, {**base, "seed": round_number}))
    print(f"\nLevers, SimCNN Paper Table 1 ({base['steps'] or 'all'} steps per epoch), {machine()}")
    for group in chosen:
        names = [n for n in group if any(r["name"] == n for r in results)]
        print(summary(results, names, group[0]) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="folder of the 50,000 JPEGs (default: /tmp/cifar10-jpg/train)")
    add_interleave_arguments(parser, pairs=3, pairs_help="plain/engine pairs; rounds with --levers")
    parser.add_argument("--epochs", type=int, default=2,
                        help="with --fresh or --levers: epochs per trial (the first traces the graph)")
    parser.add_argument("--full-epoch", action="store_true", help="every image once per epoch (1,407 steps)")
    parser.add_argument("--steps", type=int, default=TABLE1_STEPS, help="steps per epoch (Paper Table 1: 550)")
    parser.add_argument("--levers", action="store_true", help="measure each lever on its own")
    parser.add_argument("--with-bf16", action="store_true",
                        help="also the engine with training.precision=mixed_bfloat16 (bf16 math: not the same)")
    parser.add_argument("--with-torch", action="store_true",
                        help="interleaved: also the same model written by hand in PyTorch (the same math)")
    parser.add_argument("--only", help="with --levers: only the levers whose name contains this")
    parser.add_argument("--also", action="append", metavar="TEXT",
                        help="interleaved: also the levers whose name contains TEXT, as sides of their own "
                             "(e.g. --also spin --also gathers)")
    parser.add_argument("--trial", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.trial:
        trial(json.loads(args.trial))
        return
    folder = find_images(args.data)
    print("reading (and caching) the images once ...", flush=True)
    data = load_images(folder)
    print(f"{len(data.y_train)} training and {len(data.y_val)} held-out images", flush=True)
    base = {"data": folder, "epochs": args.epochs, "steps": 0 if args.full_epoch else args.steps}
    if (args.fresh or args.levers) and args.epochs > 2 and not args.full_epoch:
        print("note: plain Keras ends every third epoch of 550 steps early (its input runs out at 1,407 batches)")
    (levers if args.levers else compare if args.fresh else compare_interleaved)(args, base)


if __name__ == "__main__":
    main()
