"""The thumbnail cache on disk, capped: least recently used files out, folders of unserved collections removed.

Thumbnails live in ``<cache folder>/thumbnails/<collection fingerprint>/<row>.jpg``. The Space's cache folder and
every session's (rag.space.sessions) share one byte cap, ``RAG_CACHE_MAX_GB``: their caches join one CachePool,
which walks the folders once, then counts the bytes written and prunes only when over the cap (down to PRUNE_TO
of it, so pruning is rare). A hit bumps the file's mtime, which is the recency used; hits and pruning take the
pool's lock, so a hit never returns a file that a prune is deleting.
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


class CachePool:
    """One byte cap over the thumbnail folders of several caches (the Space's and every session's)."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = int(max_bytes)
        self.lock = threading.RLock()
        self.members: dict[Path, ThumbnailCache] = {}
        self._bytes: int | None = None

    def join(self, cache: "ThumbnailCache") -> None:
        """Count ``cache``'s folder under this cap (its bytes are walked on the next count)."""
        with self.lock:
            self.members[cache.root] = cache
            self._bytes = None

    def leave(self, root: Path) -> None:
        """Stop counting a folder (its session ended and the folder is deleted)."""
        with self.lock:
            self.members.pop(Path(root), None)
            self._bytes = None

    def used_bytes(self) -> int:
        """Bytes the member folders hold (walked once, then counted)."""
        with self.lock:
            if self._bytes is None:
                self._bytes = sum(size for _, size, _ in self._files())
            return self._bytes

    def added(self, size: int, written: Path) -> None:
        """Count a file just written and prune when over the cap (lock held by the caller or taken here)."""
        with self.lock:
            self._bytes = self.used_bytes() + size
            if self._bytes > self.max_bytes:
                self._prune(keep=written)

    def _files(self) -> list[tuple[float, int, Path]]:
        return [entry for cache in list(self.members.values()) for entry in cache._files()]

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


class ThumbnailCache:
    """Thumbnail files of all collections under one cache folder, counted in a CachePool (its own by default)."""

    def __init__(self, cache_dir: Path, max_bytes: int = DEFAULT_MAX_BYTES, pool: CachePool | None = None) -> None:
        self.root = Path(cache_dir) / THUMBNAILS
        self.pool = pool if pool is not None else CachePool(max_bytes)
        self.pool.join(self)
        self.served: set[str] = set()

    @property
    def max_bytes(self) -> int:
        """The cap of this cache's pool."""
        return self.pool.max_bytes

    def path(self, fingerprint: str, row_id: int, load: Callable[[int], bytes]) -> Path:
        """The row's thumbnail file, written from ``load(row_id)`` on a miss."""
        path = self.root / fingerprint / f"{int(row_id)}.jpg"
        with self.pool.lock:  # a hit is atomic with pruning: the file returned is not being deleted
            try:
                os.utime(path)  # a hit: most recently used now
                return path
            except FileNotFoundError:
                pass
        data = load(row_id)
        self.pool.used_bytes()  # the one walk of the folders happens before the new file exists
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}-{threading.get_ident()}.tmp")
        tmp.write_bytes(data)
        with self.pool.lock:
            os.replace(tmp, path)
            self.pool.added(len(data), path)
        return path

    def used_bytes(self) -> int:
        """Bytes the pool holds (this cache's and its fellow members')."""
        return self.pool.used_bytes()

    def _files(self) -> list[tuple[float, int, Path]]:
        found = []
        for folder in (self.root.iterdir() if self.root.is_dir() else []):
            for entry in os.scandir(folder) if folder.is_dir() else []:
                if entry.name.endswith(".tmp"):  # being written: counted once it is in place
                    continue
                try:
                    stat = entry.stat()
                except FileNotFoundError:
                    continue
                found.append((stat.st_mtime, stat.st_size, Path(entry.path)))
        return found

    def serve(self, fingerprint: str) -> None:
        """Note a collection this process serves, and remove the thumbnail folders of every other one."""
        self.served.add(fingerprint)
        with self.pool.lock:
            for folder in (self.root.iterdir() if self.root.is_dir() else []):
                if folder.is_dir() and FINGERPRINT.match(folder.name) and folder.name not in self.served:
                    shutil.rmtree(folder, ignore_errors=True)
                    log.info("removed thumbnails of a collection no longer served (%s)", folder.name)
            self.pool._bytes = None


_POOL = CachePool()
_CACHES: dict[Path, ThumbnailCache] = {}
_REGISTRY_LOCK = threading.Lock()


def thumbnail_cache(cache_dir: Path, max_bytes: int | None = None) -> ThumbnailCache:
    """The process-wide cache of ``cache_dir``, under the one process-wide cap (set when ``max_bytes`` is given:
    rag.startup passes RAG_CACHE_MAX_GB; sessions' caches join without changing it)."""
    key = Path(cache_dir).expanduser().absolute()
    with _REGISTRY_LOCK:
        cache = _CACHES.get(key)
        if cache is None:
            cache = _CACHES[key] = ThumbnailCache(key, pool=_POOL)
        if max_bytes:
            cache.pool.max_bytes = int(max_bytes)
    return cache


def forget_cache(cache_dir: Path) -> None:
    """A cache folder is being deleted (a session ended): stop counting it under the process-wide cap."""
    key = Path(cache_dir).expanduser().absolute()
    with _REGISTRY_LOCK:
        cache = _CACHES.pop(key, None)
    if cache is not None:
        cache.pool.leave(cache.root)
