"""The builder: sources (image folders, archives, ``datasets`` datasets) -> decoded images -> embeddings -> a
sealed collection, with safe output paths, resumable partial builds and the default collection. ``ray/`` is the
distributed engine (optional: needs ``requirements-build.txt``).
"""

from rag.ingest.builder import BuildCancelled, BuildOptions, build_collection
from rag.ingest.sources import FolderSource, Source, SourceItem

__all__ = ["BuildCancelled", "BuildOptions", "FolderSource", "Source", "SourceItem", "build_collection"]
