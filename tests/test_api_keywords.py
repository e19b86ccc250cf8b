"""Keyword calls from gradio_client with only the required arguments work for every endpoint.

A parameter the client lists without a default must be given even when the function has one, so
``client.predict(archive=handle_file("photos.zip"), api_name="/build")`` used to fail with "No value provided for
required argument: dataset". Every endpoint (the documented ones and the callable-but-undocumented session ones)
is called here with only what it truly needs; each answers with a result or one clear sentence.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import httpx
import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from test_app import launch_app, make_client, shapes_collection

from rag.config import Settings
from rag.startup import open_pipeline

# The only parameters a caller must give: the thing the endpoint acts on. Everything else has a default.
MAY_BE_REQUIRED = {"query", "image", "row_id", "ids"}
NOT_SENTENCES = ("No value provided", "Traceback", "required argument")


@pytest.fixture(scope="module")
def served(tiny_clip_dir, tiny_git_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("api-keywords")
    collection = shapes_collection(root / "images", root / "collection", tiny_clip_dir, n=24)
    pipeline = open_pipeline(
        Settings(captioner="git", captioner_model=tiny_git_dir, cache_dir=root / "cache"), collection_dir=collection
    )
    demo, url = launch_app(pipeline)
    yield url, root
    demo.close()


def all_endpoints(url: str) -> dict[str, dict]:
    """Every endpoint a client may call by name, with its parameters (undocumented ones included)."""
    info = httpx.get(f"{url.rstrip('/')}/gradio_api/info", params={"all_endpoints": "true"}, timeout=30).json()
    # gr.Examples' own plumbing (/load_example*) fills the page's inputs; it is Gradio's, not this Space's API.
    return {name: ep for name, ep in info["named_endpoints"].items() if not name.startswith("/load_example")}


def required(endpoint: dict) -> list[dict]:
    return [p for p in endpoint["parameters"] if not p["parameter_has_default"]]


def a_value(parameter: dict, image: Path):
    """A plausible value for a required parameter, from its name."""
    name = parameter["parameter_name"]
    if name == "image":
        return handle_file(str(image))
    if name == "query":
        return "red circle"
    if name == "ids":
        return "0, 1"
    return 0


def test_only_the_acted_on_thing_is_required(served):
    url, _ = served
    endpoints = all_endpoints(url)
    assert {"/build", "/search", "/search_text", "/describe", "/info"} <= set(endpoints)
    too_many = {name: [p["parameter_name"] for p in required(ep) if p["parameter_name"] not in MAY_BE_REQUIRED]
                for name, ep in endpoints.items()}
    assert {name: extra for name, extra in too_many.items() if extra} == {}


def test_every_endpoint_answers_a_keyword_call_with_only_its_required_arguments(served, tmp_path):
    url, root = served
    image = next((root / "images").rglob("*.jpg"))
    client = make_client(url, tmp_path / "downloads")
    answers = {}
    for name, endpoint in all_endpoints(url).items():
        arguments = {p["parameter_name"]: a_value(p, image) for p in required(endpoint)}
        try:
            client.predict(**arguments, api_name=name)
            answers[name] = "result"
        except AppError as exc:
            message = str(exc)
            assert not any(bad in message for bad in NOT_SENTENCES), (name, message)
            assert message.strip().endswith((".", "!", "?", ")")), (name, message)
            answers[name] = message
    assert answers["/search_text"] == answers["/search"] == answers["/info"] == "result"
    assert "archive" in answers["/build"] or "dataset" in answers["/build"], answers["/build"]


def test_build_from_an_archive_by_keyword(served, tmp_path):
    """The issue's own example: an archive, nothing else."""
    url, root = served
    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in sorted((root / "images").rglob("*.jpg"))[:6]:
            zipped.write(path, path.name)
    client = make_client(url, tmp_path / "downloads")
    result = client.predict(archive=handle_file(str(archive)), api_name="/build")
    assert result["ok"] is True and result["rows"] == 6
    hits = client.predict(query="red circle", k=3, api_name="/search_text")[1]["hits"]
    assert len(hits) == 3 and all(hit["id"] < 6 for hit in hits)
