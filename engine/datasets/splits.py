"""Subsets and the validation split, applied the same way to every source: stratified and seeded."""

from __future__ import annotations

import numpy as np

from engine.config import DatasetConfig
from engine.datasets.dataset import Dataset, Source


def split(source: Source, cfg: DatasetConfig) -> Dataset:
    """Test subset, then training subset, then the validation share of it."""
    num_classes = len(source.class_names)
    test_rng = np.random.default_rng([cfg.seed, 1])
    train_rng = np.random.default_rng([cfg.seed, 2])
    val_rng = np.random.default_rng([cfg.seed, 3])

    test_index = np.arange(len(source.y_test))
    if cfg.test_subset:
        test_index = stratified_pick(source.y_test, cfg.test_subset, num_classes, test_rng)

    train_index = np.arange(len(source.y_train))
    if cfg.train_subset:
        train_index = stratified_pick(source.y_train, cfg.train_subset, num_classes, train_rng)

    val_count = int(np.floor(len(train_index) * cfg.validation_split + 0.5))
    chosen = stratified_pick(source.y_train[train_index], val_count, num_classes, val_rng, keep_one=True)
    is_val = np.zeros(len(train_index), dtype=bool)
    is_val[chosen] = True
    val_index = val_rng.permutation(train_index[is_val])
    train_index = val_rng.permutation(train_index[~is_val])

    return Dataset(
        x_train=source.x_train[train_index],
        y_train=source.y_train[train_index].astype(np.int64),
        x_val=source.x_train[val_index],
        y_val=source.y_train[val_index].astype(np.int64),
        x_test=source.x_test[test_index],
        y_test=source.y_test[test_index].astype(np.int64),
        class_names=list(source.class_names),
        description=source.description,
        test_files=[source.test_files[i] for i in test_index] if source.test_files is not None else None,
    )


def stratified_pick(labels, count, num_classes, rng, keep_one=False) -> np.ndarray:
    """Sorted indices of `count` items drawn per class in proportion to its size.

    Quotas are rounded by largest remainder, so a balanced source gives
    exactly equal classes. With `keep_one`, a class never gives up its last
    item (the validation split must not empty a class of the training split).
    """
    labels = np.asarray(labels)
    if count >= len(labels) and not keep_one:
        return np.arange(len(labels))
    counts = np.bincount(labels, minlength=num_classes)
    limits = np.maximum(counts - 1, 0) if keep_one else counts
    count = min(count, int(limits.sum()))
    exact = counts * (count / max(len(labels), 1))
    quotas = np.minimum(np.floor(exact).astype(np.int64), limits)
    order = np.argsort(-(exact - quotas), kind="stable")
    left = count - int(quotas.sum())
    while left > 0:
        for cls in order:
            if left and quotas[cls] < limits[cls]:
                quotas[cls] += 1
                left -= 1
    picked = [
        rng.choice(np.flatnonzero(labels == cls), size=int(quotas[cls]), replace=False)
        for cls in range(num_classes)
        if quotas[cls]
    ]
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)
