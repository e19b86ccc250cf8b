"""The on-disk collection (format 1): reading and checking it, writing it, its Hub repo, its thumbnail cache.

A collection is a folder (or a Hub dataset repo with the same files): ``manifest.json``, ``index.faiss`` and
``data/metadata-*.parquet``. Everything that knows that layout lives here; the map file is in ``rag.explore``.
"""

from rag.collection.hub import pull_collection, push_collection, resolve_collection
from rag.collection.reader import Collection, Manifest
from rag.collection.thumbnails import ThumbnailCache
from rag.collection.writer import seal_collection, write_table

__all__ = ["Collection", "Manifest", "ThumbnailCache", "pull_collection", "push_collection", "resolve_collection",
           "seal_collection", "write_table"]
