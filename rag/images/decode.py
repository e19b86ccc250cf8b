"""Image decoding that never surprises: RGB, EXIF-upright, first frame, bombs refused; and thumbnails."""

from __future__ import annotations

import io
import math
import re
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps

from rag.images.budget import ByteBudget
from rag.errors import InvalidInput

ImageInput = Union[str, Path, bytes, Image.Image, np.ndarray]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
# Refuse anything above this many pixels before decoding it (a 16k x 16k image is 256 Mpx).
MAX_PIXELS = 16_384 * 16_384 // 2
# ...and any load that would hold more than this at once (pixels x bytes per pixel of the mode, plus working copies).
MAX_DECODE_BYTES = 768 * 2**20
# All decodes in the process together: larger ones wait up to DECODE_WAIT_SECONDS for room, then are refused.
DECODE_BUDGET = ByteBudget(1024 * 2**20)
DECODE_WAIT_SECONDS = 15.0
# Images are decoded (JPEG draft) or reduced (integer box filter) to a shorter side of at least this many pixels:
# CLIP sees 224, thumbnails are 256, captioners read up to ~900.
DECODE_SIDE = 1024
MIN_SIDE = 1
THUMBNAIL_SIZE = 256
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")
_UNREDUCIBLE = ("1", "P")  # Image.reduce refuses these; they are converted at full size first

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
        raise InvalidInput(f"No image file named {path.name}.")
    if path.stat().st_size == 0:
        raise InvalidInput(f"{path.name} is empty (0 bytes), not an image.")
    return Image.open(path)


def bytes_per_pixel(mode: str) -> int:
    """Bytes Pillow stores per pixel of ``mode``: 1 for L/P/1, 2 for 16-bit greyscale, 4 for the rest."""
    if mode in _SIXTEEN_BIT:
        return 2
    if mode in ("1", "L", "P"):
        return 1
    return 4


def _reduce_factor(size: tuple[int, int], side: int) -> int:
    return max(1, min(size) // side)


def decode_cost(size: tuple[int, int], mode: str, side: int = DECODE_SIDE) -> int:
    """Bytes a load of an image of this size and mode may hold at once: the full-size decode plus working copies."""
    width, height = size
    full = width * height * bytes_per_pixel(mode)
    if mode in _UNREDUCIBLE:
        full += width * height * 4  # converted to RGB(A) at full size before it can be reduced
    factor = _reduce_factor(size, side)
    small = -(-width // factor) * -(-height // factor) * 4
    return full + 2 * small  # the reduced (or EXIF-transposed) copy and the RGB result


def _reduce(image: Image.Image, side: int) -> Image.Image:
    """Shrink by an integer factor (box filter) so the shorter side stays >= ``side``; 16-bit stays 16-bit."""
    factor = _reduce_factor(image.size, side)
    if image.mode in _UNREDUCIBLE:
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if factor == 1:
        return image
    if image.mode in _SIXTEEN_BIT:
        size = (-(-image.width // factor), -(-image.height // factor))
        return image.resize(size, Image.Resampling.BOX)
    return image.reduce(factor)


def _sixteen_to_l(image: Image.Image) -> Image.Image:
    """16/32-bit greyscale to 8-bit, scaled by its maximum, in float32 on the (already reduced) image."""
    scaled = np.asarray(image).astype(np.float32)
    top = float(scaled.max()) if scaled.size else 0.0
    scaled *= 255.0 / (top if top > 0 else 1.0)
    np.clip(scaled, 0, 255, out=scaled)
    return Image.fromarray(scaled.astype(np.uint8), mode="L")


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any mode (CMYK, RGBA on white, palette, 16-bit, greyscale) to 8-bit RGB, EXIF orientation applied."""
    image = ImageOps.exif_transpose(image)
    if image.mode in _SIXTEEN_BIT or image.mode == "I":
        image = _sixteen_to_l(image)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        return background
    return image.convert("RGB")


def _scrub(exc: Exception, source: ImageInput) -> str:
    """Pillow's message without the server's file path (uploads live under /tmp/gradio/...)."""
    text = str(exc)
    if isinstance(source, (str, Path)):
        path = Path(source)
        for form in {str(source), str(path), str(path.absolute())}:
            text = text.replace(form, path.name)
    text = re.sub(r"<_io\.\w+ object at 0x[0-9a-f]+>", "the upload", text)
    return re.sub(r"(?<![\w.])/(?:[^/\s'\"]+/)+([^/\s'\"]+)", r"\1", text)


def load_image(source: ImageInput, side: int = DECODE_SIDE) -> Image.Image:
    """Decode a path, bytes, PIL image or array into a loaded RGB image, or raise InvalidInput saying why.

    The result keeps a shorter side of at least ``side`` pixels (JPEG draft decoding, then an integer
    reduction); decodes count against the process-wide DECODE_BUDGET.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = _open(source)
            _check_size(image)
            if getattr(image, "is_animated", False):
                image.seek(0)
            if image.format == "JPEG":
                image.draft("RGB", (side, side))
            peak = decode_cost(image.size, image.mode, side)
            if peak > MAX_DECODE_BYTES:
                raise InvalidInput(
                    f"The image is {image.width}x{image.height} pixels in mode {image.mode}: decoding it would take "
                    f"{peak / 2**20:,.0f} MB; the limit is {MAX_DECODE_BYTES / 2**20:,.0f} MB. Send a smaller image."
                )
            with DECODE_BUDGET.reserve(peak, DECODE_WAIT_SECONDS):
                image.load()
                rgb = to_rgb(_reduce(image, side))
    except InvalidInput:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidInput(f"The image is too large to decode safely ({_scrub(exc, source)}).") from exc
    except (OSError, ValueError, SyntaxError, TypeError) as exc:
        raise InvalidInput(
            f"This file could not be read as an image ({exc.__class__.__name__}: {_scrub(exc, source)})."
        ) from exc
    if min(rgb.size) < MIN_SIDE:
        raise InvalidInput("The image has no pixels.")
    return rgb


def _check_size(image: Image.Image) -> None:
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise InvalidInput(
            f"The image is {width}x{height} pixels; images above {MAX_PIXELS // 1_000_000} megapixels are refused."
        )


def pad_to_aspect(image: Image.Image, max_ratio: float, colour: tuple[int, int, int] = (0, 0, 0)) -> Image.Image:
    """The image centred on a border that brings its long/short side ratio down to ``max_ratio``; unchanged if within."""
    width, height = image.size
    if max(width, height) <= max_ratio * min(width, height):
        return image
    size = (width, math.ceil(width / max_ratio)) if width > height else (math.ceil(height / max_ratio), height)
    return ImageOps.pad(image, size, color=colour)


def thumbnail_bytes(image: Image.Image, size: int = THUMBNAIL_SIZE, quality: int = 85) -> bytes:
    """A JPEG thumbnail whose longest side is at most ``size`` pixels, for galleries and the dataset viewer."""
    thumb = image.copy()
    thumb.thumbnail((size, size), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    thumb.save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()
