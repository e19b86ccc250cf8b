"""A `datasets` source read as a stream: with a limit only the rows used are downloaded and read.

``datasets.load_dataset(..., streaming=True)`` reads a Hub dataset's (or local parquet files') row groups
on demand, so ``.take(limit)`` of a multi-GB dataset fetches a few MB instead of the whole split. Resuming
skips the rows already committed with ``.skip(start)``. A folder written by ``save_to_disk`` is already
local and memory-mapped, so open_source keeps the plain DatasetSource for it.

A visitor's stream keeps its `datasets` cache (module files, metadata downloads) in a folder of its own,
inside the build's work folder, deleted by :meth:`StreamingDatasetSource.cleanup` or when the source is
garbage-collected: visitors' builds never add to the Space's cache, and never find what the owner's builds
left there (`datasets` falls back to a cached copy of a dataset the Hub refused).
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any, Iterator

from rag.ingest.dataset_source import DatasetSource, load_split
from rag.ingest.hub_access import open_error, read_error
from rag.ingest.sources import SourceItem
from rag.ingest.spec import SourceSpec


def _split_rows(stream: Any, split: str) -> int | None:
    """The split's row count when the dataset card or parquet metadata states it, else None."""
    splits = getattr(stream.info, "splits", None) or {}
    info = splits.get(split) if hasattr(splits, "get") else None
    return getattr(info, "num_examples", None) or None


def _build_cache(spec: SourceSpec) -> str | None:
    """A visitor's own `datasets` cache folder (inside ``spec.work_dir`` when given); None for the owner."""
    if not spec.visitor:
        return None
    if spec.work_dir is not None:
        Path(spec.work_dir).mkdir(parents=True, exist_ok=True)
    return tempfile.mkdtemp(prefix="datasets-cache-", dir=spec.work_dir)


class StreamingDatasetSource(DatasetSource):
    """Rows of a `datasets` dataset read as a stream; with a limit, at most that many rows are fetched."""

    def __init__(self, spec: SourceSpec) -> None:
        self.spec = spec
        self.name, self.config, self.split, self.limit = spec.dataset or "", spec.config, spec.split, spec.limit
        cache = _build_cache(spec)
        # removed by cleanup(), or at the latest when this source is garbage-collected
        self._remove_cache = weakref.finalize(self, shutil.rmtree, cache, True) if cache else None
        try:
            stream = load_split(spec, streaming=True, cache_dir=cache)
            if stream.features is None:  # no schema in the card or files: infer it from the first rows
                stream = self._resolved(stream)
            known = None if spec.where else _split_rows(stream, spec.split)
            self._size = min(spec.limit, known) if spec.limit and known else (spec.limit or known or 0)
            self._read: int | None = None  # rows in the stream, once it has been read to its end
            self._configure(stream, stream.features)
        except BaseException:
            self.cleanup()
            raise

    def _resolved(self, stream: Any) -> Any:
        """The stream with its features inferred from its first rows (this reads them)."""
        try:
            return stream._resolve_features()
        except Exception as exc:
            raise open_error(self.spec, exc) from exc

    def _limited(self, dataset: Any, limit: int | None) -> Any:
        """The first ``limit`` rows of the stream (all without a limit); nothing is read yet."""
        return dataset.take(limit) if limit else dataset

    def __len__(self) -> int:
        """At most the limit (the split's size when known and smaller); 0 when unknown and unlimited."""
        return self._read if self._read is not None else self._size

    def items(self, start: int = 0) -> Iterator[SourceItem]:
        """Rows from ``start`` on; the committed rows before it are skipped in the stream, not re-encoded."""
        rows = iter(self.dataset.skip(start) if start else self.dataset)
        position = start
        try:
            for row in rows:
                yield self._item(position, row)
                position += 1
                if position == self.limit:  # stop here: asking `.take()` for one more row reads one more row group
                    break
        except (OSError, ValueError) as exc:
            raise read_error(self.spec, position, exc) from exc
        finally:
            # finish the reader now, not at interpreter exit, where pyarrow's scan threads may already be gone
            getattr(rows, "close", lambda: None)()
        self._read = position

    def cleanup(self) -> None:
        """Delete a visitor's per-build `datasets` cache (the stream cannot be read after this)."""
        if self._remove_cache is not None:
            self._remove_cache()

    def manifest_entry(self) -> dict[str, Any]:
        return {**super().manifest_entry(), "streaming": True, "limit": self.limit}
