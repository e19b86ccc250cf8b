"""Readers: turn an image folder (+ captions file) or a `datasets` dataset into a stream of source items.

Items are not decoded here; the builder decodes them in worker threads (see rag.ingest.builder).
"""

from __future__ import annotations

import csv
import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from rag.errors import CollectionError
from rag.images.decode import IMAGE_EXTENSIONS

log = logging.getLogger(__name__)

PATH_KEYS = ("file", "filename", "file_name", "path", "image", "image_path")
CAPTION_KEYS = ("caption", "captions", "text", "description", "sentences", "raw")


@dataclass
class SourceItem:
    """One image to index: where its bytes come from, its captions/label and extra metadata."""

    position: int
    source: str
    image: Any  # a file path, raw bytes, or a PIL image
    captions: list[str] = field(default_factory=list)
    label: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Source:
    """A finite, deterministic sequence of SourceItems plus a description for the manifest."""

    def __len__(self) -> int:
        raise NotImplementedError

    def items(self, start: int = 0) -> Iterator[SourceItem]:
        raise NotImplementedError

    def manifest_entry(self) -> dict[str, Any]:
        raise NotImplementedError

    _extra: list[str] = []

    @property
    def extra_columns(self) -> list[str]:
        """Passed-through metadata columns, stored as strings in the collection."""
        return list(self._extra)

    @property
    def caption_source(self) -> str:
        return "none"


def _read_caption_rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise CollectionError(f"Captions file {path} does not exist.")
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError as exc:
                    raise CollectionError(f"{path.name} line {number} is not JSON: {exc}") from exc
        return rows
    return list(csv.DictReader(text.splitlines()))


def _pick_key(keys: list[str], candidates: tuple[str, ...], what: str, path: Path) -> str:
    for candidate in candidates:
        if candidate in keys:
            return candidate
    raise CollectionError(f"{path.name} needs a {what} column (one of {', '.join(candidates)}); it has {keys}.")


class FolderSource(Source):
    """All images under a folder, recursively, sorted; captions and labels from a file or the folder names."""

    def __init__(
        self,
        folder: str | Path,
        captions_file: str | Path | None = None,
        label_from_folder: bool = False,
        limit: int | None = None,
    ) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise CollectionError(f"Image folder {self.folder} does not exist.")
        files = sorted(
            p for p in self.folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
        )
        self.files = files[:limit] if limit else files
        self.label_from_folder = label_from_folder
        self.captions_file = Path(captions_file) if captions_file else None
        self.captions: dict[str, list[str]] = defaultdict(list)
        self.labels: dict[str, str] = {}
        self.metadata: dict[str, dict[str, Any]] = defaultdict(dict)
        self._extra: list[str] = []
        if self.captions_file:
            self._load_captions()

    def _load_captions(self) -> None:
        rows = _read_caption_rows(self.captions_file)
        if not rows:
            raise CollectionError(f"Captions file {self.captions_file} has no rows.")
        keys = list(rows[0].keys())
        path_key = _pick_key(keys, PATH_KEYS, "file path", self.captions_file)
        caption_key = next((k for k in CAPTION_KEYS if k in keys), None)
        self._extra = [k for k in keys if k not in (path_key, caption_key, "label")]
        by_name = defaultdict(list)
        for file in self.files:
            by_name[file.name].append(file)
        for row in rows:
            key = self._match(str(row[path_key]).strip(), by_name)
            if key is None:
                continue
            caption = row.get(caption_key) if caption_key else None
            if isinstance(caption, list):
                self.captions[key].extend(str(c).strip() for c in caption if str(c).strip())
            elif caption and str(caption).strip():
                self.captions[key].append(str(caption).strip())
            if row.get("label") not in (None, ""):
                self.labels[key] = str(row["label"])
            for name in self._extra:
                if row.get(name) not in (None, ""):
                    self.metadata[key][name] = row[name]

    def _match(self, name: str, by_name: dict[str, list[Path]]) -> str | None:
        relative = name.replace("\\", "/").lstrip("./")
        if (self.folder / relative).is_file():
            return relative
        candidates = by_name.get(Path(relative).name, [])
        if len(candidates) == 1:
            return candidates[0].relative_to(self.folder).as_posix()
        return None

    def __len__(self) -> int:
        return len(self.files)

    def items(self, start: int = 0) -> Iterator[SourceItem]:
        for position in range(start, len(self.files)):
            path = self.files[position]
            relative = path.relative_to(self.folder).as_posix()
            label = self.labels.get(relative)
            if label is None and self.label_from_folder and path.parent != self.folder:
                label = path.parent.name
            yield SourceItem(
                position=position,
                source=relative,
                image=path,
                captions=list(self.captions.get(relative, [])),
                label=label,
                extra=dict(self.metadata.get(relative, {})),
            )

    def manifest_entry(self) -> dict[str, Any]:
        return {
            "kind": "images",
            "name": _public_name(self.folder),
            "captions_file": _relative_to(self.captions_file, self.folder) if self.captions_file else None,
            "label_from_folder": self.label_from_folder,
            "rows": len(self),
        }

    @property
    def caption_source(self) -> str:
        return f"captions file {self.captions_file.name}" if self.captions_file else "none"


