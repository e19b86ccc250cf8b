"""Per-browser-session collections: each session's own Pipeline beside the Space's, with a TTL and a build line.

A session's pipeline shares the Space pipeline's loaded encoder and captioner, so a visitor's collection costs
only its index, metadata and thumbnails. Sessions end (or expire after ``RAG_SESSION_TTL``) by deleting their
folder. One build runs at a time per Space; the others wait in a line that tells them their place.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from rag.collection.reader import Collection
from rag.errors import InvalidInput, RagError
from rag.pipeline import Pipeline

log = logging.getLogger(__name__)


class BuildCancelledWhileWaiting(RagError):
    """The visitor cancelled while waiting for their turn to build."""


class BuildLine:
    """One build at a time per Space; the others wait in arrival order and can ask for their place."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._line: list[object] = []

    def __len__(self) -> int:
        with self._cond:
            return len(self._line)

    def position(self, ticket: object) -> int | None:
        """0 when ``ticket`` is building, n when n builds are ahead of it, None when it is not in line."""
        with self._cond:
            return self._line.index(ticket) if ticket in self._line else None

    @contextmanager
    def turn(
        self,
        on_wait: Callable[[int], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        poll: float = 0.5,
    ) -> Iterator[None]:
        """Wait for this caller's turn (reporting builds ahead through ``on_wait``), hold it, then pass it on."""
        ticket = object()
        with self._cond:
            self._line.append(ticket)
        try:
            while True:
                with self._cond:
                    ahead = self._line.index(ticket)
                    if ahead:
                        self._cond.wait(poll)
                        ahead = self._line.index(ticket)
                if not ahead:
                    break
                if should_stop is not None and should_stop():
                    raise BuildCancelledWhileWaiting("The build was cancelled before it started.")
                if on_wait is not None:
                    on_wait(ahead)
            yield
        finally:
            with self._cond:
                self._line.remove(ticket)
                self._cond.notify_all()


@dataclass
class SessionState:
    """What one browser session holds: its folder, its collection's pipeline and its build bookkeeping."""

    key: str
    folder: Path
    pipeline: Pipeline | None = None
    collection_dir: Path | None = None
    use_own: bool = True
    builds: int = 0
    building: bool = False
    expires: float = 0.0
    cancel: threading.Event = field(default_factory=threading.Event)
    published: dict[str, str] | None = None


def session_key(session_id: str) -> str:
    """A folder-safe name for a session id (Gradio's session hash, or anything a client sends)."""
    return hashlib.sha256(str(session_id).encode()).hexdigest()[:24]


class SessionRegistry:
    """Session id -> that session's Pipeline; the Space's own pipeline serves everyone else."""

    def __init__(
        self,
        space: Pipeline | None,
        root: str | Path,
        ttl: float = 7200,
        max_builds: int = 5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.space = space
        self.root = Path(root)
        self.ttl = ttl
        self.max_builds = max_builds
        self.clock = clock
        self.line = BuildLine()
        self._sessions: dict[str, SessionState] = {}
        self._lock = threading.RLock()
        self._sweeper: threading.Thread | None = None
        self._stop = threading.Event()

    # -- serving ----------------------------------------------------------------------------------------

    def pipeline_for(self, session_id: str | None, default: Pipeline | None = None) -> Pipeline | None:
        """The session's own pipeline when it has one and uses it, else the Space's (``default`` if none)."""
        self.sweep()
        state = self._sessions.get(session_key(session_id)) if session_id else None
        if state is not None and state.use_own and state.pipeline is not None:
            return state.pipeline
        return self.space if self.space is not None else default

    def state(self, session_id: str) -> SessionState | None:
        """The session's state (None when it has never built, or has expired)."""
        self.sweep()
        return self._sessions.get(session_key(session_id))

    def use_space_collection(self, session_id: str, use_space: bool = True) -> bool:
        """Switch the session between the Space's collection and its own; True when it now serves its own."""
        state = self.state(session_id)
        if state is None or state.pipeline is None:
            if not use_space:
                raise InvalidInput("This session has no collection of its own yet: build one in the Build tab.")
            return False
        state.use_own = not use_space
        return state.use_own

    def swap_space(self, pipeline: Pipeline) -> Pipeline | None:
        """Make ``pipeline`` the one every other session gets; requests already running keep the old one."""
        with self._lock:
            old, self.space = self.space, pipeline
        return old

    # -- builds -----------------------------------------------------------------------------------------

    def begin_build(self, session_id: str) -> tuple[SessionState, Path]:
        """Register a build for the session (per-session limits checked) and return a fresh output folder."""
        if self.space is None:
            raise RagError("The Space's models are not loaded, so it cannot build collections right now.")
        self.sweep()
        key = session_key(session_id)
        with self._lock:
            state = self._sessions.get(key)
            if state is None:
                state = SessionState(key=key, folder=self.root / key, expires=self.clock() + self.ttl)
                self._sessions[key] = state
            if state.building:
                raise InvalidInput("A build is already running in this session; wait for it or cancel it.")
            if state.builds >= self.max_builds:
                raise InvalidInput(
                    f"This session has built {state.builds} collections, the most allowed; "
                    "publish one or come back later."
                )
            state.building, state.builds = True, state.builds + 1
            state.cancel.clear()
        return state, state.folder / f"build-{state.builds}"

    def finish_build(self, session_id: str, collection_dir: Path, name: str) -> Pipeline:
        """Serve the session's new collection (sharing the Space's models) and drop its previous one."""
        state = self._sessions.get(session_key(session_id))
        if state is None or state.cancel.is_set():
            shutil.rmtree(collection_dir, ignore_errors=True)
            raise RagError("The session ended before its build finished; nothing was kept.")
        space = self.space
        collection = Collection.open(collection_dir)
        pipeline = Pipeline(
            collection=collection, encoder=space.encoder, cache_dir=state.folder / "cache",
            captioner=space.captioner, name=name, text_model=space.text_model,
        )
        with self._lock:
            previous = state.collection_dir
            state.pipeline, state.collection_dir, state.use_own = pipeline, collection_dir, True
            state.published, state.building = None, False
            state.expires = self.clock() + self.ttl
        if previous is not None and previous != collection_dir:
            shutil.rmtree(previous, ignore_errors=True)
        return pipeline

    def abort_build(self, session_id: str, work: Path | None = None, refund: bool = False) -> None:
        """The build failed or was cancelled: release the session and delete what it wrote (``refund``: a
        request refused before any work does not count against the session's limit)."""
        state = self._sessions.get(session_key(session_id))
        if state is not None:
            state.building = False
            state.builds -= 1 if refund else 0
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)

    def cancel(self, session_id: str) -> bool:
        """Ask the session's running (or waiting) build to stop between batches; False when none runs."""
        state = self._sessions.get(session_key(session_id))
        if state is None or not state.building:
            return False
        state.cancel.set()
        return True

    # -- clean-up ---------------------------------------------------------------------------------------

    def end(self, session_id: str) -> None:
        """The browser session ended: forget it and delete its folder (a running build is cancelled first)."""
        key = session_key(session_id)
        with self._lock:
            state = self._sessions.get(key)
            if state is not None and state.building:
                state.cancel.set()
                state.expires = 0.0  # the sweep removes it once the build has stopped
                return
            self._sessions.pop(key, None)
        if state is not None:
            shutil.rmtree(state.folder, ignore_errors=True)

    def sweep(self) -> list[str]:
        """Delete sessions past their TTL (never one that is building); returns their keys."""
        now = self.clock()
        with self._lock:
            expired = [s for s in self._sessions.values() if s.expires <= now and not s.building]
            for state in expired:
                del self._sessions[state.key]
        for state in expired:
            shutil.rmtree(state.folder, ignore_errors=True)
            log.info("session collection %s removed (ended or older than %d s)", state.key, self.ttl)
        return [s.key for s in expired]

    def start_sweeper(self, interval: float | None = None) -> None:
        """Sweep in a daemon thread every ``interval`` seconds (default: a quarter of the TTL, at most 5 min)."""
        if self._sweeper is not None:
            return
        interval = interval or min(300.0, max(1.0, self.ttl / 4))

        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    self.sweep()
                except Exception:  # noqa: BLE001 - a failed sweep must not kill the thread
                    log.exception("session sweep failed")

        self._sweeper = threading.Thread(target=loop, name="session-sweeper", daemon=True)
        self._sweeper.start()

    def close(self) -> None:
        """Stop the sweeper and delete every session folder (server shutdown)."""
        self._stop.set()
        with self._lock:
            states, self._sessions = list(self._sessions.values()), {}
        for state in states:
            shutil.rmtree(state.folder, ignore_errors=True)

    def __len__(self) -> int:
        return len(self._sessions)
