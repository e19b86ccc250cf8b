"""The on-disk collection (format 1), read side: manifest + FAISS index + parquet metadata with thumbnails.

Vector ``i`` of ``index.faiss`` is row ``i`` of the concatenated ``data/metadata-*.parquet`` files.
Loading validates everything up front so a bad collection fails at start-up with one clear message.
Writing lives in rag.collection.writer (it needs `datasets`, which the serving path does not import).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rag.collection.thumbnails import thumbnail_cache
from rag.errors import CollectionError
from rag.search.index import can_reconstruct, index_type_name, load_index

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
INDEX_FILE = "index.faiss"
MAP_FILE = "map.parquet"  # optional 2-D layout (rag.explore.map_file); verified like the rest when listed
ADAPTER_FILE = "adapter.safetensors"  # a tuned collection's embedding adapter (rag.finetune, rag.models.adapter)
# the int8 ONNX text tower of an ``--quantize int8`` build (rag.models.onnx_text), and the manifest.build entry that
# holds the export key it was made with. Optional: a missing or corrupt one is only not used (start-up re-exports).
TEXT_EXPORT_FILE = "text-tower.int8.onnx"
TEXT_EXPORT_KEY = "text_export"
OPTIONAL_FILES = (TEXT_EXPORT_FILE,)
CARD_FILE = "README.md"
DATA_DIR = "data"
ROW_GROUP_SIZE = 128
BASE_COLUMNS = ("id", "image", "captions", "label", "source", "captions_generated")
HASH_CHUNK = 1 << 20

log = logging.getLogger(__name__)


@dataclass
class Manifest:
    """What ``manifest.json`` records: how the collection was built and what its files must hash to."""

    model: dict[str, Any]
    dim: int
    rows: int
    index_factory: str
    index_type: str = ""
    search_params: str = ""
    metric: str = "inner_product"
    source: dict[str, Any] = field(default_factory=dict)
    caption_source: str = "none"
    generated_captions: int = 0
    columns: list[str] = field(default_factory=list)
    skipped: dict[str, Any] = field(default_factory=lambda: {"count": 0, "items": []})
    build: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False, sort_keys=True)

    @classmethod
    def read(cls, path: Path) -> "Manifest":
        """Parse ``manifest.json``; an unknown format version or a missing field is a CollectionError."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise CollectionError(f"{path.parent.name} is not a collection: it has no {MANIFEST}.") from exc
        except (OSError, ValueError) as exc:
            raise CollectionError(f"{MANIFEST} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise CollectionError(f"{MANIFEST} does not hold a JSON object.")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise CollectionError(
                f"Collection format version {version!r} is not supported (this app reads version {FORMAT_VERSION}); "
                "rebuild it with this version of index_build.py."
            )
        try:
            return cls(**data)
        except TypeError as exc:
            raise CollectionError(f"{MANIFEST} is missing or has unknown fields: {exc}") from exc

    @property
    def model_id(self) -> str:
        return str(self.model.get("id"))


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def data_files(directory: Path) -> list[Path]:
    """The metadata shards in row order."""
    return sorted((directory / DATA_DIR).glob("metadata-*.parquet"))


