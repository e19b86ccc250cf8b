"""``index_build.py --engine ray``: the same build on Ray Data (read+decode tasks, CLIP actor pool, part writers).

Nothing is imported here so that ``rag.ingest`` works without Ray installed; use ``rag.ingest.ray.engine``.
"""
