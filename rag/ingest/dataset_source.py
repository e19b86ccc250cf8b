"""A `datasets` dataset as a Source (Hub id, local dataset folder or parquet files), read as a whole split.

dataset_stream.StreamingDatasetSource reads the same rows as a stream; both take their columns, filter, limit,
token and asker from one SourceSpec. Image cells are passed on undecoded; a visitor's cell that names a file
instead of holding bytes is refused (RefusedImage), so a dataset cannot make the server read its own files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

from rag.errors import CollectionError
from rag.ingest.caption_files import CAPTION_KEYS
from rag.ingest.hub_access import open_error
from rag.ingest.sources import RefusedImage, Source, SourceItem, public_name
from rag.ingest.spec import SourceSpec

PATH_REFUSED = ("the image is a file path, not image bytes; a Space build reads only images stored in the "
                "dataset itself")
_OWNER_ERRORS = (FileNotFoundError, ValueError, OSError)


def is_saved_to_disk(name: str) -> bool:
    """A folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` (local, memory-mapped)."""
    path = Path(name)
    return path.is_dir() and any((path / marker).exists() for marker in ("dataset_info.json", "dataset_dict.json"))


def load_split(spec: SourceSpec, streaming: bool, cache_dir: str | None = None) -> Any:
    """``spec``'s split as a Dataset (or an IterableDataset when ``streaming``), read with ``spec.hub_token``."""
    import datasets

    name = spec.dataset or ""
    catch = Exception if spec.visitor else _OWNER_ERRORS  # a visitor never sees a library's raw message
    try:
        if is_saved_to_disk(name):
            loaded = datasets.load_from_disk(name)
            return loaded[spec.split] if isinstance(loaded, datasets.DatasetDict) else loaded
        if Path(name).suffix == ".parquet" or "*" in name:
            return datasets.load_dataset("parquet", data_files=name, split=spec.split, streaming=streaming,
                                         cache_dir=cache_dir)
        return datasets.load_dataset(name, spec.config, split=spec.split, streaming=streaming, token=spec.hub_token,
                                     cache_dir=cache_dir)
    except catch as exc:
        raise open_error(spec, exc) from exc


class DatasetSource(Source):
    """Rows of a `datasets` dataset with an image column, read whole (the split is prepared in the cache)."""

    def __init__(self, spec: SourceSpec) -> None:
        self.spec = spec
        self.name, self.config, self.split = spec.dataset or "", spec.config, spec.split
        dataset = load_split(spec, streaming=False)
        self._configure(dataset, dataset.features)

    def _configure(self, dataset: Any, features: Any) -> None:
        """Check and pick the columns from ``features``, then filter and cap ``dataset`` (a Dataset or a stream)."""
        import datasets

        spec, name = self.spec, self.name
        image_column = spec.image_column
        if image_column is None:
            image_column = next((c for c, f in features.items() if isinstance(f, datasets.Image)), None)
            if image_column is None:
                raise CollectionError(f"Dataset {name!r} has no image column; pass --image-column (columns: {list(features)}).")
        label_column = spec.label_column
        for column in [image_column, *(spec.caption_columns or []), *([label_column] if label_column else [])]:
            if column not in features:
                raise CollectionError(f"Dataset {name!r} has no column {column!r}; its columns are {list(features)}.")
        if isinstance(features[image_column], datasets.Image):
            dataset = dataset.cast_column(image_column, datasets.Image(decode=False))
        for column, value in (spec.where or {}).items():
            if column not in features:
                raise CollectionError(f"--where column {column!r} is not in dataset {name!r}.")
            dataset = dataset.filter(lambda v, w=value: str(v) == w, input_columns=[column])
        self.dataset = self._limited(dataset, spec.limit)
        self.image_column, self.label_column = image_column, label_column
        self.caption_columns = (list(spec.caption_columns) if spec.caption_columns is not None
                                else [c for c in CAPTION_KEYS if c in features][:1])
        self.label_names = None
        if label_column and isinstance(features[label_column], datasets.ClassLabel):
            self.label_names = features[label_column].names
        used = {image_column, *self.caption_columns, label_column}
        self._extra = [
            c for c, f in features.items() if c not in used and not isinstance(f, (datasets.Image, datasets.Audio))
        ]
        self.where = dict(spec.where or {})

    def _limited(self, dataset: Any, limit: int | None) -> Any:
        """The first ``limit`` rows (all without a limit)."""
        return dataset.select(range(min(limit, len(dataset)))) if limit else dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def _label(self, value: Any) -> str | None:
        if value is None:
            return None
        if self.label_names is not None and isinstance(value, int) and 0 <= value < len(self.label_names):
            return self.label_names[value]
        return str(value)

    def items(self, start: int = 0) -> Iterator[SourceItem]:
        for position in range(start, len(self.dataset)):
            yield self._item(position, self.dataset[position])

    def _image(self, cell: Any) -> Any:
        """The cell's image bytes (or pixels); a path only for the owner: a visitor's path becomes a RefusedImage
        whose reason is the same for every path, existing or not, and never echoes it."""
        if isinstance(cell, (bytes, bytearray)):
            return bytes(cell)
        if isinstance(cell, dict):
            data, path = cell.get("bytes"), cell.get("path")
        elif isinstance(cell, (str, os.PathLike)):
            data, path = None, cell
        else:
            return cell  # a PIL image or an array: pixels already in memory
        if data:
            return data
        return RefusedImage(PATH_REFUSED) if self.spec.visitor and path else path

    def _item(self, position: int, row: dict[str, Any]) -> SourceItem:
        """One dataset row as a SourceItem: undecoded image bytes (or path), non-empty captions, label name."""
        captions: list[str] = []
        for column in self.caption_columns:
            value = row[column]
            values = value if isinstance(value, (list, tuple)) else [value]
            captions.extend(str(v).strip() for v in values if v is not None and str(v).strip())
        return SourceItem(
            position=position,
            source=f"{self.split}[{position}]",
            image=self._image(row[self.image_column]),
            captions=captions,
            label=self._label(row[self.label_column]) if self.label_column else None,
            extra={c: row[c] for c in self._extra},
        )

    def manifest_entry(self) -> dict[str, Any]:
        return {
            "kind": "dataset",
            "name": public_name(Path(self.name)) if Path(self.name).exists() else self.name,
            "config": self.config,
            "split": self.split,
            "where": self.where,
            "image_column": self.image_column,
            "caption_columns": self.caption_columns,
            "label_column": self.label_column,
            "rows": len(self),
        }

    @property
    def caption_source(self) -> str:
        return f"dataset column(s) {', '.join(self.caption_columns)}" if self.caption_columns else "none"
