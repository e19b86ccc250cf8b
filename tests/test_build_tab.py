"""The Build tab end to end through gradio_client: one session builds from an archive and searches it in every
endpoint; another session keeps the Space's collection; the switch, sign-in and owner checks answer clearly."""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from test_app import launch_app, make_client, shapes_collection
from testkit.tiny_models import make_shape_images

from rag.config import Settings
from rag.startup import open_pipeline

SHAPES = ("circle", "square", "triangle")


def shapes_archive(path: Path, n: int = 18, seed: int = 11) -> Path:
    """A zip of shape images in one folder per shape (the labels), a root captions.csv, and two hostile entries."""
    captions = io.StringIO()
    writer = csv.writer(captions)
    writer.writerow(["file", "caption"])
    with zipfile.ZipFile(path, "w") as archive:
        for i, (image, caption, label) in enumerate(make_shape_images(n, seed=seed)):
            name = f"{label.split()[1]}/{i:03d}.png"
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            archive.writestr(name, buffer.getvalue())
            writer.writerow([name, f"mine: {caption}"])
        archive.writestr("captions.csv", captions.getvalue())
        archive.writestr("../escape.png", b"x")
        archive.writestr("__MACOSX/._circle", b"x")
    return path


@pytest.fixture(scope="module")
def space(tiny_clip_dir, tiny_git_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("build-tab")
    collection = shapes_collection(root / "images", root / "collection", tiny_clip_dir, n=24)
    settings = Settings(captioner="git", captioner_model=tiny_git_dir, cache_dir=root / "cache")
    pipeline = open_pipeline(settings, collection_dir=collection)
    demo, url = launch_app(pipeline)
    yield url, root
    demo.close()


def labels(result: dict) -> set[str]:
    return {hit["label"] for hit in result["hits"]}


def test_a_session_builds_searches_its_collection_and_others_keep_the_space(space, tmp_path):
    url, root = space
    mine, other = make_client(url, tmp_path / "a"), make_client(url, tmp_path / "b")
    archive = shapes_archive(tmp_path / "mine.zip")
    result = mine.predict(handle_file(str(archive)), "", "train", "", "", "", True, 0, api_name="/build")
    assert result["ok"] and result["rows"] == 18 and result["seconds"] > 0
    assert {s["source"] for s in result["skipped"]} >= {"../escape.png", "__MACOSX/._circle"}

    info = mine.predict(api_name="/info")
    assert info["rows"] == 18 and info["collection"] == "your upload (mine.zip)"
    _, found = mine.predict("red circle", 5, api_name="/search_text")
    assert labels(found) <= set(SHAPES) and all(h["captions"][0].startswith("mine: ") for h in found["hits"])
    _, similar = mine.predict(found["hits"][0]["id"], 4, api_name="/similar_to")
    assert labels(similar) <= set(SHAPES) and found["hits"][0]["id"] not in {h["id"] for h in similar["hits"]}
    picture = root / "images" / "set_a" / "img_001.jpg"
    _, by_image = mine.predict(handle_file(str(picture)), 4, api_name="/search_image")
    assert labels(by_image) <= set(SHAPES)
    text, _, prompt, described = mine.predict(handle_file(str(picture)), "", 3, api_name="/describe")
    assert text and labels({"hits": described["context"]}) <= set(SHAPES) and "mine: " in prompt

    assert other.predict(api_name="/info")["rows"] == 24
    _, theirs = other.predict("red circle", 5, api_name="/search_text")
    assert all(" " in label for label in labels(theirs))  # "red circle": the Space's labels, not folder names


def test_the_switch_goes_back_to_the_space_collection_and_again(space, tmp_path):
    url, _ = space
    client = make_client(url, tmp_path / "c")
    client.predict(handle_file(str(shapes_archive(tmp_path / "s.zip", n=6))), "", "train", "", "", "", False, 0,
                   api_name="/build")
    assert client.predict(True, api_name="/use_space_collection")["own_collection"] is False
    assert client.predict(api_name="/info")["rows"] == 24
    assert client.predict(False, api_name="/use_space_collection")["own_collection"] is True
    assert client.predict(api_name="/info")["rows"] == 6


def test_keep_and_owner_actions_explain_what_is_needed(space, tmp_path):
    url, _ = space
    client = make_client(url, tmp_path / "d")
    with pytest.raises(AppError, match="no collection of its own yet"):
        client.predict(False, api_name="/use_space_collection")
    with pytest.raises(AppError, match="Build a collection in the Build tab first"):
        client.predict("me/photos", True, api_name="/publish")
    client.predict(handle_file(str(shapes_archive(tmp_path / "k.zip", n=4))), "", "train", "", "", "", False, 0,
                   api_name="/build")
    with pytest.raises(AppError, match="Sign in with Hugging Face"):
        client.predict("me/photos", True, api_name="/publish")
    with pytest.raises(AppError, match="Sign in as the Space's owner"):
        client.predict("", "", api_name="/serve_collection")


def test_bad_build_requests_get_clear_messages(space, tmp_path):
    url, _ = space
    client = make_client(url, tmp_path / "e")
    with pytest.raises(AppError, match="either an archive .* or a dataset"):
        client.predict(None, "", "train", "", "", "", False, 0, api_name="/build")
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("a.bmp", b"\0" * 20_000_000)
    with pytest.raises(AppError, match="compression bomb"):
        client.predict(handle_file(str(bomb)), "", "train", "", "", "", False, 0, api_name="/build")
    assert client.predict(api_name="/info")["rows"] == 24


def test_a_failed_build_leaves_its_reason_for_that_sessions_status_line_once(tmp_path):
    """The page's status line reads why this session's last /build raised: once, never another session's, and
    nothing for MCP calls (which share one session)."""
    from types import SimpleNamespace

    from rag.errors import InvalidInput
    from rag.space.sessions import SessionRegistry
    from ui.build_handlers import BuildHandlers
    from ui.context import MCP_USER

    handlers = BuildHandlers(SessionRegistry(None, tmp_path / "sessions"), Settings(cache_dir=tmp_path / "cache"))
    mine, other = (SimpleNamespace(session_hash=h, headers={}) for h in ("tab-1", "tab-2"))
    with pytest.raises(InvalidInput, match="archive is gone"):
        handlers.build(archive=str(tmp_path / "deleted.zip"), request=mine)
    assert handlers.last_failure(other) is None
    assert "archive is gone" in handlers.last_failure(mine)
    assert handlers.last_failure(mine) is None  # shown once
    agent = SimpleNamespace(session_hash="tab-1", headers={"x-gradio-user": MCP_USER})
    with pytest.raises(InvalidInput):
        handlers.build(archive=str(tmp_path / "deleted.zip"), request=mine)
    assert handlers.last_failure(agent) is None
