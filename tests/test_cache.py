"""The thumbnail cache cannot fill the disk: capped (least recently used out), unserved collections removed."""

from __future__ import annotations

import os
import time

import pytest
from testkit.shapes import build_shapes, write_shape_folder

from rag.collection import thumbnails as cache_module
from rag.collection.thumbnails import ThumbnailCache
from rag.config import Settings
from rag.errors import ConfigError
from rag.startup import open_pipeline


def _load(row_id: int) -> bytes:
    return bytes([row_id % 256]) * 1000


def _sizes(cache: ThumbnailCache) -> int:
    return sum(p.stat().st_size for p in cache.root.rglob("*.jpg"))


def test_cache_stays_under_its_cap_and_drops_least_recently_used(tmp_path):
    cache = ThumbnailCache(tmp_path, max_bytes=10_000)
    first = cache.path("0123456789abcdef", 0, _load)
    for row in range(1, 9):
        cache.path("0123456789abcdef", row, _load)
    old = time.time() - 100
    for row in range(1, 9):
        os.utime(cache.root / "0123456789abcdef" / f"{row}.jpg", (old + row, old + row))
    os.utime(first, (old, old))
    cache.path("0123456789abcdef", 0, _load)  # a hit makes row 0 the most recently used
    cache.path("0123456789abcdef", 9, _load)
    cache.path("0123456789abcdef", 10, _load)  # 11 files of 1000 bytes: over the cap, pruned to 80 %
    assert first.exists(), "the most recently used file was pruned"
    assert not (cache.root / "0123456789abcdef" / "1.jpg").exists()
    for row in range(11, 40):
        cache.path("0123456789abcdef", row, _load)
        assert _sizes(cache) <= cache.max_bytes
    assert cache.used_bytes() == _sizes(cache)


def test_cache_counts_writes_instead_of_walking_the_folder(tmp_path, monkeypatch):
    cache = ThumbnailCache(tmp_path, max_bytes=10**9)
    cache.path("0123456789abcdef", 0, _load)
    walks = []
    real = ThumbnailCache._files
    monkeypatch.setattr(ThumbnailCache, "_files", lambda self: walks.append(1) or real(self))
    for row in range(1, 50):
        cache.path("0123456789abcdef", row, _load)
        cache.path("0123456789abcdef", row, _load)
    assert walks == [] and cache.used_bytes() == 50 * 1000


def test_pipeline_removes_thumbnails_of_collections_no_longer_served(tiny_clip_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(cache_module, "_CACHES", {})
    monkeypatch.setattr(cache_module, "_POOL", cache_module.CachePool())
    folder = write_shape_folder(tmp_path / "src", n=8)
    collection = build_shapes(folder, tmp_path / "col", tiny_clip_dir)
    stale = tmp_path / "cache" / "thumbnails" / "fedcba9876543210"
    stale.mkdir(parents=True)
    (stale / "1.jpg").write_bytes(b"x" * 100)
    keep = tmp_path / "cache" / "thumbnails" / "not-a-fingerprint"
    keep.mkdir()
    pipeline = open_pipeline(Settings(cache_dir=tmp_path / "cache", cache_max_gb=0.00001),
                                      collection_dir=collection, with_captioner=False)
    assert not stale.exists() and keep.exists()
    hits = pipeline.search_text("red circle", k=8)
    assert all(os.path.exists(h.thumbnail) for h in hits[-3:])  # the latest results are never the ones pruned
    served = tmp_path / "cache" / "thumbnails" / pipeline.collection.fingerprint
    assert sum(p.stat().st_size for p in served.glob("*.jpg")) <= 10_000


def test_cache_size_setting_is_read_and_checked(monkeypatch):
    monkeypatch.setenv("RAG_CACHE_MAX_GB", "0.5")
    assert Settings.from_env().cache_max_gb == 0.5
    monkeypatch.delenv("RAG_CACHE_MAX_GB")
    assert Settings.from_env().cache_max_gb == 2.0
    for bad in ("0", "-1", "lots", "inf", "nan"):
        monkeypatch.setenv("RAG_CACHE_MAX_GB", bad)
        with pytest.raises(ConfigError, match="RAG_CACHE_MAX_GB"):
            Settings.from_env()


def test_the_page_deletes_old_uploads():
    """Uploads are Gradio temp files: the page is set to delete those older than an hour, every 15 minutes."""
    from ui.page import build_demo

    demo = build_demo("not configured")
    assert demo.delete_cache == (900, 3600)
