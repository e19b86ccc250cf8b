"""Keep a session's collection: publish it to the visitor's dataset repo, duplicate the Space onto it, and let
the Space's owner make a collection the one the Space serves (swapped live, persisted in the Space variables).

Every Hub call goes through huggingface_hub (rag.collection.hub for the dataset push, HfApi for Spaces). The visitor's
OAuth token is passed per call and never logged or returned; Hub errors are reduced to a status and a reason.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils import HFValidationError, validate_repo_id

from rag.collection.reader import Collection
from rag.config import Settings
from rag.errors import CollectionError, InvalidInput, RagError
from rag.collection.hub import REPO_ID, looks_like_repo_id, push_collection, resolve_collection
from rag.pipeline import Pipeline
from rag.startup import open_pipeline, public_name
from rag.space.sessions import SessionRegistry

log = logging.getLogger(__name__)

FREE_HARDWARE = "cpu-basic"
SIGN_IN = "Sign in with Hugging Face first (the button above): {what} happens in your own account, with your permission."


class NotAllowed(RagError):
    """The signed-in user may not do this (not signed in, or not the Space's owner)."""


def check_repo_id(repo_id: Any, what: str = "dataset repo") -> str:
    """A ``user/name`` repo id the Hub accepts (huggingface_hub's own rules: no ``..`` or ``--``, no leading or
    trailing ``.``/``-``, at most 96 characters), or InvalidInput naming the expected form."""
    value = str(repo_id or "").strip()
    try:
        validate_repo_id(value)
    except HFValidationError:
        value = ""  # fall through to the one message below
    if not REPO_ID.match(value):
        shown = str(repo_id or "").strip()[:100]
        raise InvalidInput(f"The {what} must look like user/name (letters, digits, '-', '_' or '.'), not {shown!r}.")
    return value


def require_token(token: str | None, what: str) -> str:
    """The visitor's OAuth token, or NotAllowed explaining what signing in is for."""
    if not token:
        raise NotAllowed(SIGN_IN.format(what=what))
    return token


def is_owner(username: str | None, settings: Settings, author: str | None = None) -> bool:
    """True for the Space's author (``SPACE_AUTHOR_NAME``) and the users listed in ``RAG_ADMINS``."""
    if not username:
        return False
    author = author if author is not None else os.environ.get("SPACE_AUTHOR_NAME")
    return username == author or username in settings.admins


def _hub_failure(action: str, exc: Exception) -> RagError:
    """A Hub error as a one-line message: the status code and the server's reason, nothing else."""
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status in (401, 403):
        return NotAllowed(f"{action} was refused by the Hub ({status}): check that you granted write access when signing in.")
    reason = getattr(exc, "server_message", None) or type(exc).__name__
    return RagError(f"{action} failed on the Hub ({status or 'no response'}): {str(reason).splitlines()[0][:200]}")


def publish_collection(directory: Path, repo_id: str, private: bool = True, token: str | None = None) -> dict[str, Any]:
    """Check the collection, push it like ``index_build.py --push-to-hub`` (one verified commit) and return
    the repo, the commit sha and the URLs."""
    repo_id = check_repo_id(repo_id)
    token = require_token(token, "publishing")
    Collection.open(directory, verify_checksums=True)  # the same checks as --verify: never publish a broken one
    try:
        commit = push_collection(directory, repo_id, private=bool(private), token=token,
                                 message="Upload collection built in the Space")
    except CollectionError as exc:
        cause = exc.__cause__
        raise (_hub_failure(f"Publishing to {repo_id}", cause) if isinstance(cause, HfHubHTTPError) else exc) from None
    log.info("published a session collection to %s", repo_id)
    return {
        "ok": True, "repo_id": repo_id, "private": bool(private), "commit": commit,
        "url": f"https://huggingface.co/datasets/{repo_id}",
        "commit_url": f"https://huggingface.co/datasets/{repo_id}/commit/{commit}",
    }


def duplicate_space(
    from_space: str, to_space: str, collection: str, revision: str | None, private: bool = True,
    token: str | None = None,
) -> dict[str, Any]:
    """Create the visitor's own copy of this Space on free hardware, already pointed at their collection."""
    from_space = check_repo_id(from_space, "Space to duplicate")
    to_space = check_repo_id(to_space, "new Space")
    token = require_token(token, "creating your own Space")
    variables = [{"key": "RAG_COLLECTION", "value": collection}]
    if revision:
        variables.append({"key": "RAG_REVISION", "value": revision})
    try:
        HfApi(token=token).duplicate_repo(
            from_space, to_space, repo_type="space", private=bool(private), space_hardware=FREE_HARDWARE,
            space_variables=variables,
        )
    except HfHubHTTPError as exc:
        raise _hub_failure(f"Creating the Space {to_space}", exc) from None
    log.info("duplicated %s to %s", from_space, to_space)
    return {"ok": True, "space": to_space, "url": f"https://huggingface.co/spaces/{to_space}",
            "variables": {v["key"]: v["value"] for v in variables}, "hardware": FREE_HARDWARE}


def load_replacement(current: Pipeline, spec: str | Path, revision: str | None, settings: Settings,
                     token: str | None = None, name: str | None = None) -> Pipeline:
    """A ready pipeline for another collection: the loaded models are reused when the manifest's model matches.
    Its public ``name`` is the repo id, or only a folder's name (never a server path: /info shows it to all)."""
    directory = Path(spec) if Path(spec).is_dir() else resolve_collection(str(spec), revision, token)
    collection = Collection.open(directory, verify_checksums=True)
    name = name or public_name(str(spec))
    if collection.manifest.model_id == current.encoder.model_id and collection.manifest.dim == current.encoder.dim:
        return Pipeline(collection=collection, encoder=current.encoder, cache_dir=current.cache_dir,
                        captioner=current.captioner, name=name, revision=revision, text_model=current.text_model)
    return open_pipeline(replace(settings, collection=str(spec), revision=revision), collection_dir=directory,
                         with_captioner=current.captioner is not None, name=name)


def keep_copy(directory: Path, cache_dir: Path) -> Path:
    """Copy a session's collection out of the session folder (which expires) before the Space serves it."""
    target = Path(cache_dir) / "served" / f"{Path(directory).name}-{time.strftime('%Y%m%d-%H%M%S')}"
    shutil.copytree(directory, target.with_name(target.name + ".partial"))
    os.replace(target.with_name(target.name + ".partial"), target)
    return target


def serve_collection(
    registry: SessionRegistry, spec: str | Path, revision: str | None, settings: Settings,
    token: str | None = None, hub_repo: str | None = None, space_id: str | None = None, name: str | None = None,
) -> dict[str, Any]:
    """Owner only (checked by the caller with is_owner): load ``spec``, write RAG_COLLECTION / RAG_REVISION on
    the Space (only for a Hub repo id, and when ``space_id`` is known) so a restart keeps it, then swap it in for
    everyone. All or nothing: every step that can fail runs before the swap, so an error means nothing changed,
    and a success says truthfully whether a restart keeps it."""
    current = registry.space
    if current is None:
        raise RagError("The Space has no loaded models to serve a collection with; fix its start-up first.")
    try:
        replacement = load_replacement(current, spec, revision, settings, token, name)
        serving = replacement.info()
    except (RagError, OSError) as exc:
        raise RagError(f"The new collection could not be loaded, so the Space keeps serving the current one: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - whatever failed, nothing was switched: say so
        log.error("loading a collection to serve failed", exc_info=exc)
        raise RagError(f"The new collection could not be loaded ({type(exc).__name__}), so the Space keeps serving "
                       "the current one.") from None
    persisted, warning = persist_choice(hub_repo, revision, space_id, token)
    registry.swap_space(replacement)  # the last step: nothing after it can fail
    log.info("the Space now serves %s", replacement.name)
    result: dict[str, Any] = {"ok": True, "serving": serving, "persisted": persisted}
    if warning:
        result["warning"] = warning
    return result


def persist_choice(hub_repo: str | None, revision: str | None, space_id: str | None,
                   token: str | None) -> tuple[bool, str | None]:
    """Write RAG_COLLECTION (and RAG_REVISION) on the Space: (True, None), or (False, why a restart goes back).
    Only a Hub repo id is ever written: a local folder means nothing to the restarted Space (and is a server path)."""
    if not hub_repo:
        return False, "Serving it now; publish it to a dataset repo to keep it across restarts."
    if not looks_like_repo_id(hub_repo):
        return False, "Serving it now; only a Hub dataset repo (user/name) is saved in RAG_COLLECTION, so a restart goes back."
    if not space_id:
        return False, "Not running on a Space (no SPACE_ID), so no variable was written."
    try:
        api = HfApi(token=require_token(token, "changing the Space's variables"))
        api.add_space_variable(space_id, "RAG_COLLECTION", hub_repo)
        if revision:
            api.add_space_variable(space_id, "RAG_REVISION", revision)
        return True, None
    except (HfHubHTTPError, NotAllowed) as exc:
        failure = exc if isinstance(exc, NotAllowed) else _hub_failure("Saving the Space variables", exc)
    except Exception as exc:  # noqa: BLE001 - the swap still happens: report, never raise after deciding to serve
        log.warning("saving the Space variables failed: %s", type(exc).__name__)
        failure = RagError(f"saving the Space variables failed ({type(exc).__name__})")
    return False, f"Serving it now, but a restart will go back: {failure}"
