"""engine.datasets.images: one file decoded to 8-bit RGB, whatever its orientation, depth or mode."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from datasetfiles import solid, write_gradient_png16, write_image, write_rotated_jpeg
from engine.datasets import IMAGE_EXTENSIONS, decode_image, is_image_name
from engine.errors import DatasetError


def test_exif_orientation_is_applied(tmp_path):
    path = write_rotated_jpeg(tmp_path / "turned.jpg", size=(48, 24))
    image = decode_image(path)
    assert image.shape == (48, 24, 3) and image.dtype == np.uint8
    assert image[:, 12:].mean() > 200 and image[:, :12].mean() < 50
    resized = decode_image(path, (32, 32))
    assert resized.shape == (32, 32, 3)
    assert resized[:, 16:].mean() > 200 and resized[:, :16].mean() < 50


def test_a_16_bit_png_is_scaled_not_clipped(tmp_path):
    expected = write_gradient_png16(tmp_path / "deep.png")
    image = decode_image(tmp_path / "deep.png")
    assert image.shape == (4, 256, 3)
    assert np.abs(image[..., 0].astype(float) - expected).max() <= 1
    np.testing.assert_array_equal(image[..., 0], image[..., 2])


@pytest.mark.parametrize("fmt, suffix", [("PPM", "pgm"), ("TIFF", "tif")])
def test_other_16_bit_files_are_scaled_too(tmp_path, fmt, suffix):
    values = np.array([[0, 257 * 64, 257 * 128, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / f"deep.{suffix}", format=fmt)
    image = decode_image(tmp_path / f"deep.{suffix}")
    np.testing.assert_array_equal(image[0, :, 1], [0, 64, 128, 255])


def test_every_mode_becomes_rgb(tmp_path):
    Image.new("L", (8, 8), 77).save(tmp_path / "gray.png")
    Image.new("LA", (8, 8), (90, 10)).save(tmp_path / "gray-alpha.png")
    Image.new("1", (8, 8), 1).save(tmp_path / "bits.png")
    Image.new("RGBA", (8, 8), (1, 2, 3, 128)).save(tmp_path / "alpha.png")
    Image.new("CMYK", (8, 8), (0, 0, 0, 0)).save(tmp_path / "print.jpg")
    palette = Image.new("P", (8, 8), 1)
    palette.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    palette.save(tmp_path / "palette.gif", transparency=0)
    expected = {
        "gray.png": (77, 77, 77), "gray-alpha.png": (90, 90, 90), "bits.png": (255, 255, 255),
        "alpha.png": (1, 2, 3), "print.jpg": (255, 255, 255), "palette.gif": (10, 200, 30),
    }
    for name, color in expected.items():
        image = decode_image(tmp_path / name)
        assert image.shape == (8, 8, 3) and image.dtype == np.uint8, name
        assert np.abs(image.reshape(-1, 3).astype(int) - color).max() <= 1, name


def test_resizing_to_width_and_height(tmp_path):
    write_image(str(tmp_path / "wide.png"), solid((10, 20, 30), (40, 20)), "PNG")
    assert decode_image(tmp_path / "wide.png", (16, 8)).shape == (8, 16, 3)
    assert decode_image(tmp_path / "wide.png").shape == (20, 40, 3)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("side", [40, 100])
def test_a_decompression_bomb_is_refused_with_the_file_name(tmp_path, monkeypatch, side):
    """Pillow warns between its limit and twice it, and raises above: both are refused."""
    write_image(str(tmp_path / "bomb.png"), solid((1, 2, 3), (side, side)), "PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(DatasetError, match="bomb.png is too large to decode safely"):
        decode_image(tmp_path / "bomb.png")


@pytest.mark.parametrize("name, content", [
    ("garbage.jpg", b"this is no jpeg"),
    ("empty.png", b""),
    ("truncated.png", None),
])
def test_files_pillow_cannot_read_raise_a_dataset_error_naming_them(tmp_path, name, content):
    if content is None:
        write_image(str(tmp_path / "whole.png"), np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8),
                    "PNG")
        content = (tmp_path / "whole.png").read_bytes()[:300]
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DatasetError, match=f"{name} is not an image file this app can read"):
        decode_image(tmp_path / name)


def test_missing_files_and_folders(tmp_path):
    with pytest.raises(DatasetError, match="no such file"):
        decode_image(tmp_path / "absent.png")
    with pytest.raises(DatasetError, match="cannot read"):
        decode_image(tmp_path)


def test_image_names():
    assert {"jpg", "jpeg", "png", "bmp", "gif", "webp", "tif", "tiff"} <= IMAGE_EXTENSIONS
    assert is_image_name("a.PNG") and is_image_name("photo.tar.jpeg")
    assert not is_image_name("notes.txt") and not is_image_name("png")