class Collection:
    """A loaded, validated collection: the index for search, metadata rows and thumbnails by row id."""

    def __init__(self, directory: Path, manifest: Manifest, index: Any, table: pa.Table, shards: list[Path]):
        self.directory = directory
        self.manifest = manifest
        self.index = index
        self._table = table
        self._shards = shards
        self._row_groups: list[tuple[int, int, int, int]] = []  # (first row, last row+1, shard no, group no)
        self._footers: list[pq.FileMetaData] = []  # parsed once: a thumbnail read then skips the footer
        start = 0
        for shard_no, shard in enumerate(shards):
            meta = pq.ParquetFile(shard).metadata
            self._footers.append(meta)
            for group in range(meta.num_row_groups):
                count = meta.row_group(group).num_rows
                self._row_groups.append((start, start + count, shard_no, group))
                start += count
        self._group_starts = np.array([g[0] for g in self._row_groups], dtype=np.int64)
        self._extra_columns = [c for c in table.column_names if c not in BASE_COLUMNS]
        self._can_reconstruct: bool | None = None
        self.unusable: list[str] = []  # optional files listed but missing or corrupt (set by open)

    @classmethod
    def open(
        cls,
        directory: str | Path,
        verify_checksums: bool = True,
        verified_stamp_dir: Path | None = None,
    ) -> "Collection":
        """Validate and load a collection directory, or raise CollectionError naming the first problem."""
        directory = Path(directory)
        if not directory.is_dir():
            raise CollectionError(f"Collection directory {directory.name} does not exist.")
        manifest = Manifest.read(directory / MANIFEST)
        check_listed_files(manifest)
        for relative in manifest.files:
            if relative not in OPTIONAL_FILES and not (directory / relative).is_file():
                raise CollectionError(f"The collection is missing {relative} (listed in {MANIFEST}).")
        unusable = [rel for rel in OPTIONAL_FILES if rel in manifest.files and not (directory / rel).is_file()]
        if verify_checksums:
            unusable += verify_files(directory, manifest, verified_stamp_dir, optional=OPTIONAL_FILES)
        shards = [directory / rel for rel in sorted(manifest.files) if rel.startswith(f"{DATA_DIR}/")]
        found = data_files(directory)
        if [p.name for p in found] != [p.name for p in shards]:
            raise CollectionError(
                f"{DATA_DIR}/ holds {len(found)} metadata files but {MANIFEST} lists {len(shards)}."
            )
        if not shards:
            raise CollectionError(f"The collection has no {DATA_DIR}/metadata-*.parquet files.")
        index = load_index(directory / INDEX_FILE, manifest.search_params)  # params clamped, IVF direct map made
        if index.d != manifest.dim:
            raise CollectionError(f"The index has dimension {index.d} but {MANIFEST} says {manifest.dim}.")
        try:
            columns = [c for c in pq.read_schema(shards[0]).names if c != "image"]
            table = pq.read_table(shards, columns=columns, memory_map=True) if len(shards) > 1 else pq.read_table(
                shards[0], columns=columns, memory_map=True
            )
            # one chunk per column: take() over a row group per chunk (7 813 at 1M rows) cost 25 ms per query's
            # rows, over one chunk 0.05 ms
            table = table.combine_chunks()
        except (OSError, pa.ArrowException) as exc:
            raise CollectionError(f"The metadata parquet files cannot be read: {exc}") from exc
        if not (index.ntotal == table.num_rows == manifest.rows):
            raise CollectionError(
                f"Row counts disagree: index has {index.ntotal} vectors, metadata has {table.num_rows} rows, "
                f"{MANIFEST} says {manifest.rows}."
            )
        collection = cls(directory, manifest, index, table, shards)
        collection.unusable = sorted(set(unusable))
        return collection

    @property
    def can_reconstruct(self) -> bool:
        """Whether the index hands back stored vectors (checked once)."""
        if self._can_reconstruct is None:
            self._can_reconstruct = can_reconstruct(self.index)
        return self._can_reconstruct

    def __len__(self) -> int:
        return self._table.num_rows

    @property
    def extra_columns(self) -> list[str]:
        return list(self._extra_columns)

    @property
    def index_type(self) -> str:
        return index_type_name(self.index)

    @property
    def filter_columns(self) -> list[str]:
        """Columns a search filter may name: label, source, captions and the passed-through ones."""
        return ["label", "source", "captions", *self._extra_columns]

    def column(self, name: str) -> pa.ChunkedArray:
        """One metadata column over all rows, in row order (for filters)."""
        return self._table.column(name)

    def rows(self, ids: Iterable[int]) -> list[dict[str, Any]]:
        """Metadata rows (captions, label, source, generated flag, extra columns) for row ids, in order."""
        ids = [int(i) for i in ids]
        if not ids:
            return []
        for i in ids:
            if not 0 <= i < len(self):
                raise IndexError(f"row {i} is outside the collection (0..{len(self) - 1})")
        picked = self._table.take(pa.array(ids, type=pa.int64())).to_pylist()
        out = []
        for row in picked:
            out.append(
                {
                    "id": row["id"],
                    "captions": row["captions"] or [],
                    "label": row["label"],
                    "source": row["source"],
                    "captions_generated": bool(row["captions_generated"]),
                    "metadata": {name: row[name] for name in self._extra_columns},
                }
            )
        return out

    def all_captions(self) -> list[list[str]]:
        """Every row's captions (for evaluation)."""
        return [c or [] for c in self._table.column("captions").to_pylist()]

    def all_labels(self) -> list[str | None]:
        """Every row's label (for evaluation)."""
        return self._table.column("label").to_pylist()

    def thumbnail(self, row_id: int) -> bytes:
        """The stored JPEG thumbnail of one row, read from its parquet row group only."""
        if not 0 <= row_id < len(self):
            raise IndexError(f"row {row_id} is outside the collection")
        position = int(np.searchsorted(self._group_starts, row_id, side="right") - 1)
        start, _, shard_no, group = self._row_groups[position]
        shard = pq.ParquetFile(self._shards[shard_no], metadata=self._footers[shard_no])
        column = shard.read_row_group(group, columns=["image"]).column("image")
        return column[row_id - start].as_py()["bytes"]

    def thumbnail_path(self, row_id: int, cache_dir: Path) -> Path:
        """A file holding the row's thumbnail, in the capped disk cache (rag.collection.thumbnails) so galleries stream files."""
        if not 0 <= row_id < len(self):
            raise IndexError(f"row {row_id} is outside the collection")
        return thumbnail_cache(cache_dir).path(self.fingerprint, row_id, self.thumbnail)

    @property
    def adapter_path(self) -> Path | None:
        """The tuned collection's adapter file (checksummed with the rest), or None for an untuned collection."""
        return self.directory / ADAPTER_FILE if self.manifest.model.get("adapter") else None

    @property
    def text_export(self) -> tuple[Path, dict[str, Any]] | None:
        """The shipped int8 text tower (verified file, export key from the manifest), or None when there is none
        usable: rag.models.onnx_text uses it when the key matches this process's."""
        key = self.manifest.build.get(TEXT_EXPORT_KEY)
        if TEXT_EXPORT_FILE not in self.manifest.files or TEXT_EXPORT_FILE in self.unusable or not isinstance(key, dict):
            return None
        return self.directory / TEXT_EXPORT_FILE, key

    @property
    def fingerprint(self) -> str:
        """A short id of this collection's content (the index checksum), for cache folders."""
        return self.manifest.files.get(INDEX_FILE, "unknown")[:16]

    def stored_vectors(self, ids: Sequence[int]) -> np.ndarray | None:
        """The indexed vectors of these rows, or None where the index type cannot give them back."""
        if not self.can_reconstruct:
            return None
        return np.asarray(self.index.reconstruct_batch(np.asarray(ids, dtype=np.int64)), dtype=np.float32)


