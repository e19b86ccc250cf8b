"""Pull a collection from, and push it to, a Hugging Face dataset repo (huggingface_hub)."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, snapshot_download
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

from rag.collection.reader import (ADAPTER_FILE, CARD_FILE, DATA_DIR, INDEX_FILE, MANIFEST, MAP_FILE, TEXT_EXPORT_FILE,
                                   Manifest, verify_files)
from rag.errors import CollectionError

COLLECTION_PATTERNS = [MANIFEST, INDEX_FILE, CARD_FILE, MAP_FILE, ADAPTER_FILE, TEXT_EXPORT_FILE, f"{DATA_DIR}/metadata-*.parquet"]
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
COMMIT_SHA = re.compile(r"^[0-9a-f]{40}$")


def looks_like_repo_id(spec: str) -> bool:
    """``user/name`` that is not an existing local path."""
    return bool(REPO_ID.match(spec)) and not Path(spec).exists()


def pull_collection(repo_id: str, revision: str | None = None, token: str | None = None) -> Path:
    """Download (or reuse from the HF cache) a collection's files; returns the snapshot folder."""
    try:
        path = snapshot_download(
            repo_id=repo_id,
            repo_type="dataset",
            revision=revision,
            allow_patterns=COLLECTION_PATTERNS,
            token=token,
        )
    except RepositoryNotFoundError as exc:
        raise CollectionError(
            f"Dataset repo {repo_id!r} was not found, or it is private and no HF_TOKEN with access is set."
        ) from exc
    except RevisionNotFoundError as exc:
        raise CollectionError(f"Dataset repo {repo_id!r} has no revision {revision!r} (check RAG_REVISION).") from exc
    except LocalEntryNotFoundError as exc:
        raise CollectionError(
            f"Dataset repo {repo_id!r} is not in the local HF cache and the Hub cannot be reached: {exc}"
        ) from exc
    except HfHubHTTPError as exc:
        raise CollectionError(f"Downloading dataset repo {repo_id!r} failed: {exc}") from exc
    return Path(path)


def resolve_collection(spec: str, revision: str | None = None, token: str | None = None) -> Path:
    """A local collection folder, or a Hub dataset repo id pulled into the HF cache."""
    if Path(spec).expanduser().is_dir():
        return Path(spec).expanduser()
    if looks_like_repo_id(spec):
        return pull_collection(spec, revision=revision, token=token)
    shown = spec if looks_like_repo_id(spec) or "/" not in spec.strip("/") else Path(spec).name
    raise CollectionError(f"{shown!r} is neither a local collection folder nor a Hub dataset repo id (user/name).")


def snapshot_commit(directory: Path) -> str | None:
    """The commit sha of a huggingface_hub cache snapshot folder (``.../snapshots/<sha>``), else None."""
    directory = Path(directory)
    if directory.parent.name == "snapshots" and COMMIT_SHA.match(directory.name):
        return directory.name
    return None


def _published_files(directory: Path) -> list[str]:
    """What a push uploads: the manifest, the card and every file the manifest lists and checksums."""
    manifest = Manifest.read(directory / MANIFEST)
    verify_files(directory, manifest)  # never publish a collection that would not load
    return [MANIFEST, CARD_FILE, *sorted(manifest.files)]


def _is_collection_path(path: str) -> bool:
    return any(fnmatch.fnmatch(path, pattern) for pattern in COLLECTION_PATTERNS)


def push_collection(
    directory: Path,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    token: str | None = None,
    message: str = "Upload collection built with index_build.py",
) -> str:
    """Upload the collection and delete the files it no longer has in ONE commit, then verify it; returns the sha.

    The commit is made on top of the revision's current head (``parent_commit``), so a concurrent push fails
    instead of mixing two collections.
    """
    directory = Path(directory)
    files = _published_files(directory)
    try:
        return _push(directory, files, repo_id, private, revision, token, message)
    except HfHubHTTPError as exc:
        if getattr(exc.response, "status_code", None) == 412:  # the Hub refused parent_commit: the head moved
            raise CollectionError(
                f"Dataset repo {repo_id!r} changed while this push was running (another push landed first), so "
                "nothing was committed: check what is there now, then push again."
            ) from exc
        raise CollectionError(f"Pushing to dataset repo {repo_id!r} failed: {exc}") from exc


def _push(directory: Path, files: list[str], repo_id: str, private: bool, revision: str | None, token: str | None,
          message: str) -> str:
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    if revision:
        api.create_branch(repo_id, repo_type="dataset", branch=revision, exist_ok=True)
    head = api.dataset_info(repo_id, revision=revision).sha
    remote = api.list_repo_files(repo_id, repo_type="dataset", revision=head)
    stale = sorted(p for p in remote if _is_collection_path(p) and p not in files)
    operations = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=str(directory / p)) for p in files]
    operations += [CommitOperationDelete(path_in_repo=p) for p in stale]
    info = api.create_commit(
        repo_id, operations, commit_message=message, repo_type="dataset", revision=revision, parent_commit=head,
        commit_description=f"{len(files)} files uploaded, {len(stale)} stale files deleted",
    )
    commit = info.oid
    print(f"commit {commit}: {len(files)} files uploaded, {len(stale)} stale deleted ({info.commit_url})")
    verify_pushed(api, repo_id, commit, directory, files)
    return commit


def verify_pushed(api: HfApi, repo_id: str, commit: str, directory: Path, files: list[str]) -> None:
    """Check the pushed commit holds exactly the collection's files, LFS ones with the manifest's sha256."""
    manifest = Manifest.read(directory / MANIFEST)
    tree = {
        entry.path: entry
        for entry in api.list_repo_tree(repo_id, recursive=True, revision=commit, repo_type="dataset")
        if hasattr(entry, "size")
    }
    pushed = {p for p in tree if _is_collection_path(p)}
    if pushed != set(files):
        extra, missing = sorted(pushed - set(files)), sorted(set(files) - pushed)
        raise CollectionError(f"Commit {commit[:12]} of {repo_id} does not hold the collection: extra {extra}, missing {missing}.")
    for path in files:
        entry, local = tree[path], directory / path
        lfs = getattr(entry, "lfs", None)
        expected = manifest.files.get(path)
        if lfs is not None and expected and lfs.sha256 != expected:
            raise CollectionError(f"{path} in commit {commit[:12]} of {repo_id} does not match the manifest checksum.")
        if entry.size != local.stat().st_size:
            raise CollectionError(f"{path} in commit {commit[:12]} of {repo_id} has {entry.size} bytes, not {local.stat().st_size}.")
