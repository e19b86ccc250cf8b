"""The state of an unfinished build in ``<out>.partial``: settings fingerprint, committed chunks, final checks.

Every state file is written to a temporary name and renamed, so a crash leaves the old or the new file.
A partial build that cannot be read anyway (a disk full, a hand edit) is set aside and the build starts over.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow.parquet as pq

from rag.ingest.paths import mark, marker_role, partial_dir, recover, set_aside_corrupt, write_json_atomic
from rag.collection.reader import DATA_DIR, data_files
from rag.collection.writer import rows_to_table, write_table
from rag.errors import CollectionError, ResumeMismatch

log = logging.getLogger(__name__)

CHUNKS_DIR = "chunks"
BUILD_STATE = "build.json"


def _shard_name(number: int) -> str:
    return f"metadata-{number:05d}.parquet"


class Chunks:
    """Committed chunks of a partial build: vectors (.npy), a metadata shard and a json record each."""

    def __init__(self, partial: Path) -> None:
        self.partial = partial
        self.folder = partial / CHUNKS_DIR
        self.records: list[dict[str, Any]] = []
        for number, path in enumerate(sorted(self.folder.glob("*.json"))):
            record = json.loads(path.read_text())
            if path.stem != f"{number:05d}" or not isinstance(record, dict) or not isinstance(record.get("rows"), int):
                raise ValueError(f"chunk record {path.name} is not what the builder writes")
            self._check_files(number, record)
            self.records.append(record)
        self._drop_uncommitted()

    def _check_files(self, number: int, record: dict[str, Any]) -> None:
        """A committed chunk's vectors and shard exist and hold its rows (headers only: cheap); ValueError if not."""
        vectors = np.load(self.folder / f"{number:05d}.npy", mmap_mode="r")
        shard = self.partial / DATA_DIR / _shard_name(number)
        rows = pq.ParquetFile(shard).metadata.num_rows if record["rows"] else 0
        if len(vectors) != record["rows"] or rows != record["rows"]:
            raise ValueError(f"chunk {number} holds {len(vectors)} vectors and {rows} rows, its record says {record['rows']}")

    def _drop_uncommitted(self) -> None:
        """Delete files of a chunk whose record was never written (the build stopped mid-commit)."""
        committed = len(self.records)
        leftovers = [
            p for p in self.folder.glob("*.npy") if not p.stem.isdigit() or int(p.stem) >= committed
        ] if self.folder.is_dir() else []
        for shard in data_files(self.partial):
            if shard.name not in self.expected_shards:
                leftovers.append(shard)
        for path in leftovers:
            log.info("removing %s of an uncommitted chunk", path.name)
            path.unlink()

    @property
    def expected_shards(self) -> set[str]:
        """Names of the metadata shards the committed chunks wrote."""
        return {_shard_name(n) for n, r in enumerate(self.records) if r["rows"]}

    @property
    def rows(self) -> int:
        return sum(r["rows"] for r in self.records)

    @property
    def source_end(self) -> int:
        return self.records[-1]["source_end"] if self.records else 0

    def commit(self, vectors: np.ndarray, rows: list[dict[str, Any]], skipped: list, source_end: int,
               extra_columns: list[str], generated: int) -> None:
        """Write one chunk's vectors and shard, then its record (the chunk exists once the record does)."""
        number = len(self.records)
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.partial / DATA_DIR).mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f"{number:05d}.tmp.npy"
        np.save(tmp, vectors)
        os.replace(tmp, self.folder / f"{number:05d}.npy")
        if rows:
            write_table(rows_to_table(rows, self.rows, extra_columns), self.partial / DATA_DIR / _shard_name(number))
        record = {"rows": len(rows), "source_end": source_end, "skipped": skipped, "generated": generated}
        write_json_atomic(self.folder / f"{number:05d}.json", record)
        self.records.append(record)

    def vectors(self, dim: int) -> np.ndarray:
        """All committed vectors in row order."""
        parts = [np.load(self.folder / f"{n:05d}.npy") for n in range(len(self.records))]
        parts = [p for p in parts if len(p)]
        return np.concatenate(parts) if parts else np.zeros((0, dim), dtype=np.float32)


def prepare_partial(out: Path, fingerprint: dict[str, Any], resume: bool, check: Callable[[Path], Any]) -> Path:
    """The marked ``<out>.partial`` to build in: resumed, restarted, or set aside when unreadable.

    ``check(partial)`` reads what an engine saved (local chunks, Ray parts) and raises OSError/ValueError
    when it is unreadable; both engines share every other rule here.
    """
    recover(out)
    partial = partial_dir(out)
    if partial.exists() and marker_role(partial) == "old":
        shutil.rmtree(partial)  # the replaced collection, left by a swap that stopped before deleting it
    if partial.exists():
        try:
            state = partial / BUILD_STATE
            previous = json.loads(state.read_text()) if state.exists() else None
            check(partial)
        except (OSError, ValueError, KeyError) as exc:
            set_aside_corrupt(partial, f"{exc.__class__.__name__}: {exc}")
        else:
            if not resume:
                log.warning("removing the unfinished build %s (pass --resume to continue it instead)", partial.name)
                shutil.rmtree(partial)
            elif previous != fingerprint:
                engine = (previous or {}).get("engine", "local") if isinstance(previous, dict) else "local"
                raise ResumeMismatch(
                    f"Cannot resume: {partial.name} was started by the {engine} engine or with different settings; "
                    "resume it with the same engine and settings, or run without --resume to start over."
                )
    mark(partial, "partial")
    write_json_atomic(partial / BUILD_STATE, fingerprint)
    return partial


def open_partial(out: Path, fingerprint: dict[str, Any], resume: bool) -> Chunks:
    """The local builder's partial build and its committed chunks."""
    return Chunks(prepare_partial(out, fingerprint, resume, check=Chunks))


def check_complete(chunks: Chunks, vectors: np.ndarray) -> None:
    """Before the final rename: vectors, committed chunk rows and parquet rows agree, and no stray shard is in."""
    found = {p.name for p in data_files(chunks.partial)}
    if found != chunks.expected_shards:
        stray = sorted(found - chunks.expected_shards) or sorted(chunks.expected_shards - found)
        raise CollectionError(
            f"The unfinished build holds metadata files its chunks did not write or lacks some ({', '.join(stray[:3])}); "
            "run again without --resume."
        )
    parquet_rows = sum(pq.ParquetFile(p).metadata.num_rows for p in data_files(chunks.partial))
    if not len(vectors) == chunks.rows == parquet_rows:
        raise CollectionError(
            f"The unfinished build is inconsistent: {len(vectors)} vectors, {chunks.rows} committed rows, "
            f"{parquet_rows} metadata rows; run again without --resume."
        )
