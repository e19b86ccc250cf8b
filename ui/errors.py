"""The one error mapper: library exceptions -> gr.Error with a message fit for the user, never a traceback nor
a server path (scrub_paths: an absolute path in a message is cut to its last part)."""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from typing import Any

import gradio as gr

from rag.errors import GpuUnavailable, InvalidInput, RagError

log = logging.getLogger("ui")

NOT_CONFIGURED = "The Space is not configured"
# An absolute POSIX path of two or more parts (not the path of a URL: "://host/..." is left alone).
SERVER_PATH = re.compile(r"(?<![\w:/.~-])(?:/[^\s'\"`/()\[\]{},;]+){2,}/?")


def scrub_paths(text: str) -> str:
    """``text`` with every absolute server path replaced by its last part ("/srv/app/a/x.parquet" -> "x.parquet"),
    so no message, skip reason or name a visitor sees tells them how the server's disk is laid out."""
    return SERVER_PATH.sub(lambda m: m.group(0).rstrip("/").rsplit("/", 1)[-1] or "…", str(text))


def scrub_result(value: Any) -> Any:
    """scrub_paths over every string in a JSON-like result (dicts, lists), keys kept."""
    if isinstance(value, str):
        return scrub_paths(value)
    if isinstance(value, dict):
        return {key: scrub_result(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub_result(item) for item in value]
    return value


def to_gr_error(exc: BaseException, where: str) -> gr.Error:
    """InvalidInput -> "Invalid input"; other RagErrors -> their message; anything else -> a short logged note."""
    if isinstance(exc, gr.Error):
        return exc
    if isinstance(exc, InvalidInput):
        return gr.Error(scrub_paths(str(exc)), title="Invalid input", print_exception=False)
    if isinstance(exc, GpuUnavailable):
        log.warning("%s: GPU unavailable: %s", where, exc)
        return gr.Error(scrub_paths(str(exc)), title="GPU unavailable", print_exception=False)
    if isinstance(exc, RagError):
        log.warning("%s failed: %s", where, exc)
        return gr.Error(scrub_paths(str(exc)), print_exception=False)
    log.error("%s failed", where, exc_info=exc)
    return gr.Error(
        f"Something went wrong on our side ({type(exc).__name__}); it has been logged. Please try again.",
        print_exception=False,
    )


def guarded(fn: Callable[..., Any], startup_error: str | None) -> Callable[..., Any]:
    """Wrap an event handler: the start-up error first (if the Space could not start), then the mapper."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if startup_error:
            raise gr.Error(startup_error, title=NOT_CONFIGURED, print_exception=False)
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a readable gr.Error
            raise to_gr_error(exc, fn.__name__) from None

    return wrapper
