"""Hub pull through the real snapshot_download code path, offline, from a pre-populated HF cache; push (and pull
it back) against testkit's fake Hub, which answers with huggingface_hub's own types and errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from huggingface_hub import constants
from testkit.shapes import build_shapes, write_shape_folder

from rag.collection import hub
from rag.collection.reader import Collection
from rag.config import Settings
from rag.errors import CollectionError
from rag.startup import open_pipeline

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
    pipeline = open_pipeline(
        Settings(collection="someone/shapes", revision="v1", cache_dir=tmp_path), with_captioner=False
    )
    assert len(pipeline.collection) == 24
    assert pipeline.info()["revision"] == COMMIT and pipeline.info()["requested_revision"] == "v1"


def test_unknown_repo_offline_gives_clear_error(cached_repo):
    with pytest.raises(CollectionError, match="not in the local HF cache|not found"):
        hub.resolve_collection("someone/other")


def test_spec_that_is_neither_folder_nor_repo(tmp_path):
    with pytest.raises(CollectionError, match="neither a local collection folder"):
        hub.resolve_collection(str(tmp_path / "missing" / "deep" / "dir"))


def _push_commits(repo, revision: str) -> list:
    """The commits rag pushed on ``revision`` (the Hub's own initial commit left out), oldest first."""
    return [c for c in reversed(repo.history(revision)) if c.message != "initial commit"]


def test_republishing_a_smaller_collection_replaces_files_in_one_verified_commit(tiny_clip_dir, tmp_path, fake_hub,
                                                                                 capsys):
    folder = write_shape_folder(tmp_path / "src", n=12)
    big = build_shapes(folder, tmp_path / "big", tiny_clip_dir, batch_size=4, chunk_rows=4)
    small = build_shapes(folder, tmp_path / "small", tiny_clip_dir, batch_size=8, chunk_rows=8)
    token = fake_hub.add_user("me")
    first = hub.push_collection(big, "me/shapes", private=True, revision="v2", token=token)
    repo = fake_hub.repo("me/shapes")
    assert repo.private and repo.branches["v2"] == first and repo.branches["main"] != first
    assert sorted(repo.files(first)) == sorted([".gitattributes", "README.md", "index.faiss", "manifest.json",
                                                "map.parquet", "data/metadata-00000.parquet",
                                                "data/metadata-00001.parquet", "data/metadata-00002.parquet"])
    second = hub.push_collection(small, "me/shapes", revision="v2", token=token)
    pushed = _push_commits(repo, "v2")
    assert [c.oid for c in pushed] == [first, second]  # one commit per push: adds and deletes together
    assert pushed[1].parent == first and "data/metadata-00002.parquet" not in repo.files(second)
    assert f"commit {second}" in capsys.readouterr().out
    pulled = hub.pull_collection("me/shapes", revision="v2", token=token)
    assert pulled.name == second and len(Collection.open(pulled)) == 12  # what the Space would pull now loads


def test_a_push_whose_commit_does_not_match_the_manifest_fails(tiny_clip_dir, tmp_path, fake_hub):
    folder = write_shape_folder(tmp_path / "src", n=8)
    collection = build_shapes(folder, tmp_path / "col", tiny_clip_dir)
    fake_hub.rewrite_upload = lambda path, data: data[:-1] + b"x"  # the Hub stores other bytes than were sent
    with pytest.raises(CollectionError, match="does not match the manifest checksum"):
        hub.push_collection(collection, "me/shapes", token=fake_hub.add_user("me"))


def test_a_broken_local_collection_is_never_pushed(tiny_clip_dir, tmp_path, fake_hub):
    folder = write_shape_folder(tmp_path / "src", n=8)
    collection = build_shapes(folder, tmp_path / "col", tiny_clip_dir)
    with open(collection / "index.faiss", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(CollectionError, match="checksum"):
        hub.push_collection(collection, "me/shapes", token=fake_hub.add_user("me"))
    assert fake_hub.calls == [] and not fake_hub.repos
