"""Image decoding that never surprises: RGB, EXIF-upright, first frame, bombs refused; and thumbnails."""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps

from .errors import InvalidInput

ImageInput = Union[str, Path, bytes, Image.Image, np.ndarray]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
# Refuse anything above this many pixels before decoding it (a 16k x 16k image is 256 Mpx).
MAX_PIXELS = 16_384 * 16_384 // 2
MIN_SIDE = 1
THUMBNAIL_SIZE = 256

Image.MAX_IMAGE_PIXELS = MAX_PIXELS


def _open(source: ImageInput) -> Image.Image:
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, np.ndarray):
        if source.dtype != np.uint8:
            source = np.clip(source, 0, 255).astype(np.uint8)
        return Image.fromarray(source)
    if isinstance(source, bytes):
        if not source:
            raise InvalidInput("The file is empty (0 bytes), not an image.")
        return Image.open(io.BytesIO(source))
    path = Path(source)
    if not path.is_file():
        raise InvalidInput(f"No image file at {path}.")
    if path.stat().st_size == 0:
        raise InvalidInput(f"{path.name} is empty (0 bytes), not an image.")
    return Image.open(path)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any mode (CMYK, RGBA on white, palette, 16-bit, greyscale) to 8-bit RGB, EXIF orientation applied."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        top = array.max() or 1.0
        image = Image.fromarray((array * (255.0 / top)).astype(np.uint8), mode="L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        return background
    return image.convert("RGB")


def load_image(source: ImageInput) -> Image.Image:
    """Decode a path, bytes, PIL image or array into a fully loaded RGB image, or raise InvalidInput saying why."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = _open(source)
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise InvalidInput(
                    f"The image is {width}x{height} pixels; images above {MAX_PIXELS // 1_000_000} megapixels are refused."
                )
            if getattr(image, "is_animated", False):
                image.seek(0)
            image.load()
            rgb = to_rgb(image)
    except InvalidInput:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidInput(f"The image is too large to decode safely ({exc}).") from exc
    except (OSError, ValueError, SyntaxError, TypeError) as exc:
        raise InvalidInput(f"This file could not be read as an image ({exc.__class__.__name__}: {exc}).") from exc
    if min(rgb.size) < MIN_SIDE:
        raise InvalidInput("The image has no pixels.")
    return rgb


def thumbnail_bytes(image: Image.Image, size: int = THUMBNAIL_SIZE, quality: int = 85) -> bytes:
    """A JPEG thumbnail whose longest side is at most ``size`` pixels, for galleries and the dataset viewer."""
    thumb = image.copy()
    thumb.thumbnail((size, size), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    thumb.save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()
