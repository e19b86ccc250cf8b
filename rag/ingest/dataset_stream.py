"""A `datasets` source read as a stream: with ``--limit`` only the rows used are downloaded and read.

``datasets.load_dataset(..., streaming=True)`` reads a Hub dataset's (or local parquet files') row groups
on demand, so ``.take(limit)`` of a multi-GB dataset fetches a few MB instead of the whole split. Resuming
skips the rows already committed with ``.skip(start)``. A folder written by ``save_to_disk`` is already
local and memory-mapped, so it keeps the plain ``DatasetSource``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from rag.errors import CollectionError
from rag.ingest.sources import DatasetSource, Source, SourceItem


def _is_saved_to_disk(name: str) -> bool:
    """A folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``."""
    path = Path(name)
    return path.is_dir() and any((path / marker).exists() for marker in ("dataset_info.json", "dataset_dict.json"))


def _load_stream(name: str, config: str | None, split: str, token: str | None) -> Any:
    """``load_dataset(..., streaming=True)`` for a Hub id, a dataset folder or parquet files."""
    import datasets

    try:
        if Path(name).suffix == ".parquet" or "*" in name:
            return datasets.load_dataset("parquet", data_files=name, split=split, streaming=True)
        return datasets.load_dataset(name, config, split=split, streaming=True, token=token)
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise CollectionError(f"Could not load dataset {name!r} (config {config!r}, split {split!r}): {exc}") from exc


def _split_rows(stream: Any, split: str) -> int | None:
    """The split's row count when the dataset card or parquet metadata states it, else None."""
    splits = getattr(stream.info, "splits", None) or {}
    info = splits.get(split) if hasattr(splits, "get") else None
    return getattr(info, "num_examples", None) or None


class StreamingDatasetSource(DatasetSource):
    """Rows of a `datasets` dataset read as a stream; with a limit, at most that many rows are fetched."""

    def __init__(
        self,
        name: str,
        config: str | None = None,
        split: str = "train",
        image_column: str | None = None,
        caption_columns: list[str] | None = None,
        label_column: str | None = None,
        where: dict[str, str] | None = None,
        limit: int | None = None,
        token: str | None = None,
    ) -> None:
        self.name, self.config, self.split, self.limit = name, config, split, limit
        stream = _load_stream(name, config, split, token)
        if stream.features is None:  # no schema in the card or files: infer it from the first rows
            stream = stream._resolve_features()
        known = None if where else _split_rows(stream, split)
        self._size = min(limit, known) if limit and known else (limit or known or 0)
        self._read: int | None = None  # rows in the stream, once it has been read to its end
        self._configure(stream, stream.features, image_column, caption_columns, label_column, where, limit)

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
            raise CollectionError(
                f"Reading dataset {self.name!r} stopped at row {position}: {exc}. Run again with --resume "
                "to continue from the rows already saved."
            ) from exc
        finally:
            # finish the reader now, not at interpreter exit, where pyarrow's scan threads may already be gone
            getattr(rows, "close", lambda: None)()
        self._read = position

    def manifest_entry(self) -> dict[str, Any]:
        return {**super().manifest_entry(), "streaming": True, "limit": self.limit}


def open_dataset_source(
    name: str,
    config: str | None = None,
    split: str = "train",
    image_column: str | None = None,
    caption_columns: list[str] | None = None,
    label_column: str | None = None,
    where: dict[str, str] | None = None,
    limit: int | None = None,
    token: str | None = None,
    streaming: bool | None = None,
) -> Source:
    """A stream when there is a limit or ``streaming`` is set (a ``save_to_disk`` folder never streams), else the whole split."""
    stream = bool(limit) if streaming is None else streaming
    cls = StreamingDatasetSource if stream and not _is_saved_to_disk(name) else DatasetSource
    return cls(name, config, split, image_column, caption_columns, label_column, where, limit, token)
