"""Decode one image file: the one function training and Classify both use.

A model sees the same pixels for a picture whether it met it in an image
folder during training or in the Classify tab: the orientation a camera
recorded in EXIF is applied, 16-bit files are scaled to 0..255 (Pillow's own
conversion clips them to nearly white), every mode becomes
8-bit RGB, and a file Pillow refuses, a decompression bomb included, raises
a DatasetError that names the file, so a caller can skip it and go on.
"""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image, ImageOps

from engine.errors import DatasetError

IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "bmp", "gif", "webp", "tif", "tiff", "ppm", "pgm"})

# Modes in which Pillow holds 16-bit samples; "I" is how it reads 16-bit PGM and some 16-bit PNG and TIFF.
_WIDE_INTEGER_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})


def is_image_name(name: str) -> bool:
    """True when the file name ends in one of IMAGE_EXTENSIONS (any case)."""
    return "." in name and name.rpartition(".")[2].lower() in IMAGE_EXTENSIONS


def decode_image(path, size: tuple[int, int] | None = None) -> np.ndarray:
    """An image file as uint8 (height, width, 3) RGB, resized to `size` (width, height) if given.

    Raises DatasetError naming the file when it cannot be read or Pillow
    refuses it.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file") from None
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return _decode(data, size)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DatasetError(f"{_file_name(path)} is too large to decode safely: {exc}") from None
    except Exception:  # Pillow raises many kinds of errors for files it cannot read
        raise DatasetError(f"{_file_name(path)} is not an image file this app can read") from None


def _file_name(path) -> str:
    return os.path.basename(os.fspath(path))


def _decode(data: bytes, size: tuple[int, int] | None) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        _refuse_bombs(image)
        if size is not None and image.format == "JPEG" and min(image.size) >= 2 * max(size):
            image.draft("RGB", (max(size), max(size)))  # decode big photos at 1/2 to 1/8 scale
        if "exif" in image.info or image.format == "TIFF":
            image = ImageOps.exif_transpose(image)
        image = _to_rgb(image)
        if size is not None and image.size != size:
            image = image.resize(size, Image.Resampling.BILINEAR)
        width, height = image.size
        return np.frombuffer(image.tobytes(), dtype=np.uint8).reshape(height, width, 3)


def _refuse_bombs(image: Image.Image) -> None:
    """Refuse an image over Pillow's pixel limit before it is decoded.

    Image.open raises only above twice the limit and merely warns between
    the two, though decoding such a file would take as much memory. Checked
    here rather than by turning that warning into an error, because
    warnings.catch_warnings swaps process-wide state on every call (not
    thread-safe, and a measurable share of a small image's decode time).
    """
    limit = Image.MAX_IMAGE_PIXELS
    pixels = image.width * image.height
    if limit and pixels > limit:
        raise Image.DecompressionBombError(f"{pixels} pixels, more than the {limit} Pillow allows")


def _to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB: wide samples scaled down, palettes through RGBA, alpha dropped."""
    if image.mode == "RGB":
        return image
    if image.mode in _WIDE_INTEGER_MODES:
        values = np.clip(np.asarray(image).astype(np.int64), 0, 65535)
        return Image.fromarray(((values * 255 + 32767) // 65535).astype(np.uint8)).convert("RGB")
    if image.mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float64))
        if values.size and values.max() <= 1.0:  # float images usually hold 0..1
            values = values * 255.0
        return Image.fromarray(np.clip(values + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    if image.mode == "P":
        image = image.convert("RGBA")
    return image.convert("RGB")
