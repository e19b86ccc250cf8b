"""The thumbnail cache on disk, capped: least recently used files out, folders of unserved collections removed.

Thumbnails live in ``<RAG_CACHE_DIR>/thumbnails/<collection fingerprint>/<row>.jpg``. The folder is walked once
per process; after that the cache counts the bytes it writes and prunes only when over ``RAG_CACHE_MAX_GB``
(down to PRUNE_TO of it, so pruning is rare). A hit bumps the file's mtime, which is the recency used.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)

THUMBNAILS = "thumbnails"
DEFAULT_MAX_BYTES = 2 * 10**9
PRUNE_TO = 0.8
FINGERPRINT = re.compile(r"^([0-9a-f]{16}|unknown)$")


class ThumbnailCache:
    """Thumbnail files of all collections under one cache folder, with a byte cap."""

    def __init__(self, cache_dir: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.root = Path(cache_dir) / THUMBNAILS
        self.max_bytes = int(max_bytes)
        self._bytes: int | None = None
        self._lock = threading.Lock()
        self.served: set[str] = set()

    def path(self, fingerprint: str, row_id: int, load: Callable[[int], bytes]) -> Path:
        """The row's thumbnail file, written from ``load(row_id)`` on a miss."""
        path = self.root / fingerprint / f"{int(row_id)}.jpg"
        try:
            os.utime(path)  # a hit: most recently used now
            return path
        except FileNotFoundError:
            pass
        data = load(row_id)
        self.used_bytes()  # the one walk of the folder happens before the first write is counted
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}-{threading.get_ident()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        self._added(len(data), path)
        return path

    def used_bytes(self) -> int:
        """Bytes the cache holds (walked once, then counted)."""
        with self._lock:
            if self._bytes is None:
                self._bytes = sum(size for _, size, _ in self._files())
            return self._bytes

    def _added(self, size: int, written: Path) -> None:
        with self._lock:
            if self._bytes is None:  # reset by serve() meanwhile: walk again (the new file included)
                self._bytes = sum(size for _, size, _ in self._files())
            else:
                self._bytes += size
            if self._bytes > self.max_bytes:
                self._prune(keep=written)

    def _files(self) -> list[tuple[float, int, Path]]:
        found = []
        for folder in (self.root.iterdir() if self.root.is_dir() else []):
            for entry in os.scandir(folder) if folder.is_dir() else []:
                try:
                    stat = entry.stat()
                except FileNotFoundError:
                    continue
                found.append((stat.st_mtime, stat.st_size, Path(entry.path)))
        return found

    def _prune(self, keep: Path) -> None:
        """Delete least recently used files (never ``keep``, just written) down to PRUNE_TO of the cap (lock held)."""
        files = sorted(self._files())
        total = sum(size for _, size, _ in files)
        target = self.max_bytes * PRUNE_TO
        removed = 0
        for _, size, path in files:
            if total <= target:
                break
            if path == keep:
                continue
            path.unlink(missing_ok=True)
            total -= size
            removed += 1
        self._bytes = total
        log.info("thumbnail cache over %.2f GB: removed %d least recently used files", self.max_bytes / 1e9, removed)

    def serve(self, fingerprint: str) -> None:
        """Note a collection this process serves, and remove the thumbnail folders of every other one."""
        self.served.add(fingerprint)
        for folder in (self.root.iterdir() if self.root.is_dir() else []):
            if folder.is_dir() and FINGERPRINT.match(folder.name) and folder.name not in self.served:
                shutil.rmtree(folder, ignore_errors=True)
                log.info("removed thumbnails of a collection no longer served (%s)", folder.name)
        with self._lock:
            self._bytes = None


_CACHES: dict[Path, ThumbnailCache] = {}
_REGISTRY_LOCK = threading.Lock()


def thumbnail_cache(cache_dir: Path, max_bytes: int | None = None) -> ThumbnailCache:
    """The process-wide cache of ``cache_dir`` (its cap updated when ``max_bytes`` is given)."""
    key = Path(cache_dir).expanduser().absolute()
    with _REGISTRY_LOCK:
        cache = _CACHES.setdefault(key, ThumbnailCache(key, max_bytes or DEFAULT_MAX_BYTES))
        if max_bytes:
            cache.max_bytes = int(max_bytes)
    return cache
