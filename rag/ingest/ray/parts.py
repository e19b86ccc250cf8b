"""Parts of a Ray build: one contiguous range of source positions each (metadata parquet + vectors + record).

Parts are written in parallel by Ray tasks inside ``<out>.partial/parts/``; a part exists once its json
record does, so an interrupted build resumes by reading only the ranges no record covers. At the end the
parts become the collection's ``data/metadata-*.parquet`` shards in source order: a part whose row ids are
already right (no image skipped before it) is moved, the others are rewritten with shifted ids.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rag.collection.reader import DATA_DIR, ROW_GROUP_SIZE
from rag.collection.writer import rows_to_table, write_table
from rag.errors import CollectionError

PARTS_DIR = "parts"


def _stem(partial: Path, start: int) -> Path:
    return partial / PARTS_DIR / f"{start:012d}"


def write_part(partial: Path, start: int, end: int, rows: list[dict[str, Any]], vectors: np.ndarray,
               skipped: list[dict[str, str]], extra_columns: Sequence[str]) -> dict[str, Any]:
    """Write the part for positions [start, end): shard (ids counted from ``start``), vectors, then its record."""
    stem = _stem(partial, start)
    stem.parent.mkdir(parents=True, exist_ok=True)
    if rows:
        write_table(rows_to_table(rows, start, extra_columns), stem.with_suffix(".parquet"))
    tmp = stem.with_suffix(".tmp.npy")
    np.save(tmp, np.ascontiguousarray(vectors, dtype=np.float32))
    os.replace(tmp, stem.with_suffix(".npy"))
    generated = sum(1 for row in rows if row.get("captions_generated"))
    record = {"start": start, "end": end, "rows": len(rows), "first_id": start, "skipped": skipped,
              "generated": generated}
    tmp_json = stem.with_suffix(".json.tmp")
    tmp_json.write_text(json.dumps(record))
    os.replace(tmp_json, stem.with_suffix(".json"))  # the part exists once this file does
    return record


def read_records(partial: Path) -> list[dict[str, Any]]:
    """The records of every finished part, in source order."""
    folder = partial / PARTS_DIR
    records = [json.loads(p.read_text()) for p in folder.glob("*.json")] if folder.is_dir() else []
    return sorted(records, key=lambda r: r["start"])


def missing_ranges(records: Sequence[dict[str, Any]], total: int, read_rows: int) -> list[dict[str, int]]:
    """Position ranges no part covers yet, cut into read units of at most ``read_rows`` positions."""
    ranges, cursor = [], 0
    for record in [*records, {"start": total, "end": total}]:
        for start in range(cursor, record["start"], read_rows):
            ranges.append({"start": start, "end": min(start + read_rows, record["start"])})
        cursor = max(cursor, record["end"])
    return ranges


def check_tiling(records: Sequence[dict[str, Any]], total: int) -> None:
    """Raise unless the parts cover positions 0..total-1 exactly once (else rows would be lost or repeated)."""
    cursor = 0
    for record in records:
        if record["start"] != cursor:
            raise CollectionError(
                f"The Ray build's parts do not line up at source position {cursor} (next part starts at "
                f"{record['start']}); delete the .partial folder and build again."
            )
        cursor = record["end"]
    if cursor != total:
        raise CollectionError(f"The Ray build covered {cursor} of {total} source items; run it again with --resume.")


def shard_plan(partial: Path, records: Sequence[dict[str, Any]]) -> list[tuple[str, str, int, bool]]:
    """(part parquet, shard path, first row id, needs rewrite) per part with rows, shards numbered in order."""
    with_rows = [r for r in records if r["rows"]]
    width = max(5, len(str(len(with_rows))))
    plan, first_id = [], 0
    for number, record in enumerate(with_rows):
        part = _stem(partial, record["start"]).with_suffix(".parquet")
        shard = partial / DATA_DIR / f"metadata-{number:0{width}d}.parquet"
        plan.append((str(part), str(shard), first_id, first_id != record["first_id"]))
        first_id += record["rows"]
    return plan


def place_shard(part: str, shard: str, first_id: int, rewrite: bool) -> None:
    """Move a part into place as a shard, rewriting its ``id`` column from ``first_id`` when it is off."""
    Path(shard).parent.mkdir(parents=True, exist_ok=True)
    if not rewrite:
        os.replace(part, shard)
        return
    table = pq.read_table(part)
    ids = pa.array(np.arange(first_id, first_id + table.num_rows, dtype=np.int64))
    table = table.set_column(table.schema.get_field_index("id"), table.schema.field("id"), ids)
    tmp = Path(shard).with_suffix(".parquet.tmp")
    pq.write_table(table, tmp, row_group_size=ROW_GROUP_SIZE, compression="zstd")
    os.replace(tmp, shard)
    os.remove(part)


def part_vectors(partial: Path, records: Sequence[dict[str, Any]], mmap: bool = False) -> Iterator[np.ndarray]:
    """Each part's vectors in row order (memory-mapped on request), skipping parts without rows."""
    for record in records:
        if record["rows"]:
            yield np.load(_stem(partial, record["start"]).with_suffix(".npy"), mmap_mode="r" if mmap else None)


def gather_rows(partial: Path, records: Sequence[dict[str, Any]], ids: np.ndarray) -> np.ndarray:
    """Vectors of the given sorted row ids, read part by part from memory-mapped files."""
    out, first = [], 0
    for vectors in part_vectors(partial, records, mmap=True):
        lo, hi = np.searchsorted(ids, [first, first + len(vectors)])
        if hi > lo:
            out.append(np.asarray(vectors[ids[lo:hi] - first], dtype=np.float32))
        first += len(vectors)
    return np.concatenate(out)
