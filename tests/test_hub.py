"""Hub pull through the real snapshot_download code path, offline, from a pre-populated HF cache."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from huggingface_hub import CommitOperationDelete, constants
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


class FakeHub:
    """Stands in for HfApi: keeps one repo's files per commit and records every call."""

    def __init__(self, files: dict[str, bytes] | None = None):
        self.calls: list[tuple[str, dict]] = []
        self.commits = {"0" * 40: dict(files or {".gitattributes": b"*.parquet filter=lfs"})}
        self.branches = {"main": "0" * 40}
        self.corrupt_next_upload = False

    def __call__(self, token=None):
        self.calls.append(("HfApi", {"token": token}))
        return self

    def create_repo(self, repo_id, **kw):
        self.calls.append(("create_repo", {"repo_id": repo_id, **kw}))

    def create_branch(self, repo_id, branch, **kw):
        self.calls.append(("create_branch", {"repo_id": repo_id, "branch": branch, **kw}))
        self.branches.setdefault(branch, self.branches["main"])

    def dataset_info(self, repo_id, revision=None, **kw):
        return SimpleNamespace(sha=self.branches[revision or "main"])

    def list_repo_files(self, repo_id, revision=None, **kw):
        return sorted(self.commits[self.branches.get(revision, revision)])

    def create_commit(self, repo_id, operations, *, commit_message, revision=None, parent_commit=None, **kw):
        self.calls.append(("create_commit", {"operations": operations, "revision": revision, "parent": parent_commit}))
        branch = revision or "main"
        assert parent_commit == self.branches[branch]
        files = dict(self.commits[parent_commit])
        for op in operations:
            if isinstance(op, CommitOperationDelete):
                del files[op.path_in_repo]
            else:
                data = Path(op.path_or_fileobj).read_bytes()
                files[op.path_in_repo] = data[:-1] + b"x" if self.corrupt_next_upload else data
        sha = hashlib.sha1(repr(sorted(files)).encode() + str(len(self.commits)).encode()).hexdigest()
        self.commits[sha] = files
        self.branches[branch] = sha
        return SimpleNamespace(oid=sha, commit_url=f"https://hf.co/datasets/{repo_id}/commit/{sha}")

    def list_repo_tree(self, repo_id, recursive=False, revision=None, **kw):
        for path, data in self.commits[revision].items():
            lfs = SimpleNamespace(sha256=hashlib.sha256(data).hexdigest()) if not path.endswith((".json", ".md")) else None
            yield SimpleNamespace(path=path, size=len(data), lfs=lfs)


def _operations(fake: FakeHub) -> list:
    return [kw for name, kw in fake.calls if name == "create_commit"]


def test_republishing_a_smaller_collection_replaces_files_in_one_verified_commit(tiny_clip_dir, tmp_path, monkeypatch,
                                                                                 capsys):
    folder = write_shape_folder(tmp_path / "src", n=12)
    big = build_shapes(folder, tmp_path / "big", tiny_clip_dir, batch_size=4, chunk_rows=4)
    small = build_shapes(folder, tmp_path / "small", tiny_clip_dir, batch_size=8, chunk_rows=8)
    fake = FakeHub()
    monkeypatch.setattr(hub, "HfApi", fake)
    first = hub.push_collection(big, "me/shapes", private=True, revision="v2")
    assert ("create_repo", {"repo_id": "me/shapes", "repo_type": "dataset", "private": True, "exist_ok": True}) in fake.calls
    assert any(name == "create_branch" and kw["branch"] == "v2" for name, kw in fake.calls)
    assert sorted(fake.commits[first]) == sorted([".gitattributes", "README.md", "index.faiss", "manifest.json",
                                                  "map.parquet", "data/metadata-00000.parquet",
                                                  "data/metadata-00001.parquet", "data/metadata-00002.parquet"])
    second = hub.push_collection(small, "me/shapes", revision="v2")
    commits = _operations(fake)
    assert len(commits) == 2  # one commit per push: adds and deletes together
    deleted = [op.path_in_repo for op in commits[1]["operations"] if isinstance(op, CommitOperationDelete)]
    assert deleted == ["data/metadata-00002.parquet"] and commits[1]["parent"] == first
    assert f"commit {second}" in capsys.readouterr().out
    pulled = tmp_path / "pulled"
    for path, data in fake.commits[second].items():
        (pulled / path).parent.mkdir(parents=True, exist_ok=True)
        (pulled / path).write_bytes(data)
    assert len(Collection.open(pulled)) == 12  # what the Space would pull now loads


def test_a_push_whose_commit_does_not_match_the_manifest_fails(tiny_clip_dir, tmp_path, monkeypatch):
    folder = write_shape_folder(tmp_path / "src", n=8)
    collection = build_shapes(folder, tmp_path / "col", tiny_clip_dir)
    fake = FakeHub()
    fake.corrupt_next_upload = True
    monkeypatch.setattr(hub, "HfApi", fake)
    with pytest.raises(CollectionError, match="does not match the manifest checksum"):
        hub.push_collection(collection, "me/shapes")


def test_a_broken_local_collection_is_never_pushed(tiny_clip_dir, tmp_path, monkeypatch):
    folder = write_shape_folder(tmp_path / "src", n=8)
    collection = build_shapes(folder, tmp_path / "col", tiny_clip_dir)
    with open(collection / "index.faiss", "ab") as handle:
        handle.write(b"\0")
    fake = FakeHub()
    monkeypatch.setattr(hub, "HfApi", fake)
    with pytest.raises(CollectionError, match="checksum"):
        hub.push_collection(collection, "me/shapes")
    assert not _operations(fake)
