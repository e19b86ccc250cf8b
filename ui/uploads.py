"""Large uploads are for the Build tab's archive only, and only while a build needs them.

Gradio has one upload cap for every input (``max_file_size``), and the page raises it to RAG_BUILD_MAX_MB for
archives; its upload route cannot tell which input a file is for. So every image input refuses files over
IMAGE_MAX_MB itself (ui.components), and this janitor removes what nothing may use from Gradio's upload folder:
a file over IMAGE_MAX_MB that is not an archive at once, an archive that no build has claimed after
``grace`` seconds, and an archive as soon as the build that claimed it ends (it has been extracted by then).
Gradio's own ``delete_cache`` still removes small uploads after an hour.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

from .components import IMAGE_MAX_MB

log = logging.getLogger("ui.uploads")

ARCHIVE_SUFFIXES = (".zip", ".tar", ".gz", ".tgz")
POLL_SECONDS = 2.0  # how often the janitor looks at new uploads (a stat of each new file, nothing else)


class UploadJanitor:
    """Watches Gradio's set of uploaded files (``Blocks.upload_file_set``) and deletes large ones nothing uses."""

    def __init__(self, grace: float, small_bytes: int = IMAGE_MAX_MB * 2**20,
                 clock: Callable[[], float] = time.time) -> None:
        self.grace, self.small_bytes, self.clock = grace, small_bytes, clock
        self.files: set[str] = set()
        self._small: set[str] = set()  # uploads already seen to be small: never stat'ed again
        self._claimed: dict[str, int] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def watch(self, files: set[str]) -> None:
        """The set Gradio adds every upload's path to (the janitor only reads it and discards what it deletes)."""
        self.files = files

    @contextmanager
    def claim(self, path: str | None) -> Iterator[SimpleNamespace]:
        """Keep ``path`` while a build waits for its turn and runs. Set ``.used`` on what this yields once the
        build has read it: the file is deleted then; a build refused before any work leaves it to the grace."""
        claim = SimpleNamespace(used=False)
        if not path:
            yield claim
            return
        with self._lock:
            self._claimed[path] = self._claimed.get(path, 0) + 1
        try:
            yield claim
        finally:
            with self._lock:
                self._claimed[path] -= 1
                last = not self._claimed[path]
                if last:
                    del self._claimed[path]
            if last and claim.used and path in self.files:
                self._delete(path, "used by a build")

    def sweep(self) -> list[str]:
        """Delete the large uploads nothing may use now; returns their paths."""
        now, deleted = self.clock(), []
        for path in list(self.files):
            if path in self._small:
                continue
            try:
                stat = os.stat(path)
            except FileNotFoundError:
                self.files.discard(path)
                continue
            if stat.st_size <= self.small_bytes:
                self._small.add(path)
                continue
            archive = path.lower().endswith(ARCHIVE_SUFFIXES)
            if archive and now - stat.st_mtime < self.grace:
                continue
            with self._lock:  # a claim and this check cannot interleave: a claimed file is never deleted
                if path not in self._claimed:
                    why = f"no build used it within {self.grace:.0f} s" if archive else "over the image limit"
                    deleted.append(self._delete(path, why))
        self._small &= self.files
        return deleted

    def _delete(self, path: str, why: str) -> str:
        Path(path).unlink(missing_ok=True)
        self.files.discard(path)
        try:
            Path(path).parent.rmdir()  # Gradio keeps each upload in a folder of its own
        except OSError:
            pass
        log.info("deleted an upload of the page (%s)", why)
        return path

    def start(self, interval: float = POLL_SECONDS) -> None:
        """Sweep every ``interval`` seconds in a daemon thread."""
        if self._thread is not None:
            return

        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    self.sweep()
                except Exception:  # noqa: BLE001 - a failed sweep must not stop the janitor
                    log.exception("upload sweep failed")

        self._thread = threading.Thread(target=loop, name="upload-janitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (tests; the server's end)."""
        self._stop.set()
