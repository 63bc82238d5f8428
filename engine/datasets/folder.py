"""An image folder with one subfolder per class, optionally inside train/ and test/.

The folder is listed once; the listing's fingerprint decides whether the
cached arrays can be used, and otherwise its files are decoded (in parallel
when there are many) and cached. Files that are not readable images are
skipped and reported, never fatal, unless no training image is left.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import numpy as np

from engine.config import DatasetConfig
from engine.datasets.cache import CACHE_VERSION, cache_dir, cache_entry, read_cache, write_cache
from engine.datasets.dataset import Progress, Source
from engine.datasets.decoding import decode_all
from engine.datasets.images import decode_image, is_image_name
from engine.errors import DatasetError


@dataclass
class _FolderScan:
    """The files of an image folder, listed once for both the cache check and reading."""

    class_names: list[str]
    train_files: list[str]
    train_labels: list[int]
    test_files: list[str]
    test_labels: list[int]
    not_images: list[str]
    fingerprint: str


def _visible_entries(folder: str) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as it:
            entries = [e for e in it if not e.name.startswith(".") and e.name != "__MACOSX"]
    except OSError as exc:
        raise DatasetError(f"cannot read the folder {folder}: {exc.strerror or exc}") from None
    return sorted(entries, key=lambda e: e.name)


def _subfolders(folder: str) -> list[str]:
    return [e.name for e in _visible_entries(folder) if e.is_dir()]


def _walk_files(folder: str, relative: str, records: list[str], files: list[str], not_images: list[str]) -> None:
    """Every file under `folder` (sorted), noting size and mtime for the fingerprint.

    `relative` is the folder's path below the dataset root, ending in a separator;
    string joins, not os.path.relpath, keep this fast for 50,000 files.
    """
    for entry in _visible_entries(folder):
        if entry.is_dir(follow_symlinks=False):
            _walk_files(entry.path, relative + entry.name + os.sep, records, files, not_images)
            continue
        try:
            stat = entry.stat()
        except OSError:
            not_images.append(relative + entry.name)
            continue
        records.append(f"{relative}{entry.name}\0{stat.st_size}\0{stat.st_mtime_ns}")
        if is_image_name(entry.name):
            files.append(entry.path)
        else:
            not_images.append(relative + entry.name)


def _scan_folder(root: str, progress: Progress) -> _FolderScan:
    if not os.path.exists(root):
        raise DatasetError(f"the folder {root} does not exist")
    if not os.path.isdir(root):
        raise DatasetError(
            f"{root} is a file, not a folder; choose a folder with one subfolder of images per class "
            "(for cifar-10-python.tar.gz choose the \"CIFAR-10 archive\" source)"
        )
    top_level = _subfolders(root)
    train_dir, test_dir = root, None
    if "train" in top_level and _subfolders(os.path.join(root, "train")):
        train_dir = os.path.join(root, "train")
        if "test" in top_level:
            test_dir = os.path.join(root, "test")
        ignored = [name for name in top_level if name not in ("train", "test")]
        if ignored:
            progress.send("load", f"Ignoring {', '.join(ignored)} beside train/ and test/ "
                          "(the validation images are taken from train/)")
    class_names = _subfolders(train_dir)
    if not class_names:
        has_images = any(is_image_name(e.name) for e in _visible_entries(train_dir))
        hint = " (the images lie directly in it)" if has_images else ""
        raise DatasetError(
            f"{train_dir} has no class subfolders{hint}: put the images of each class in a subfolder "
            "named after the class, e.g. cat/ and dog/, optionally inside train/ and test/"
        )
    records: list[str] = []
    not_images: list[str] = []
    splits = {}
    for split, split_dir in (("train", train_dir), ("test", test_dir)):
        files: list[str] = []
        labels: list[int] = []
        if split_dir is not None:
            present = _subfolders(split_dir)
            unknown = sorted(set(present) - set(class_names))
            if unknown:
                raise DatasetError(
                    f"{split_dir} has class folders that {train_dir} does not: {', '.join(unknown)}; "
                    "the test classes must be training classes"
                )
            for label, name in enumerate(class_names):
                if name in present:
                    before = len(files)
                    relative = os.path.relpath(os.path.join(split_dir, name), root) + os.sep
                    _walk_files(os.path.join(split_dir, name), relative, records, files, not_images)
                    labels.extend([label] * (len(files) - before))
        splits[split] = (files, labels)
    if not splits["train"][0]:
        raise DatasetError(
            f"{train_dir} has class subfolders ({', '.join(class_names[:5])}"
            f"{', ...' if len(class_names) > 5 else ''}) but no images in them (JPEG or PNG)"
        )
    fingerprint = hashlib.sha256("\n".join(records).encode("utf-8", "surrogateescape")).hexdigest()
    return _FolderScan(class_names, *splits["train"], *splits["test"], not_images, fingerprint)


def _report_skipped(progress: Progress, skipped: list[str]) -> None:
    if skipped:
        examples = ", ".join(skipped[:3]) + (", ..." if len(skipped) > 3 else "")
        noun = "file was" if len(skipped) == 1 else "files were"
        progress.send("load", f"Skipped {len(skipped)} {noun} not a readable image: {examples}")


def read_folder_source(cfg: DatasetConfig, progress: Progress) -> Source:
    """The "folder" source: from the cache while the folder is unchanged, else decoded and cached."""
    if not cfg.path.strip():
        raise DatasetError("no image folder chosen: choose a folder with one subfolder of images per class")
    root = os.path.abspath(os.path.expanduser(cfg.path.strip()))
    description = f"image folder {root}"
    progress.send("load", f"Listing {root}")
    scan = _scan_folder(root, progress)
    entry = cache_entry(root, cfg.image_size)
    cached = read_cache(entry, scan.fingerprint, scan.class_names)
    if cached is not None:
        arrays, meta = cached
        progress.send("load", f"Read {len(arrays['y_train']) + len(arrays['y_test'])} images from the cache", 1.0)
        _report_skipped(progress, meta.get("skipped", []))
        skipped = set(meta.get("skipped", []))
        test_files = [path for path in scan.test_files if os.path.relpath(path, root) not in skipped]
        return Source(
            arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"], scan.class_names, description,
            test_files if len(test_files) == len(arrays["y_test"]) else None,
        )

    paths = scan.train_files + scan.test_files
    labels = np.array(scan.train_labels + scan.test_labels, dtype=np.int64)
    size = (cfg.image_size, cfg.image_size) if cfg.image_size else _first_image_size(paths)
    progress.send("load", f"Reading images 0/{len(paths)}", 0.0)
    images, failed = decode_all(paths, size, progress)
    skipped = scan.not_images + [os.path.relpath(paths[i], root) for i in failed]
    train_count = len(scan.train_files) - sum(1 for i in failed if i < len(scan.train_files))
    if failed:
        keep = np.ones(len(paths), dtype=bool)
        keep[failed] = False
        images, labels = images[keep], labels[keep]
    if train_count == 0:
        raise DatasetError(f"none of the training image files in {root} could be read as an image")
    progress.send("load", f"Read {len(labels)} images", 1.0)
    _report_skipped(progress, skipped)

    arrays = {
        "x_train": images[:train_count],
        "y_train": labels[:train_count],
        "x_test": images[train_count:],
        "y_test": labels[train_count:],
    }
    meta = {
        "version": CACHE_VERSION,
        "fingerprint": scan.fingerprint,
        "class_names": scan.class_names,
        "skipped": skipped,
        "path": root,
        "image_size": cfg.image_size,
    }
    try:
        write_cache(entry, arrays, meta)
    except OSError as exc:
        progress.send("load", f"Could not cache the decoded images in {cache_dir()} ({exc.strerror or exc})")
    unread = set(failed)
    test_files = [path for index, path in enumerate(paths) if index >= len(scan.train_files) and index not in unread]
    return Source(
        arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"], scan.class_names, description,
        test_files,
    )


def _first_image_size(paths: list[str]) -> tuple[int, int]:
    """(width, height) of the first file that decodes: image_size 0 keeps that size."""
    for path in paths:
        try:
            image = decode_image(path)
        except DatasetError:  # not an image; the decode pass counts it as skipped
            continue
        return image.shape[1], image.shape[0]
    raise DatasetError("none of the image files could be read as an image")
