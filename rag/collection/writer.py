"""Write a collection (format 1): metadata shards with the HF ``datasets`` Image feature, index, manifest, card.

The builder writes shards as it goes (``rows_to_table`` + ``write_table``) and seals the folder at the end
(``seal_collection``); rag.collection.reader reads what this writes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import datasets
import pyarrow as pa
import pyarrow.parquet as pq

from rag.collection.reader import (ADAPTER_FILE, CARD_FILE, DATA_DIR, INDEX_FILE, MANIFEST, MAP_FILE, ROW_GROUP_SIZE,
                                   TEXT_EXPORT_FILE, Manifest, data_files, sha256_file)
from rag.search.index import index_type_name, save_index


def metadata_schema(extra_columns: Sequence[str]) -> pa.Schema:
    """The parquet schema, with the HF ``datasets`` features so the Hub viewer shows ``image`` as images."""
    features = datasets.Features(
        {
            "id": datasets.Value("int64"),
            "image": datasets.Image(),
            "captions": datasets.List(datasets.Value("string")),
            "label": datasets.Value("string"),
            "source": datasets.Value("string"),
            "captions_generated": datasets.Value("bool"),
            **{name: datasets.Value("string") for name in extra_columns},
        }
    )
    return features.arrow_schema


def rows_to_table(rows: Sequence[dict[str, Any]], first_id: int, extra_columns: Sequence[str]) -> pa.Table:
    """Turn builder rows (thumbnail bytes, captions, label, source, extras) into a table with ids from ``first_id``."""
    schema = metadata_schema(extra_columns)
    columns: dict[str, list[Any]] = {
        "id": list(range(first_id, first_id + len(rows))),
        "image": [{"bytes": row["thumbnail"], "path": None} for row in rows],
        "captions": [list(row.get("captions") or []) for row in rows],
        "label": [row.get("label") for row in rows],
        "source": [str(row["source"]) for row in rows],
        "captions_generated": [bool(row.get("captions_generated", False)) for row in rows],
    }
    for name in extra_columns:
        columns[name] = [_as_text(row.get("extra", {}).get(name)) for row in rows]
    return pa.Table.from_pydict(columns, schema=schema)


def _as_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float, bool)):
        return str(value)
    return json.dumps(value, ensure_ascii=False, default=str)


def write_table(table: pa.Table, path: Path) -> None:
    """Write one metadata shard atomically (temporary name, then rename)."""
    tmp = path.with_suffix(".parquet.tmp")
    pq.write_table(table, tmp, row_group_size=ROW_GROUP_SIZE, compression="zstd")
    os.replace(tmp, path)


def dataset_card(manifest: Manifest) -> str:
    """The dataset repo's README: YAML ``configs`` pointing at the parquet files, then how it was built."""
    source = manifest.source
    source_text = source.get("name", "?")
    if source.get("split"):
        source_text += f" (split `{source['split']}`" + (f", config `{source['config']}`" if source.get("config") else "") + ")"
    return f"""---
configs:
- config_name: default
  data_files:
  - split: train
    path: {DATA_DIR}/metadata-*.parquet
tags:
- image-retrieval
- clip
- faiss
---
# Image collection for multimodal RAG

A searchable image collection built with `index_build.py` of the multimodal RAG Space.

| | |
| --- | --- |
| rows | {manifest.rows} |
| embedding model | `{manifest.model_id}` (revision `{manifest.model.get('revision') or 'main'}`), {manifest.dim}-d, L2-normalised |
| index | `{manifest.index_factory}` ({manifest.index_type}), inner product = cosine similarity |
| source | {source.get('kind', '?')}: {source_text} |
| captions | {manifest.caption_source}; {manifest.generated_captions} rows captioned by a model |
| skipped inputs | {manifest.skipped.get('count', 0)} |
| built | {manifest.build.get('time', '?')} |

Files: `manifest.json` (format version {manifest.format_version}, checksums), `index.faiss` (vector *i* is
row *i*), `data/metadata-*.parquet` with `id`, `image` (thumbnail), `captions`, `label`, `source`,
`captions_generated` and passed-through columns ({', '.join(manifest.columns) or 'none'}).

Load the metadata with `datasets.load_dataset("<this repo>")`; serve it by setting `RAG_COLLECTION` on the Space.
"""


def seal_collection(directory: Path, index: Any, manifest: Manifest) -> Manifest:
    """Write the index, checksums, manifest and dataset card next to the metadata shards already in place."""
    save_index(index, directory / INDEX_FILE)
    manifest.index_type = index_type_name(index)
    names = [INDEX_FILE] + [f"{DATA_DIR}/{p.name}" for p in data_files(directory)]
    names += [name for name in (MAP_FILE, ADAPTER_FILE, TEXT_EXPORT_FILE) if (directory / name).is_file()]
    manifest.files = {name: sha256_file(directory / name) for name in names}
    (directory / CARD_FILE).write_text(dataset_card(manifest), encoding="utf-8")
    (directory / MANIFEST).write_text(manifest.to_json(), encoding="utf-8")
    return manifest
