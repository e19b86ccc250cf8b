"""Sources: what a build reads, one item at a time. The base types, and the image-folder reader.

Items are not decoded here; the builder decodes them in worker threads (see rag.ingest.builder). Every caller
opens a source through rag.ingest.open_source.open_source; the `datasets` readers live in dataset_source.py
(a whole split) and dataset_stream.py (a stream), archives in archives.py.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any, Iterator

from rag.errors import CollectionError, InvalidInput
from rag.images.decode import IMAGE_EXTENSIONS
from rag.ingest.caption_files import CAPTION_KEYS, CaptionLimits, caption_rows

log = logging.getLogger(__name__)

PATH_KEYS = ("file", "filename", "file_name", "path", "image", "image_path")


@dataclass
class SourceItem:
    """One image to index: where its bytes come from, its captions/label and extra metadata."""

    position: int
    source: str
    image: Any  # a file path, raw bytes, a PIL image, or a RefusedImage
    captions: list[str] = field(default_factory=list)
    label: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class RefusedImage:
    """An image cell a source will not open (a server path in a visitor's dataset), with the reason to report.

    Decoding treats any value that is not bytes, an array or a PIL image as a path, so it asks for the path
    (``os.fspath``) and gets InvalidInput(reason): the item is skipped with that reason exactly like an
    unreadable image, by the local and the Ray builder alike, and nothing on the server is touched.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __fspath__(self) -> str:
        raise InvalidInput(self.reason)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return RefusedImage, (self.reason,)


class Source:
    """A finite, deterministic sequence of SourceItems plus a description for the manifest."""

    def __len__(self) -> int:
        raise NotImplementedError

    def items(self, start: int = 0) -> Iterator[SourceItem]:
        raise NotImplementedError

    def manifest_entry(self) -> dict[str, Any]:
        raise NotImplementedError

    def cleanup(self) -> None:
        """Delete what opening the source wrote (extracted files, a per-build cache); nothing by default."""

    _extra: list[str] = []

    @property
    def extra_columns(self) -> list[str]:
        """Passed-through metadata columns, stored as strings in the collection."""
        return list(self._extra)

    @property
    def caption_source(self) -> str:
        return "none"


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
        caption_limits: CaptionLimits = CaptionLimits(),
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
            self._load_captions(caption_limits)

    def _load_captions(self, limits: CaptionLimits) -> None:
        """Read the captions file row by row (capped), keeping only the rows that name one of ``self.files``."""
        rows = caption_rows(self.captions_file, limits)
        first = next(rows, None)
        if first is None:
            raise CollectionError(f"Captions file {self.captions_file.name} has no rows.")
        keys = list(first.keys())
        path_key = _pick_key(keys, PATH_KEYS, "file path", self.captions_file)
        caption_key = next((k for k in CAPTION_KEYS if k in keys), None)
        self._extra = [k for k in keys if k not in (path_key, caption_key, "label")]
        known = {file.relative_to(self.folder).as_posix() for file in self.files}
        by_name: dict[str, list[str]] = defaultdict(list)
        for relative in known:
            by_name[relative.rpartition("/")[2]].append(relative)
        for row in chain([first], rows):
            key = _match(str(row.get(path_key) or "").strip(), known, by_name)
            if key is not None:
                self._add_row(key, row, caption_key)

    def _add_row(self, key: str, row: dict[str, Any], caption_key: str | None) -> None:
        """One captions-file row's captions, label and extra columns, for the image ``key``."""
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
            "name": public_name(self.folder),
            "captions_file": _relative_to(self.captions_file, self.folder) if self.captions_file else None,
            "label_from_folder": self.label_from_folder,
            "rows": len(self),
        }

    @property
    def caption_source(self) -> str:
        return f"captions file {self.captions_file.name}" if self.captions_file else "none"


def _match(name: str, known: set[str], by_name: dict[str, list[str]]) -> str | None:
    """The image a captions row names: its path relative to the folder, else a file name unique in the folder."""
    relative = name.replace("\\", "/").lstrip("./")
    if relative in known:
        return relative
    candidates = by_name.get(relative.rpartition("/")[2], [])  # not Path(): pathlib interns every row's parts
    return candidates[0] if len(candidates) == 1 else None


def public_name(path: Path) -> str:
    """A local folder or file as published in the manifest: its name only, never the builder's absolute path."""
    return Path(path).expanduser().resolve().name


def _relative_to(path: Path, folder: Path) -> str:
    """``path`` relative to the source folder when inside it, else its file name (published in the manifest)."""
    try:
        return Path(path).resolve().relative_to(Path(folder).resolve()).as_posix()
    except ValueError:
        return Path(path).name