def _public_name(path: Path) -> str:
    """A local folder or file as published in the manifest: its name only, never the builder's absolute path."""
    return Path(path).expanduser().resolve().name


def _relative_to(path: Path, folder: Path) -> str:
    """``path`` relative to the source folder when inside it, else its file name (published in the manifest)."""
    try:
        return Path(path).resolve().relative_to(Path(folder).resolve()).as_posix()
    except ValueError:
        return Path(path).name


def _load_dataset(name: str, config: str | None, split: str, token: str | None):
    import datasets

    path = Path(name)
    try:
        if path.is_dir() and any((path / m).exists() for m in ("dataset_info.json", "dataset_dict.json")):
            loaded = datasets.load_from_disk(str(path))
            return loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
        if path.suffix == ".parquet" or "*" in name:
            return datasets.load_dataset("parquet", data_files=name, split=split)
        return datasets.load_dataset(name, config, split=split, token=token)
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise CollectionError(f"Could not load dataset {name!r} (config {config!r}, split {split!r}): {exc}") from exc


class DatasetSource(Source):
    """Rows of a `datasets` dataset (Hub id, local folder or parquet files) with an image column, read whole."""

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
        self.name, self.config, self.split = name, config, split
        dataset = _load_dataset(name, config, split, token)
        self._configure(dataset, dataset.features, image_column, caption_columns, label_column, where, limit)

    def _configure(self, dataset: Any, features: Any, image_column: str | None, caption_columns: list[str] | None,
                   label_column: str | None, where: dict[str, str] | None, limit: int | None) -> None:
        """Check and pick the columns from ``features``, then filter and cap ``dataset`` (a Dataset or a stream)."""
        import datasets

        name = self.name
        if image_column is None:
            image_column = next((c for c, f in features.items() if isinstance(f, datasets.Image)), None)
            if image_column is None:
                raise CollectionError(f"Dataset {name!r} has no image column; pass --image-column (columns: {list(features)}).")
        for column in [image_column, *(caption_columns or []), *([label_column] if label_column else [])]:
            if column not in features:
                raise CollectionError(f"Dataset {name!r} has no column {column!r}; its columns are {list(features)}.")
        if isinstance(features[image_column], datasets.Image):
            dataset = dataset.cast_column(image_column, datasets.Image(decode=False))
        if where:
            for column, value in where.items():
                if column not in features:
                    raise CollectionError(f"--where column {column!r} is not in dataset {name!r}.")
                dataset = dataset.filter(lambda v, c=column, w=value: str(v) == w, input_columns=[column])
        self.dataset = self._limited(dataset, limit)
        self.image_column = image_column
        if caption_columns is None:
            caption_columns = [c for c in CAPTION_KEYS if c in features][:1]
        self.caption_columns = caption_columns
        self.label_column = label_column
        self.label_names = None
        if label_column and isinstance(features[label_column], datasets.ClassLabel):
            self.label_names = features[label_column].names
        used = {image_column, *self.caption_columns, label_column}
        self._extra = [
            c for c, f in features.items() if c not in used and not isinstance(f, (datasets.Image, datasets.Audio))
        ]
        self.where = where or {}

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

    def _item(self, position: int, row: dict[str, Any]) -> SourceItem:
        """One dataset row as a SourceItem: undecoded image bytes/path, non-empty captions, label name."""
        image = row[self.image_column]
        if isinstance(image, dict):
            image = image.get("bytes") or image.get("path")
        captions: list[str] = []
        for column in self.caption_columns:
            value = row[column]
            values = value if isinstance(value, (list, tuple)) else [value]
            captions.extend(str(v).strip() for v in values if v is not None and str(v).strip())
        return SourceItem(
            position=position,
            source=f"{self.split}[{position}]",
            image=image,
            captions=captions,
            label=self._label(row[self.label_column]) if self.label_column else None,
            extra={c: row[c] for c in self._extra},
        )

    def manifest_entry(self) -> dict[str, Any]:
        return {
            "kind": "dataset",
            "name": _public_name(Path(self.name)) if Path(self.name).exists() else self.name,
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
