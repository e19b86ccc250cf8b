"""Every decode is bounded: bytes per pixel of its mode, a shared budget, reduced decoding; errors carry no paths."""

from __future__ import annotations

import io
import threading
import time
import tracemalloc

import numpy as np
import pytest
from PIL import Image

from rag.images import decode as images
from rag.images.budget import ByteBudget
from rag.errors import InvalidInput
from rag.images.decode import load_image


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_limit_counts_bytes_per_pixel_of_the_mode(monkeypatch):
    size = (400, 300)
    grey_cost, rgb_cost = images.decode_cost(size, "L"), images.decode_cost(size, "RGB")
    assert grey_cost < rgb_cost
    monkeypatch.setattr(images, "MAX_DECODE_BYTES", grey_cost)
    grey = load_image(_png(Image.new("L", size, 90)))  # 1 byte per pixel: decoded
    assert grey.size == size and grey.mode == "RGB"
    with pytest.raises(InvalidInput, match=r"400x300 pixels in mode RGB.*limit"):
        load_image(_png(Image.new("RGB", size, (1, 2, 3))))  # same pixels, 4 bytes each: refused


def test_sixteen_bit_image_is_reduced_without_float64_copies():
    size = (1600, 1200)
    ramp = (np.arange(size[0] * size[1], dtype=np.uint32) % 4096 * 16).astype(np.uint16).reshape(size[::-1])
    data = _png(Image.fromarray(ramp))
    tracemalloc.start()
    image = load_image(data, side=200)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert image.mode == "RGB" and min(image.size) >= 200 and max(image.size) < size[0]
    assert peak < ramp.nbytes, f"numpy held {peak} bytes: a full-size copy of a {ramp.nbytes}-byte 16-bit image"
    assert np.asarray(image).max() == 255  # still scaled to the image's own maximum


def test_large_jpeg_is_decoded_at_reduced_scale():
    data = io.BytesIO()
    Image.new("RGB", (4096, 3072), (200, 30, 30)).save(data, format="JPEG")
    image = load_image(data.getvalue())
    assert images.DECODE_SIDE <= min(image.size) < 2 * images.DECODE_SIDE
    assert np.allclose(np.asarray(image)[10, 10], (200, 30, 30), atol=8)


def test_decodes_share_one_budget_wait_then_refuse(monkeypatch):
    need = images.decode_cost((1500, 1500), "RGB")
    other = need // 2 + 1  # another decode holding this much leaves too little room
    budget = ByteBudget(need + need // 2)
    monkeypatch.setattr(images, "DECODE_BUDGET", budget)
    monkeypatch.setattr(images, "DECODE_WAIT_SECONDS", 0.3)
    data = _png(Image.new("RGB", (1500, 1500), (0, 0, 255)))
    with budget.reserve(other, wait=0):
        started = time.perf_counter()
        with pytest.raises(InvalidInput, match="busy"):
            load_image(data)
        assert time.perf_counter() - started >= 0.3  # it waited its turn before giving up
    monkeypatch.setattr(images, "DECODE_WAIT_SECONDS", 10)
    hold, waiting = threading.Event(), threading.Event()

    class Watched(threading.Condition):  # the budget's condition, noting when a decode starts waiting on it
        def wait(self, timeout=None):
            waiting.set()
            return super().wait(timeout)

    budget._free = Watched()

    def occupy() -> None:
        with budget.reserve(other, wait=0):
            hold.set()
            assert waiting.wait(10)  # the other decode holds its bytes until this one waits for them

    thread = threading.Thread(target=occupy)
    thread.start()
    hold.wait()
    assert load_image(data).size == (1500, 1500)  # ran once the other decode finished
    thread.join()
    assert waiting.is_set()  # it did wait for its turn
    assert budget.used == 0 and budget.peak <= budget.total


def test_errors_name_the_file_but_not_the_server_path(tmp_path):
    folder = tmp_path / "gradio" / "0123abcd"
    folder.mkdir(parents=True)
    (folder / "holiday.png").write_bytes(b"this is not a png")
    for source in (folder / "holiday.png", str(folder / "holiday.png"), folder / "gone.jpg"):
        with pytest.raises(InvalidInput) as caught:
            load_image(source)
        message = str(caught.value)
        assert str(tmp_path) not in message and "/tmp" not in message and "0123abcd" not in message, message
        assert str(source).rsplit("/", 1)[-1] in message


