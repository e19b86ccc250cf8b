"""Through the served API: Infinity, NaN, huge numbers and booleans for k get the clear message, no traceback."""

from __future__ import annotations

import logging

import httpx
import pytest
from testkit.shapes import build_shapes, write_shape_folder
from test_app import launch_app, make_client

from rag.config import Settings
from rag.startup import open_pipeline


@pytest.fixture(scope="module")
def client(tiny_clip_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("numbers")
    collection = build_shapes(write_shape_folder(root / "images", n=16), root / "collection", tiny_clip_dir)
    pipeline = open_pipeline(Settings(cache_dir=root / "cache"), collection_dir=collection,
                                      with_captioner=False)
    demo, url = launch_app(pipeline)
    yield url, make_client(url, root / "downloads")
    demo.close()


def _raw_call(url: str, endpoint: str, body: str) -> str:
    """The raw HTTP API (POST then read the event stream): JSON text as any client may send it."""
    posted = httpx.post(f"{url}gradio_api/call/{endpoint}", content=body, headers={"Content-Type": "application/json"})
    posted.raise_for_status()
    return httpx.get(f"{url}gradio_api/call/{endpoint}/{posted.json()['event_id']}", timeout=120).text


@pytest.mark.parametrize("bad", ["Infinity", "-Infinity", "NaN", "1e300", "true"])
def test_odd_k_through_the_api(client, bad, caplog):
    url, gradio_client = client
    with caplog.at_level(logging.INFO):
        for endpoint, body in [("search_text", f'{{"data": ["red circle", {bad}]}}'),
                               ("similar_to", f'{{"data": [3, {bad}]}}')]:
            stream = _raw_call(url, endpoint, body)
            assert "event: error" in stream and "k must be a whole number between 1 and 50" in stream, stream
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    assert len(gradio_client.predict("red circle", 3, api_name="/search_text")[0]) == 3  # the app keeps serving
