"""What every tab needs: the served pipeline (or the start-up error), concurrency limits, the error guard, and
who is calling (a browser session, one gradio_client, or Gradio's MCP server, which all agents share)."""

from __future__ import annotations

import os

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr

from rag.config import Settings
from rag.errors import CaptionerError
from rag.models.devices import describe_concurrency
from rag.pipeline import Pipeline
from rag.space.sessions import SessionRegistry
from rag.startup import FIX_CAPTIONER

from .errors import ErrorBoard, guarded
from .uploads import UploadJanitor

# Concurrency. A CPU-basic Space has 2 vCPUs. Searches are short (one CLIP forward pass, which rag.models.encoder
# serialises behind a lock anyway, a FAISS lookup and thumbnail file I/O), so up to 4 run at once across all
# search events (shared concurrency_id): decoding uploads, FAISS and Gradio's file handling overlap while
# no more threads than that fight over 2 cores. Describe runs one at a time: GIT beam search (or Qwen2-VL
# on the one GPU) already saturates the hardware, so two in parallel would each take twice as long and use
# twice the memory; serial gives the same throughput with better latency for whoever is first in line.
SEARCH_CONCURRENCY = 4
DESCRIBE_CONCURRENCY = describe_concurrency()  # 1, but 4 for Qwen2-VL on ZeroGPU: rag.models.devices says why
QUEUE_MAX_SIZE = 64  # beyond this, new requests are told the queue is full instead of waiting for minutes
SEARCH_LIMITS: dict[str, Any] = {"concurrency_id": "search", "concurrency_limit": SEARCH_CONCURRENCY}
DESCRIBE_LIMITS: dict[str, Any] = {"concurrency_id": "describe", "concurrency_limit": DESCRIBE_CONCURRENCY}


@dataclass
class AppContext:
    """The Space's pipeline (None when start-up failed), the start-up and captioner problems, example inputs."""

    pipeline: Pipeline | None
    startup_error: str | None = None
    captioner_error: str | None = None
    example_images: list[str] = field(default_factory=list)
    sessions: SessionRegistry | None = None  # per-browser-session collections (the Build tab), when loaded
    uploads: UploadJanitor | None = None  # deletes large uploads no build uses (ui.uploads), with sessions
    build_settings: Settings = field(default_factory=Settings)
    errors: ErrorBoard = field(default_factory=ErrorBoard)  # messages the tabs show in place (ui.errors)
    # What changes per session (examples, hints): (outputs, fn(pipeline) -> one value per output), refreshed by
    # ui.page on load, after a build and after the collection switch.
    session_parts: list[tuple[list[Any], Callable[[Pipeline], list[Any]]]] = field(default_factory=list)

    @classmethod
    def of(cls, pipeline_or_error: Pipeline | BaseException | str, captioner_error: str | None = None) -> "AppContext":
        """From what rag.startup.load_pipeline returned."""
        if not isinstance(pipeline_or_error, Pipeline):
            return cls(pipeline=None, startup_error=str(pipeline_or_error))
        if pipeline_or_error.captioner is None and captioner_error is None:
            captioner_error = "No captioner is loaded in this Space. " + FIX_CAPTIONER
        return cls(pipeline_or_error, None, captioner_error, collection_examples(pipeline_or_error))

    def pipeline_for(self, request: gr.Request | None = None) -> Pipeline:
        """The pipeline that serves this request: the session's own collection if it built one and uses it,
        else the Space's (which the owner may have swapped since start-up). A call through MCP, or without a
        session, always gets the Space's: Gradio's MCP server calls the app through one shared session."""
        assert self.pipeline is not None  # guard() answers every request when start-up failed
        if self.sessions is None:
            return self.pipeline
        return self.sessions.pipeline_for(own_session(request), self.pipeline)

    def guard(self, fn: Callable[..., Any], in_place: bool = False) -> Callable[..., Any]:
        """Wrap a handler with the start-up error and the one error mapper (ui.errors); ``in_place``: no pop-up,
        the message is left on ``errors`` for the tab's failure step to show where the result would be."""
        return guarded(fn, self.startup_error, self.errors if in_place else None)

    def per_session(self, outputs: list[Any], fn: Callable[[Pipeline], list[Any]]) -> None:
        """Register outputs whose values depend on the collection the session searches (see session_parts)."""
        self.session_parts.append((outputs, fn))

    def require_captioner(self) -> None:
        """Describe needs a captioner: say what to set when there is none."""
        if self.captioner_error:
            raise CaptionerError(self.captioner_error)

    @property
    def allowed_paths(self) -> list[str]:
        """Folders Gradio may serve files from: the thumbnail cache, session collections, served copies."""
        if self.pipeline is None:
            return []
        cache = Path(self.pipeline.cache_dir)
        return [str(cache / "thumbnails"), str(cache / "sessions"), str(cache / "served")]


MCP_USER = "mcp"  # the x-gradio-user header of Gradio's MCP loopback client (gradio/mcp.py); callers cannot unset it


def through_mcp(request: gr.Request | None) -> bool:
    """True for a call Gradio's MCP server makes on an agent's behalf (every agent's arrives in one session)."""
    headers = getattr(request, "headers", None)
    return bool(headers is not None and headers.get("x-gradio-user") == MCP_USER)


def own_session(request: gr.Request | None) -> str | None:
    """The caller's own session (a browser tab, or one gradio_client.Client), or None for MCP calls and calls
    without a session, which share what the Space serves."""
    if request is None or through_mcp(request):
        return None
    return getattr(request, "session_hash", None) or None


def client_of(request: gr.Request | None) -> str | None:
    """The caller's address, for per-client limits: on a Space the first X-Forwarded-For entry (the Spaces proxy
    forwards the visitor's address there), elsewhere the connection's peer."""
    if request is None:
        return None
    headers = getattr(request, "headers", None)
    forwarded = headers.get("x-forwarded-for", "") if headers is not None else ""
    if forwarded and os.environ.get("SYSTEM") == "spaces":
        return forwarded.split(",")[0].strip() or None
    client = getattr(request, "client", None)
    return getattr(client, "host", None)


def collection_examples(pipeline: Pipeline, count: int = 4) -> list[str]:
    """A few thumbnails spread over the collection, as example inputs for the image tabs."""
    import logging

    rows = len(pipeline.collection)
    ids = sorted({i * rows // count for i in range(count)}) if rows else []
    try:
        return [str(pipeline.collection.thumbnail_path(i, pipeline.cache_dir)) for i in ids]
    except Exception:  # examples are a nicety; never block start-up on them
        logging.getLogger("ui").warning("could not extract example thumbnails", exc_info=True)
        return []
