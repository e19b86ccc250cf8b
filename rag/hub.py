"""Pull a collection from, and push it to, a Hugging Face dataset repo (huggingface_hub)."""

from __future__ import annotations

import re
from pathlib import Path

from huggingface_hub import create_branch, create_repo, snapshot_download, upload_folder
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

from .collection import CARD_FILE, DATA_DIR, INDEX_FILE, MANIFEST
from .errors import CollectionError

COLLECTION_PATTERNS = [MANIFEST, INDEX_FILE, CARD_FILE, f"{DATA_DIR}/metadata-*.parquet"]
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


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
    raise CollectionError(f"{spec!r} is neither a local collection folder nor a Hub dataset repo id (user/name).")


def push_collection(
    directory: Path,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    token: str | None = None,
    message: str = "Upload collection built with index_build.py",
) -> str:
    """Create the dataset repo (and branch) if needed and upload the collection; returns the commit URL."""
    create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True, token=token)
    if revision:
        create_branch(repo_id, repo_type="dataset", branch=revision, exist_ok=True, token=token)
    info = upload_folder(
        repo_id=repo_id,
        repo_type="dataset",
        folder_path=str(directory),
        allow_patterns=COLLECTION_PATTERNS,
        revision=revision,
        commit_message=message,
        token=token,
    )
    return str(getattr(info, "commit_url", info))
