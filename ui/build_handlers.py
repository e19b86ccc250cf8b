"""The Build tab's API functions: /build, /cancel_build, /use_space_collection, /publish, /create_space and
/serve_collection. Each resolves the caller's session from the request and calls rag; none does rag's work.

None of them is an MCP tool (ui.build_tab hides them from Gradio's MCP server), and each refuses a call that
arrives through MCP anyway: every agent shares the MCP server's one session, so none may change it.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from pathlib import Path
from typing import Any

import gradio as gr

from rag.config import Settings
from rag.errors import InvalidInput
from rag.space.publish import (NotAllowed, duplicate_space, is_owner, keep_copy, publish_collection, require_token,
                         serve_collection)
from rag.space.session_build import BuildProgress, BuildRequest, run_session_build
from rag.space.sessions import BuildLineFull, BuildRefused, SessionRegistry

from .context import client_of, own_session, through_mcp
from .errors import ErrorBoard, scrub_paths, scrub_result
from .uploads import UploadJanitor

log = logging.getLogger("ui.build")
DEFAULT_DATASET_NAME = "my-rag-collection"
DEFAULT_SPACE_NAME = "my-rag-space"
MAX_FAILURES = 256
NOTHING_RUNNING = "Nothing is running: there is no build to cancel."


def session_of(request: gr.Request | None) -> str:
    """The caller's own Gradio session (a browser tab, or one gradio_client.Client); MCP calls have none."""
    if through_mcp(request):
        raise InvalidInput("This is not available through MCP (all agents share one session there): call it through "
                           "the page or gradio_client.")
    session = own_session(request)
    if not session:
        raise InvalidInput("This needs a session: call it through the page or gradio_client.")
    return session


def _user_repo(repo_id: str, profile: gr.OAuthProfile | None, default_name: str, what: str) -> str:
    """``repo_id`` as typed, completed with the signed-in user's name when it has no ``user/`` part."""
    repo_id = (repo_id or "").strip() or default_name
    if "/" in repo_id:
        return repo_id
    if profile is None or not getattr(profile, "username", None):
        raise InvalidInput(f"Name the {what} as user/name: only a sign-in on the page tells this Space your user name.")
    return f"{profile.username}/{repo_id}"


def _token(token: gr.OAuthToken | None) -> str | None:
    return token.token if token is not None else None


