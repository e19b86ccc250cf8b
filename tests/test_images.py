"""Image decoding: every odd format becomes RGB, bad files get a clear InvalidInput, bombs are refused."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from rag.images import decode as images
from rag.errors import InvalidInput
from rag.images.decode import load_image, thumbnail_bytes


def _bytes(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def test_cmyk_rgba_palette_and_16bit_become_rgb():
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # red in CMYK
    rgba = Image.new("RGBA", (8, 8), (0, 0, 255, 0))  # fully transparent -> white background
    palette = Image.new("RGB", (8, 8), (0, 255, 0)).convert("P")
    sixteen = Image.fromarray(np.full((8, 8), 65535, dtype=np.uint16))
    for source, expected in [
        (_bytes(cmyk, "JPEG"), (255, 0, 0)),
        (_bytes(rgba, "PNG"), (255, 255, 255)),
        (_bytes(palette, "PNG"), (0, 255, 0)),
        (_bytes(sixteen, "PNG"), (255, 255, 255)),
    ]:
        image = load_image(source)
        assert image.mode == "RGB"
        assert np.allclose(np.asarray(image)[4, 4], expected, atol=12)


def test_animated_gif_gives_first_frame():
    frames = [Image.new("RGB", (10, 10), c) for c in [(255, 0, 0), (0, 0, 255)]]
    data = _bytes(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    image = load_image(data)
    red, _, blue = np.asarray(image)[5, 5]
    assert red > 200 and blue < 50


def test_exif_orientation_is_applied():
    wide = Image.new("RGB", (40, 20), (10, 200, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    image = load_image(_bytes(wide, "JPEG", exif=exif.tobytes()))
    assert image.size == (20, 40)


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty"),
        (b"this is a text file, not a picture", "could not be read"),
        (_bytes(Image.new("RGB", (64, 64), (1, 2, 3)), "JPEG")[:200], "could not be read"),
    ],
)
def test_bad_files_raise_invalid_input_with_reason(data, reason):
    with pytest.raises(InvalidInput, match=reason):
        load_image(data)


def test_missing_and_zero_byte_paths(tmp_path):
    with pytest.raises(InvalidInput, match="No image file"):
        load_image(tmp_path / "nope.jpg")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(InvalidInput, match="empty"):
        load_image(empty)


def test_decompression_bomb_is_refused_before_decoding(monkeypatch):
    monkeypatch.setattr(images, "MAX_PIXELS", 100 * 100)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100 * 100)
    data = _bytes(Image.new("RGB", (400, 400)), "PNG")
    with pytest.raises(InvalidInput, match="too large|refused"):
        load_image(data)


def test_one_pixel_image_and_thumbnail_size():
    assert load_image(Image.new("RGB", (1, 1))).size == (1, 1)
    thumb = Image.open(io.BytesIO(thumbnail_bytes(Image.new("RGB", (1000, 500)))))
    assert thumb.format == "JPEG" and max(thumb.size) == 256