SHARD_NAME = re.compile(r"^data/metadata-\d{5}\.parquet$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")


def check_listed_files(manifest: Manifest) -> None:
    """The manifest lists index.faiss and only files of the format (shards, the optional map.parquet), by relative
    paths inside the collection."""
    if not isinstance(manifest.files, dict):
        raise CollectionError(f"{MANIFEST} has no file list.")
    for relative, digest in manifest.files.items():
        path = PurePosixPath(str(relative))
        if path.is_absolute() or ".." in path.parts or "\\" in str(relative) or ":" in str(relative):
            raise CollectionError(f"{MANIFEST} lists a path outside the collection: {str(relative)[:80]!r}.")
        if relative not in (INDEX_FILE, MAP_FILE, ADAPTER_FILE, *OPTIONAL_FILES) and not SHARD_NAME.match(str(relative)):
            raise CollectionError(f"{MANIFEST} lists {str(relative)[:80]!r}, which is not a file of this format.")
        if not isinstance(digest, str) or not SHA256.match(digest):
            raise CollectionError(f"{MANIFEST} has no valid sha256 checksum for {relative}.")
    if INDEX_FILE not in manifest.files:
        raise CollectionError(f"{MANIFEST} does not list {INDEX_FILE} with its checksum.")
    if manifest.model.get("adapter") and ADAPTER_FILE not in manifest.files:
        raise CollectionError(f"{MANIFEST} names an embedding adapter but does not list {ADAPTER_FILE} with its checksum.")


def verify_files(directory: Path, manifest: Manifest, stamp_dir: Path | None = None,
                 optional: tuple[str, ...] = ()) -> list[str]:
    """Check every listed file's sha256; a stamp (path, size, mtime) lets an unchanged collection skip
    rehashing. A bad file raises, except the ``optional`` ones: those that are missing or corrupt are logged and
    returned."""
    stamp_path = None
    present = [rel for rel in manifest.files if rel not in optional or (directory / rel).is_file()]
    state = {rel: _file_state(directory / rel) for rel in present}
    if stamp_dir is not None:
        key = hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:24]
        stamp_path = Path(stamp_dir) / f"{key}.json"
        try:
            stamp = json.loads(stamp_path.read_text())
            if {k: stamp.get(k) for k in ("files", "state")} == {"files": manifest.files, "state": state}:
                return list(stamp.get("unusable", []))
        except (OSError, ValueError, AttributeError):
            pass
    unusable = [rel for rel in manifest.files if rel not in present]
    for relative in present:
        expected, actual = manifest.files[relative], sha256_file(directory / relative)
        if actual == expected:
            continue
        if relative in optional:
            log.warning("%s does not match its checksum in %s: it is not used", relative, MANIFEST)
            unusable.append(relative)
            continue
        raise CollectionError(
            f"{relative} does not match its checksum in {MANIFEST} (expected {expected[:12]}..., "
            f"found {actual[:12]}...): the file is corrupt or was changed after the build."
        )
    if stamp_path is not None:
        stamp_path.parent.mkdir(parents=True, exist_ok=True)
        stamp_path.write_text(json.dumps({"files": manifest.files, "state": state, "unusable": unusable}))
    return unusable


def _file_state(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]
