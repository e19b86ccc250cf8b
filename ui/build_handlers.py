"""The Build tab's API functions: /build, /cancel_build, /use_space_collection, /publish, /create_space and
/serve_collection. Each resolves the caller's session from the request and calls rag; none does rag's work."""

from __future__ import annotations

import logging
import os
from typing import Any

import gradio as gr

from rag.config import Settings
from rag.errors import InvalidInput
from rag.space.publish import (NotAllowed, duplicate_space, is_owner, keep_copy, publish_collection, require_token,
                         serve_collection)
from rag.space.session_build import BuildProgress, BuildRequest, run_session_build
from rag.space.sessions import SessionRegistry

log = logging.getLogger("ui.build")
DEFAULT_DATASET_NAME = "my-rag-collection"
DEFAULT_SPACE_NAME = "my-rag-space"


def session_of(request: gr.Request | None) -> str:
    """The caller's Gradio session (a browser tab, or one gradio_client.Client)."""
    session = getattr(request, "session_hash", None)
    if not session:
        raise InvalidInput("This needs a session: call it through the page or gradio_client.")
    return session


def _token(token: gr.OAuthToken | None) -> str | None:
    return token.token if token is not None else None


class BuildHandlers:
    """The handlers, bound to the Space's session registry and settings."""

    def __init__(self, registry: SessionRegistry, settings: Settings) -> None:
        self.registry, self.settings = registry, settings

    def build(self, archive: str | None, dataset: str, split: str, image_column: str, caption_column: str,
              label_column: str, label_from_folder: bool, limit: float, request: gr.Request,
              token: gr.OAuthToken | None, progress=gr.Progress()) -> dict:
        """Build a collection from an archive (.zip/.tar/.tar.gz) or a dataset for this session only.

        Returns {"ok", "rows", "skipped": [{"source", "reason"}], "seconds", "images_per_second", "collection",
        "info"}; afterwards this session's searches, describe and /info use the new collection.
        """
        def report(update: BuildProgress) -> None:
            fraction = update.done / update.total if update.total else None
            progress(fraction, desc=update.message())

        build_request = BuildRequest(
            archive=archive or None, dataset=dataset or "", split=split or "train", image_column=image_column or "",
            caption_column=caption_column or "", label_column=label_column or "",
            label_from_folder=bool(label_from_folder), limit=int(limit or 0),
        )
        # The visitor's own token reads their gated/private datasets; the Space's HF_TOKEN is never lent out.
        return run_session_build(self.registry, session_of(request), build_request, self.settings, report,
                                 _token(token))

    def cancel_build(self, request: gr.Request) -> dict:
        """Stop this session's build between two batches (nothing of it is kept)."""
        return {"ok": True, "cancelling": self.registry.cancel(session_of(request))}

    def use_space_collection(self, use_space: bool, request: gr.Request) -> dict:
        """True: this session searches the Space's collection again; False: back to the one it built."""
        own = self.registry.use_space_collection(session_of(request), bool(use_space))
        pipeline = self.registry.pipeline_for(session_of(request))
        return {"ok": True, "own_collection": own, "serving": pipeline.info() if pipeline else None}

    def publish(self, repo_id: str, private: bool, request: gr.Request, profile: gr.OAuthProfile | None,
                token: gr.OAuthToken | None) -> dict:
        """Publish this session's collection to a dataset repo in your account (private by default)."""
        state = self._own_collection(request)
        token_value = require_token(_token(token), "publishing")
        repo_id = (repo_id or "").strip() or f"{profile.username}/{DEFAULT_DATASET_NAME}"
        result = publish_collection(state.collection_dir, repo_id, private=bool(private), token=token_value)
        state.published = {"repo_id": result["repo_id"], "commit": result["commit"]}
        return result

    def create_space(self, space_id: str, private: bool, request: gr.Request, profile: gr.OAuthProfile | None,
                     token: gr.OAuthToken | None) -> dict:
        """Duplicate this Space into your account on free CPU hardware, serving your published collection."""
        state = self._own_collection(request)
        token_value = require_token(_token(token), "creating your own Space")
        if not state.published:
            raise InvalidInput("Publish your collection first: your Space will load it from that dataset repo.")
        this_space = os.environ.get("SPACE_ID")
        if not this_space:
            raise InvalidInput("This page is not running on a Hugging Face Space, so there is nothing to duplicate.")
        space_id = (space_id or "").strip() or DEFAULT_SPACE_NAME
        if "/" not in space_id:
            space_id = f"{profile.username}/{space_id}"
        return duplicate_space(this_space, space_id, state.published["repo_id"], state.published["commit"],
                               private=bool(private), token=token_value)

    def serve_collection(self, collection: str, revision: str, request: gr.Request,
                         profile: gr.OAuthProfile | None, token: gr.OAuthToken | None) -> dict:
        """Owner only: serve a collection to everyone ("" = this session's), and keep it across restarts."""
        username = profile.username if profile is not None else None
        if not is_owner(username, self.settings):
            if username is None:
                raise NotAllowed("Sign in as the Space's owner (or a user listed in RAG_ADMINS) to change what it serves.")
            raise NotAllowed(f"{username} is not this Space's owner nor listed in RAG_ADMINS.")
        collection, revision = (collection or "").strip(), (revision or "").strip() or None
        hub_repo = collection or None
        if not collection:
            state = self._own_collection(request)
            if state.published:
                hub_repo, revision = state.published["repo_id"], state.published["commit"]
            spec = keep_copy(state.collection_dir, self.settings.cache_dir)
        else:
            spec = collection
        return serve_collection(self.registry, spec, revision, self.settings, token=_token(token),
                                hub_repo=hub_repo, space_id=os.environ.get("SPACE_ID"))

    def end_session(self, request: gr.Request) -> None:
        """The tab was closed: delete the session's collection now rather than at its TTL."""
        if getattr(request, "session_hash", None):
            self.registry.end(request.session_hash)

    def _own_collection(self, request: gr.Request | None) -> Any:
        state = self.registry.state(session_of(request))
        if state is None or state.collection_dir is None:
            raise InvalidInput("Build a collection in the Build tab first (it lives in your session only).")
        return state
