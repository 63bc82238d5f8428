"""The on-disk cache of decoded image folders, so a second read of a folder is instant.

An entry is one folder of .npy arrays and a meta.json per image folder and
image size. It is used only while the folder's fingerprint (every file's
name, size and modification time) and class names are what they were when
it was written.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile

import numpy as np

# Bump when the cached arrays' layout changes, so old entries are ignored.
CACHE_VERSION = 1

CACHED_ARRAYS = ("x_train", "y_train", "x_test", "y_test")


def cache_dir() -> str:
    """Where decoded image folders are kept (CIFAR_STUDIO_CACHE_DIR overrides the app's cache)."""
    root = os.environ.get("CIFAR_STUDIO_CACHE_DIR")
    if not root:
        import platformdirs

        root = platformdirs.user_cache_dir("cifar-studio")
    return os.path.join(root, "datasets")


def cache_entry(root: str, image_size: int) -> str:
    """The entry's folder for the image folder `root` read at `image_size`."""
    key = hashlib.sha256(f"{CACHE_VERSION}\0{root}\0{image_size}".encode("utf-8", "surrogateescape"))
    name = "".join(c if c.isalnum() or c in "-_" else "_" for c in os.path.basename(root))[:40]
    return os.path.join(cache_dir(), f"{name}-{image_size}-{key.hexdigest()[:16]}")


def read_cache(entry: str, fingerprint: str, class_names: list[str]) -> tuple[dict[str, np.ndarray], dict] | None:
    """The cached arrays and meta if they were made from exactly these files, else None."""
    try:
        with open(os.path.join(entry, "meta.json"), encoding="utf-8") as f:
            meta = json.load(f)
        if meta.get("version") != CACHE_VERSION or meta.get("fingerprint") != fingerprint:
            return None
        arrays = {name: np.load(os.path.join(entry, name + ".npy"), allow_pickle=False) for name in CACHED_ARRAYS}
    except (OSError, ValueError, EOFError):
        return None
    x_train, y_train = arrays["x_train"], arrays["y_train"]
    if meta.get("class_names") != class_names or x_train.dtype != np.uint8 or x_train.ndim != 4:
        return None
    if len(x_train) != len(y_train) or len(arrays["x_test"]) != len(arrays["y_test"]):
        return None
    return arrays, meta


def write_cache(entry: str, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Write a new entry beside the old one, then swap, so readers never see half of one."""
    parent = os.path.dirname(entry)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".write-", dir=parent)
    try:
        for name, array in arrays.items():
            np.save(os.path.join(staging, name + ".npy"), array, allow_pickle=False)
        with open(os.path.join(staging, "meta.json"), "w", encoding="utf-8") as f:
            json.dump(meta, f)
        if os.path.isdir(entry):
            shutil.rmtree(entry)
        os.replace(staging, entry)
    finally:
        if os.path.isdir(staging):
            shutil.rmtree(staging, ignore_errors=True)