class BuildHandlers:
    """The handlers, bound to the Space's session registry and settings."""

    def __init__(self, registry: SessionRegistry, settings: Settings, uploads: UploadJanitor | None = None) -> None:
        self.registry, self.settings, self.uploads = registry, settings, uploads
        self._serving = threading.Lock()  # one owner swap at a time (the event itself has no concurrency limit)
        # why each session's last /build raised, for the page's status line (the newest MAX_FAILURES: API callers
        # never ask for theirs)
        self.failures = ErrorBoard(size=MAX_FAILURES)

    def build(self, archive: str | None = None, dataset: str = "", split: str = "train", image_column: str = "",
              caption_column: str = "", label_column: str = "", label_from_folder: bool = False, limit: float = 0,
              request: gr.Request = None, token: gr.OAuthToken | None = None, progress=gr.Progress()) -> dict:
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
        session = session_of(request)
        uploads = self.uploads or UploadJanitor(grace=self.settings.upload_grace)
        with uploads.claim(build_request.archive) as claim:  # kept while in line, deleted once its build ends
            if build_request.archive and not Path(build_request.archive).is_file():
                gone = InvalidInput(f"The uploaded archive is gone: uploads no build uses within "
                                    f"{self.settings.upload_grace // 60} minutes are deleted. Upload it again.")
                self._remember_failure(request, gone)
                raise gone
            try:  # the visitor's own token reads their gated/private datasets; the Space's HF_TOKEN is never lent
                result = run_session_build(self.registry, session, build_request, self.settings, report,
                                           _token(token), client=client_of(request))
            except (BuildRefused, BuildLineFull) as exc:  # refused before any work: the upload waits for a retry
                self._remember_failure(request, exc)
                raise
            except Exception as exc:
                claim.used = True  # the build ran and failed: its upload goes now, as after a success or Cancel
                self._remember_failure(request, exc)
                raise
            claim.used = True
        return scrub_result(result)

    def cancel_build(self, request: gr.Request) -> dict:
        """Stop this session's build at its next check (nothing of it is kept); says so when none runs."""
        cancelling = self.registry.cancel(session_of(request))
        message = "Cancelling… nothing of this build will be kept." if cancelling else NOTHING_RUNNING
        return {"ok": True, "cancelling": cancelling, "message": message}

    def build_status(self, request: gr.Request) -> Any:
        """The running build's progress line for the page (place in line, images/s, time left); no change if none."""
        line = self.registry.progress(own_session(request) or "")
        return gr.update() if line is None else f"⏳ {line}"

    def _remember_failure(self, request: gr.Request, exc: BaseException) -> None:
        """Keep why the build raised for the page's status line."""
        self.failures.put(request, "build", scrub_paths(str(exc)))

    def last_failure(self, request: gr.Request) -> str | None:
        """Why this session's last /build raised (once; None when it did not)."""
        found = self.failures.pop(request, "build") if own_session(request) else None
        return found[0] if found else None

    def may_publish(self, request: gr.Request, profile: gr.OAuthProfile | None) -> tuple[bool, str]:
        """Whether Publish can work for this visitor now, and the hint to show when it cannot."""
        if profile is None:
            return False, "Sign in with Hugging Face to publish."
        state = self.registry.state(own_session(request) or "")
        if state is None or state.collection_dir is None:
            return False, "Build a collection above first; then you can publish it."
        return True, ""

    def is_owner(self, profile: gr.OAuthProfile | None) -> bool:
        """The signed-in visitor may change what this Space serves (the check /serve_collection makes)."""
        return is_owner(profile.username if profile is not None else None, self.settings)

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
        repo_id = _user_repo(repo_id, profile, DEFAULT_DATASET_NAME, "dataset repo")
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
        space_id = _user_repo(space_id, profile, DEFAULT_SPACE_NAME, "new Space")
        return duplicate_space(this_space, space_id, state.published["repo_id"], state.published["commit"],
                               private=bool(private), token=token_value)

    def serve_collection(self, collection: str, revision: str, request: gr.Request,
                         profile: gr.OAuthProfile | None, token: gr.OAuthToken | None) -> dict:
        """Owner only: serve a collection to everyone ("" = this session's), and keep it across restarts."""
        session_of(request)  # never through MCP, whatever cookie the agent forwards
        username = profile.username if profile is not None else None
        if not is_owner(username, self.settings):
            if username is None:
                raise NotAllowed("Sign in as the Space's owner (or a user listed in RAG_ADMINS) to change what it serves.")
            raise NotAllowed(f"{username} is not this Space's owner nor listed in RAG_ADMINS.")
        with self._serving:
            return self._serve(collection, revision, request, token)

    def _serve(self, collection: str, revision: str, request: gr.Request, token: gr.OAuthToken | None) -> dict:
        collection, revision = (collection or "").strip(), (revision or "").strip() or None
        if collection:
            return serve_collection(self.registry, collection, revision, self.settings, token=_token(token),
                                    hub_repo=collection, space_id=os.environ.get("SPACE_ID"))
        state = self._own_collection(request)
        hub_repo, name = None, None
        if state.published:
            hub_repo, revision = state.published["repo_id"], state.published["commit"]
            name = hub_repo
        copy = keep_copy(state.collection_dir, self.settings.cache_dir)
        try:
            return serve_collection(self.registry, copy, revision, self.settings, token=_token(token),
                                    hub_repo=hub_repo, space_id=os.environ.get("SPACE_ID"), name=name)
        except BaseException:
            shutil.rmtree(copy, ignore_errors=True)  # all or nothing: a refused serve leaves no copy behind
            raise

    def end_session(self, request: gr.Request) -> None:
        """The tab was closed: delete the session's collection now rather than at its TTL."""
        if getattr(request, "session_hash", None):
            self.registry.end(request.session_hash)

    def _own_collection(self, request: gr.Request | None) -> Any:
        state = self.registry.state(session_of(request))
        if state is None or state.collection_dir is None:
            raise InvalidInput("Build a collection in the Build tab first (it lives in your session only).")
        return state
