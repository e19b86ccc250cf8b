"""The one error mapper: library exceptions -> gr.Error with a message fit for the user, never a traceback nor
a server path (scrub_paths: an absolute path in a message is cut to its last part), never a class name; and the
ErrorBoard that lets a tab show the message where its result would be (instead of a pop-up in a corner)."""

from __future__ import annotations

import functools
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import gradio as gr
from PIL import UnidentifiedImageError

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


NOT_AN_IMAGE = (
    "That file is not an image ({name}could not be read as an image: it is not a JPEG, PNG, WebP, GIF or other "
    "picture file)."
)
# "(UnidentifiedImageError: ...", "(OSError: ..." as a decoder's message quotes its exception: the class name goes.
CLASS_NAME = re.compile(r"(?<=\()[A-Z]\w*(?:Error|Exception|Warning): ")


def in_words(exc: BaseException) -> str:
    """An InvalidInput's message for a visitor: a file that is no image said so in words, no exception class name."""
    cause = exc.__cause__
    if isinstance(cause, UnidentifiedImageError):
        quoted = re.search(r"image file '([^']+)'", str(cause))
        name = scrub_paths(quoted.group(1)).rsplit("/", 1)[-1] + " " if quoted else ""
        return NOT_AN_IMAGE.format(name=name)
    return CLASS_NAME.sub("", scrub_paths(str(exc)))


def bad_image(exc: BaseException | None) -> bool:
    """Whether an error says the given image could not be read (the tab then clears its broken preview)."""
    return isinstance(exc, InvalidInput) and isinstance(exc.__cause__, (OSError, SyntaxError, ValueError))


def to_gr_error(exc: BaseException, where: str) -> gr.Error:
    """InvalidInput -> "Invalid input"; other RagErrors -> their message; anything else -> a short logged note."""
    if isinstance(exc, gr.Error):
        return exc
    if isinstance(exc, InvalidInput):
        return gr.Error(in_words(exc), title="Invalid input", print_exception=False)
    if isinstance(exc, GpuUnavailable):
        log.warning("%s: GPU unavailable: %s", where, exc)
        return gr.Error(scrub_paths(str(exc)), title="GPU unavailable", print_exception=False)
    if isinstance(exc, RagError):
        log.warning("%s failed: %s", where, exc)
        return gr.Error(scrub_paths(str(exc)), print_exception=False)
    log.error("%s failed", where, exc_info=exc)
    return gr.Error(
        "Something went wrong on our side; it has been logged. Please try again.", print_exception=False,
    )


class ErrorBoard:
    """The latest error message of each (browser session, handler), kept until the tab's failure step shows it in
    place: Gradio's .failure() listeners are not given the exception, so the guard leaves it here."""

    def __init__(self, size: int = 512) -> None:
        self._messages: OrderedDict[tuple[str, str], tuple[str, bool]] = OrderedDict()
        self._lock = threading.Lock()
        self.size = size

    def put(self, request: Any, place: str, message: str, image_unreadable: bool = False) -> None:
        """Remember a failure of ``place`` (a handler's name) for the session of ``request``."""
        session = getattr(request, "session_hash", None)
        if not session:
            return
        with self._lock:
            self._messages[(session, place)] = (message, image_unreadable)
            self._messages.move_to_end((session, place))
            while len(self._messages) > self.size:
                self._messages.popitem(last=False)

    def pop(self, request: Any, place: str) -> tuple[str, bool] | None:
        """The message left for this session and place (and whether the image was unreadable), then forgotten;
        None when there is none."""
        with self._lock:
            return self._messages.pop((getattr(request, "session_hash", None) or "", place), None)

    def take(self, request: Any, place: str) -> tuple[str, bool]:
        """``pop``, with a general message when the failure left none."""
        return self.pop(request, place) or (FALLBACK, False)


FALLBACK = "That did not work; please try again."


def _request_of(args: tuple, kwargs: dict) -> Any:
    """The gr.Request among a handler's arguments (anything with a session_hash), or None."""
    return next((a for a in (*args, *kwargs.values()) if getattr(a, "session_hash", None)), None)


def guarded(fn: Callable[..., Any], startup_error: str | None, board: ErrorBoard | None = None) -> Callable[..., Any]:
    """Wrap an event handler: the start-up error first (if the Space could not start), then the mapper. With a
    ``board``, the message is left there for the tab to show in place, and no pop-up is raised in the page."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            if startup_error:
                raise gr.Error(startup_error, title=NOT_CONFIGURED, print_exception=False)
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a readable gr.Error
            error = to_gr_error(exc, fn.__name__)
            if board is not None:  # no pop-up: the tab shows the message in place; API clients get it all the same
                error.visible = False
                board.put(_request_of(args, kwargs), fn.__name__, error.message, bad_image(exc))
            raise error from None

    wrapper.error_board = board  # type: ignore[attr-defined]  # where the tab's failure step finds the message
    return wrapper
