"""Hub pull through the real snapshot_download code path, offline, from a pre-populated HF cache."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from huggingface_hub import constants
from testkit.shapes import build_shapes, write_shape_folder

from rag import hub
from rag.collection import Collection
from rag.config import Settings
from rag.errors import CollectionError
from rag.pipeline import Pipeline

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _populate_cache(cache: Path, repo_id: str, collection: Path, revision: str = "main") -> Path:
    """Lay the collection out exactly as huggingface_hub caches a dataset repo snapshot."""
    repo_folder = cache / f"datasets--{repo_id.replace('/', '--')}"
    snapshot = repo_folder / "snapshots" / COMMIT
    shutil.copytree(collection, snapshot)
    (repo_folder / "refs").mkdir(parents=True)
    (repo_folder / "refs" / revision).write_text(COMMIT)
    return snapshot


@pytest.fixture()
def cached_repo(tiny_clip_dir, tmp_path, monkeypatch):
    folder = write_shape_folder(tmp_path / "src", n=24)
    collection = build_shapes(folder, tmp_path / "col", tiny_clip_dir)
    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True, raising=False)
    return _populate_cache(cache, "someone/shapes", collection, revision="v1")


def test_pull_resolves_repo_id_and_revision_from_cache(cached_repo, tmp_path):
    path = hub.resolve_collection("someone/shapes", revision="v1")
    assert path == cached_repo
    pipeline = Pipeline.from_settings(
        Settings(collection="someone/shapes", revision="v1", cache_dir=tmp_path), with_captioner=False
    )
    assert len(pipeline.collection) == 24 and pipeline.info()["revision"] == "v1"


def test_unknown_repo_offline_gives_clear_error(cached_repo):
    with pytest.raises(CollectionError, match="not in the local HF cache|not found"):
        hub.resolve_collection("someone/other")


def test_spec_that_is_neither_folder_nor_repo(tmp_path):
    with pytest.raises(CollectionError, match="neither a local collection folder"):
        hub.resolve_collection(str(tmp_path / "missing" / "deep" / "dir"))


def test_push_creates_repo_branch_and_uploads_collection_files(tiny_clip_dir, tmp_path, monkeypatch):
    folder = write_shape_folder(tmp_path / "src", n=12)
    collection = build_shapes(folder, tmp_path / "col", tiny_clip_dir)
    calls = {}
    monkeypatch.setattr(hub, "create_repo", lambda repo_id, **kw: calls.setdefault("repo", (repo_id, kw)))
    monkeypatch.setattr(hub, "create_branch", lambda repo_id, **kw: calls.setdefault("branch", (repo_id, kw)))
    monkeypatch.setattr(hub, "upload_folder", lambda **kw: calls.setdefault("upload", kw) and "https://hf.co/commit/x")
    hub.push_collection(collection, "me/shapes", private=True, revision="v2")
    assert calls["repo"] == ("me/shapes", {"repo_type": "dataset", "private": True, "exist_ok": True, "token": None})
    assert calls["branch"][1]["branch"] == "v2"
    upload = calls["upload"]
    assert upload["repo_type"] == "dataset" and upload["revision"] == "v2"
    assert Path(upload["folder_path"]) == collection
    assert set(upload["allow_patterns"]) >= {"manifest.json", "index.faiss", "data/metadata-*.parquet"}
    assert Collection.open(collection).manifest.rows == 12
