"""Per-browser-session collections: each session's own Pipeline beside the Space's, with a TTL and a build line.

A session's pipeline shares the Space pipeline's loaded encoder and captioner, so a visitor's collection costs
only its index, metadata and thumbnails. Sessions end (or expire after ``RAG_SESSION_TTL``) by deleting their
folder (each state has a folder of its own, so deleting an old one never touches a new one). One build runs at a
time per Space; the others wait in a bounded line that tells them their place: a build that would make the line
longer than ``line_max``, or give one client more than ``per_client`` places, is refused at once. Every change to
the registry happens under its lock; a request thread never deletes folders (the sweeper thread does).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import shutil
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from rag.collection.reader import Collection
from rag.collection.thumbnails import forget_cache
from rag.errors import InvalidInput, RagError
from rag.pipeline import Pipeline

log = logging.getLogger(__name__)


class BuildCancelledWhileWaiting(RagError):
    """The visitor cancelled while waiting for their turn to build."""


class BuildLineFull(RagError):
    """The Space's build line (or this client's share of it) is full: the build is refused before any work."""


class BuildRefused(InvalidInput):
    """This session may not build now (one is running, or it has built its most): refused before any work."""


class BuildStopped(RagError):
    """The visitor pressed Cancel after the last check inside the build: the finished collection is discarded."""


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
    ended: bool = False
    client: str | None = None
    expires: float = 0.0
    cancel: threading.Event = field(default_factory=threading.Event)
    published: dict[str, str] | None = None
    progress: str = ""  # the running build's last progress line (place in line, images/s), for the page to poll


def session_key(session_id: str) -> str:
    """A folder-safe name for a session id (Gradio's session hash, or anything a client sends)."""
    return hashlib.sha256(str(session_id).encode()).hexdigest()[:24]


def remove_folder(folder: Path) -> None:
    """Delete a session's folder and stop counting its thumbnails under the process-wide cache cap."""
    forget_cache(folder / "cache")
    shutil.rmtree(folder, ignore_errors=True)


def clear_orphans(root: str | Path) -> list[str]:
    """Delete every folder under ``root``: at start-up no session exists yet, so whatever is there was left by a
    previous process (sessions survive no restart). Returns the names removed."""
    root = Path(root)
    removed = [entry.name for entry in (root.iterdir() if root.is_dir() else [])]
    for name in removed:
        path = root / name
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() and not path.is_symlink() else path.unlink(missing_ok=True)
    if removed:
        log.info("removed %d session folder(s) left by a previous run", len(removed))
    return removed


class SessionRegistry:
    """Session id -> that session's Pipeline; the Space's own pipeline serves everyone else."""

    def __init__(
        self,
        space: Pipeline | None,
        root: str | Path,
        ttl: float = 7200,
        max_builds: int = 5,
        clock: Callable[[], float] = time.monotonic,
        line_max: int = 8,
        per_client: int = 2,
    ) -> None:
        self.space = space
        self.root = Path(root)
        self.ttl = ttl
        self.max_builds = max_builds
        self.line_max, self.per_client = line_max, per_client
        self.clock = clock
        self.line = BuildLine()
        self._sessions: dict[str, SessionState] = {}
        self._retired: list[SessionState] = []  # replaced states whose folders the sweeper deletes
        self._lock = threading.RLock()
        self._sweeper: threading.Thread | None = None
        self._stop = threading.Event()

    # -- serving ----------------------------------------------------------------------------------------

    def _live(self, session_id: str | None) -> SessionState | None:
        """The session's state unless it has expired or ended (the sweeper deletes those; no request does)."""
        if not session_id:
            return None
        with self._lock:
            state = self._sessions.get(session_key(session_id))
            if state is None or state.ended or (state.expires <= self.clock() and not state.building):
                return None
            return state

    def pipeline_for(self, session_id: str | None, default: Pipeline | None = None) -> Pipeline | None:
        """The session's own pipeline when it has one and uses it, else the Space's (``default`` if none)."""
        state = self._live(session_id)
        if state is not None and state.use_own and state.pipeline is not None:
            return state.pipeline
        return self.space if self.space is not None else default

    def state(self, session_id: str) -> SessionState | None:
        """The session's state (None when it has never built, has expired or has ended)."""
        return self._live(session_id)

    def use_space_collection(self, session_id: str, use_space: bool = True) -> bool:
        """Switch the session between the Space's collection and its own; True when it now serves its own."""
        with self._lock:
            state = self._live(session_id)
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

    def begin_build(self, session_id: str, client: str | None = None) -> tuple[SessionState, Path]:
        """Register a build for the session and return a fresh output folder. Refused at once (nothing created,
        nothing counted) when the session is building or over its limit, when the line is full, or when
        ``client`` already holds its share of the line."""
        if self.space is None:
            raise RagError("The Space's models are not loaded, so it cannot build collections right now.")
        key = session_key(session_id)
        with self._lock:
            state = self._live(session_id)
            self._check_admission(self._sessions.get(key), state, client)
            if state is None:
                if key in self._sessions:  # expired or ended: the sweeper deletes its folder
                    self._retired.append(self._sessions.pop(key))
                state = SessionState(key=key, folder=self.root / f"{key}-{secrets.token_hex(4)}",
                                     expires=self.clock() + self.ttl)
                self._sessions[key] = state
            state.building, state.builds, state.client = True, state.builds + 1, client
            state.cancel.clear()
            state.progress = "Starting…"
            return state, state.folder / f"build-{state.builds}"

    def _check_admission(self, existing: SessionState | None, live: SessionState | None, client: str | None) -> None:
        """The per-session, line and per-client limits (lock held; ``existing`` even if expired or ended)."""
        if existing is not None and existing.building:
            raise BuildRefused("A build is already running in this session; wait for it or cancel it.")
        if live is not None and live.builds >= self.max_builds:
            raise BuildRefused(f"This session has built {live.builds} collections, the most allowed; "
                               "publish one or come back later.")
        building = [s for s in self._sessions.values() if s.building]
        if len(building) >= self.line_max:
            raise BuildLineFull(f"{len(building)} builds are already running or waiting in this Space, the most "
                                "it takes; try again in a few minutes.")
        if client is not None and sum(s.client == client for s in building) >= self.per_client:
            raise BuildLineFull(f"You already have {self.per_client} builds running or waiting in this Space; "
                                "wait for one to finish.")

    def finish_build(self, session_id: str, collection_dir: Path, name: str) -> Pipeline:
        """Serve the session's new collection (sharing the Space's models) and drop its previous one; a session
        that ended or cancelled meanwhile keeps nothing (checked again under the lock, after the slow open)."""
        state = self._sessions.get(session_key(session_id))
        pipeline = None
        if state is not None and not state.cancel.is_set():
            space = self.space
            pipeline = Pipeline(collection=Collection.open(collection_dir), encoder=space.encoder,
                                cache_dir=state.folder / "cache", captioner=space.captioner, name=name,
                                text_model=space.text_model)
        with self._lock:
            current = self._sessions.get(session_key(session_id))
            if pipeline is None or current is not state or state.cancel.is_set() or state.ended:
                if state is not None:
                    state.building = False
                shutil.rmtree(collection_dir, ignore_errors=True)
                if state is not None and current is state and not state.ended:
                    raise BuildStopped("Build cancelled; nothing was kept.")
                raise RagError("The session ended before its build finished; nothing was kept.")
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
        with self._lock:
            state = self._sessions.get(session_key(session_id))
            if state is not None:
                state.building = False
                state.builds -= 1 if refund else 0
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)

    def cancel(self, session_id: str) -> bool:
        """Ask the session's running (or waiting) build to stop between batches; False when none runs."""
        with self._lock:
            state = self._sessions.get(session_key(session_id))
            if state is None or not state.building:
                return False
            state.cancel.set()
            state.progress = "Cancelling… nothing of this build will be kept."
            return True

    def progress(self, session_id: str) -> str | None:
        """The session's running build's last progress line; None when it has no build running."""
        with self._lock:
            state = self._sessions.get(session_key(session_id))
            return state.progress if state is not None and state.building else None

    # -- clean-up ---------------------------------------------------------------------------------------

    def end(self, session_id: str) -> None:
        """The browser session ended: it serves nothing from now on; its folder goes now, or, while a build
        runs, once the cancelled build has stopped (the sweeper's next pass)."""
        with self._lock:
            state = self._sessions.get(session_key(session_id))
            if state is None:
                return
            state.ended, state.expires = True, 0.0
            state.cancel.set()
            if state.building:
                return
            del self._sessions[state.key]
        remove_folder(state.folder)

    def sweep(self) -> list[str]:
        """Delete sessions past their TTL or ended (never one that is building); returns their keys."""
        now = self.clock()
        with self._lock:
            expired = [s for s in self._sessions.values() if (s.expires <= now or s.ended) and not s.building]
            for state in expired:
                del self._sessions[state.key]
            expired += [s for s in self._retired if not s.building]
            self._retired = [s for s in self._retired if s.building]
        for state in expired:
            remove_folder(state.folder)
            log.info("session collection %s removed (ended or older than %d s)", state.key, self.ttl)
        return [s.key for s in expired]

    def start_sweeper(self, interval: float | None = None) -> None:
        """Sweep in a daemon thread every ``interval`` seconds (default: a quarter of the TTL, at most 1 min)."""
        if self._sweeper is not None:
            return
        interval = interval or min(60.0, max(1.0, self.ttl / 4))

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
            states, self._sessions = list(self._sessions.values()) + self._retired, {}
            self._retired = []
        for state in states:
            remove_folder(state.folder)

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)
