"""The training input: shuffled batches of the uint8 images, streamed forever.

Hand-written rather than passing the arrays to `model.fit`, for two reasons:

- With a fixed `steps_per_epoch`, Keras' array adapter keeps one pass over
  the data going across epochs and ends an epoch early ("Your input ran out
  of data") when that pass runs out: with the Paper Table 1 settings on
  45,000 images every third epoch has 307 steps instead of 550. A stream
  that never ends gives every epoch exactly `steps_per_epoch` steps, each
  pass over the data in a new random order.
- The images stay uint8 until the model's own Rescaling layer: a quarter of
  the memory traffic of float32 batches, and no float copy of the dataset.

On TensorFlow the stream is a `tf.data` pipeline of batches of image
indices, and the training step itself gathers its batch from the images
(`Stream.to_batch`, run inside the step's graph): no tf.data function runs
per batch and no batch crosses threads (benchmarks/bench_train.py --also
gathers measures it against tf.data's gather); `batch_from_feed` puts the
gather into the step while `fit` runs. Under a tf.distribute strategy the
dataset is split across devices, so there tf.data gathers the batches itself. On JAX and PyTorch the stream is a
`keras.utils.PyDataset` read in order in the training thread (indexing 32
images from a numpy array takes microseconds). Imported when a run starts
(it imports keras), like engine/callbacks.py.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Callable

import keras
import numpy as np

from engine.train_step import wrapped_train_step

PREFETCH_BATCHES = 2  # enough to hide the gather of the next batch; more only holds memory


def batches_per_pass(count: int, batch_size: int) -> int:
    """Batches in one pass over `count` images, the last one partial."""
    return math.ceil(count / batch_size)


@dataclass
class Stream:
    """What `model.fit` takes as `x` (with `steps_per_epoch` set, no `y`), and,
    where it yields image indices rather than batches, how the training step
    turns one of its elements into (images, labels)."""

    feed: Any
    to_batch: Callable | None = None

    def batches(self, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """The first `count` batches as numpy arrays (for tests and checks)."""
        if isinstance(self.feed, ShuffledBatches):
            return [self.feed[i] for i in range(count)]
        out = []
        for element in self.feed.take(count):
            images, labels = self.to_batch(element) if self.to_batch else element
            out.append((images.numpy(), labels.numpy()))
        return out


def training_stream(x: np.ndarray, y: np.ndarray, batch_size: int, steps_per_epoch: int, seed: int,
                    gather_in_step: bool = True) -> Stream:
    """The shuffled batches of (x, y), streamed forever.

    Each pass over the data is in a new seeded random order and ends with a
    partial batch when the count is not a multiple of the batch size, as
    Keras' own shuffling of arrays does, so the math is the same.
    `gather_in_step` (TensorFlow): the step gathers its batch; false under a
    distribution strategy.
    """
    if keras.backend.backend() != "tensorflow":
        return Stream(ShuffledBatches(x, y, batch_size, steps_per_epoch, seed))
    import tensorflow as tf

    images = tf.convert_to_tensor(x)
    labels = tf.convert_to_tensor(y)
    indices = _tf_index_batches(len(y), batch_size, seed)

    def gather(index):
        return tf.gather(images, index), tf.gather(labels, index)

    if gather_in_step:
        return Stream(indices, gather)
    batches = indices.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return Stream(_tf_options(batches.prefetch(PREFETCH_BATCHES)))


def batch_from_feed(model, to_batch):
    """Inside the block, each training step turns what the stream feeds it
    into its batch with `to_batch` (the in-step gather: `Stream.to_batch`),
    before Keras' own train_step; without a `to_batch`, nothing changes."""
    if to_batch is None:
        return contextlib.nullcontext()

    def wrap(step):
        return lambda data: step(to_batch(data))

    return wrapped_train_step(model, wrap)


def _tf_index_batches(count: int, batch_size: int, seed: int):
    import tensorflow as tf

    # Each pass's order is a stateless function of (seed, pass number): the
    # same batches however many iterators Keras or tf.distribute open on the
    # dataset (a stateful shuffle gives the second iterator another order).
    def one_pass(number):
        order = tf.random.experimental.stateless_shuffle(tf.range(count, dtype=tf.int64), seed=[seed, number])
        return tf.data.Dataset.from_tensor_slices(order).batch(batch_size)

    # No prefetch: it would hand each index batch across threads for nothing
    # (one is sliced from the pass's order in microseconds); with a prefetch
    # of 2 the epoch was no shorter (16 interleaved rounds).
    return _tf_options(tf.data.Dataset.counter().flat_map(one_pass))


def _tf_options(dataset):
    import tensorflow as tf

    options = tf.data.Options()
    # As Keras' own array adapter: the default static rewrites cost a
    # serialization of the pipeline's graph at each start and buy nothing here.
    options.experimental_optimization.apply_default_optimizations = False
    return dataset.with_options(options)


class ShuffledBatches(keras.utils.PyDataset):
    """The same stream for JAX and PyTorch, as a Keras PyDataset.

    An "epoch" of the PyDataset is `steps_per_epoch` batches taken from a
    stream of passes; batches are served in order (one worker, the Keras
    default), so the position in the stream is a plain counter.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, steps_per_epoch: int, seed: int):
        super().__init__()
        self.x = x
        self.y = y
        self.batch_size = batch_size
        self.steps_per_epoch = steps_per_epoch
        self.rng = np.random.default_rng(seed)
        self.per_pass = batches_per_pass(len(y), batch_size)
        self.order = self.rng.permutation(len(y))
        self.position = 0  # batches served from the current pass

    def __len__(self) -> int:
        return self.steps_per_epoch

    def __getitem__(self, index: int):
        if self.position == self.per_pass:
            self.order = self.rng.permutation(len(self.y))
            self.position = 0
        start = self.position * self.batch_size
        chosen = self.order[start:start + self.batch_size]
        self.position += 1
        return self.x[chosen], self.y[chosen]
