"""Write the tuned collection DST: SRC's rows and thumbnails, the adapter file, and a manifest that names both.

DST is a complete collection of the same format. With the text side tuned only, the images' vectors do not move,
so SRC's index (and map) are copied byte for byte; when the image side moves too, every stored vector goes through
the image adapter and the index (same factory) and map are rebuilt. Written the builder's way (rag.ingest.paths):
into ``DST.partial``, opened and verified there, then moved into place in one step; SRC is only read.
"""

from __future__ import annotations

import copy
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from rag.collection.reader import (ADAPTER_FILE, CARD_FILE, DATA_DIR, INDEX_FILE, MANIFEST, MAP_FILE, TEXT_EXPORT_FILE,
                                   Collection, Manifest, data_files, sha256_file)
from rag.collection.writer import dataset_card
from rag.ingest.paths import check_output, mark, move_into_place, partial_dir
from rag.models.adapter import ResidualAdapter, save_adapters
from rag.search.index import build_index, index_type_name, save_index


def _copy_rows(source: Collection, partial: Path) -> list[str]:
    """Copy SRC's metadata shards (rows, captions, thumbnails) into the new folder; returns their relative paths."""
    (partial / DATA_DIR).mkdir(parents=True, exist_ok=True)
    names = []
    for shard in data_files(source.directory):
        shutil.copyfile(shard, partial / DATA_DIR / shard.name)
        names.append(f"{DATA_DIR}/{shard.name}")
    if TEXT_EXPORT_FILE in source.manifest.files:  # the base text tower's int8 export still applies under an adapter
        shutil.copyfile(source.directory / TEXT_EXPORT_FILE, partial / TEXT_EXPORT_FILE)
        names.append(TEXT_EXPORT_FILE)
    return names


def _write_vectors(source: Collection, partial: Path, manifest: Manifest, image_vectors: np.ndarray | None) -> list[str]:
    """The index (and map): SRC's own files when the images did not move, else rebuilt from the adapted vectors."""
    names = [INDEX_FILE]
    has_map = MAP_FILE in source.manifest.files
    if image_vectors is None:
        shutil.copyfile(source.directory / INDEX_FILE, partial / INDEX_FILE)
        if has_map:
            shutil.copyfile(source.directory / MAP_FILE, partial / MAP_FILE)
            names.append(MAP_FILE)
        return names
    index = build_index(image_vectors, manifest.index_factory)
    save_index(index, partial / INDEX_FILE)
    manifest.index_type = index_type_name(index)
    manifest.build.pop("map", None)
    if has_map:
        from rag.explore.map_file import store_map

        seed = int((source.manifest.build.get("map") or {}).get("seed", 42))
        manifest.build["map"] = store_map(partial / MAP_FILE, image_vectors, seed=seed, progress=False)
        names.append(MAP_FILE)
    return names


def tuned_card(manifest: Manifest, table: str) -> str:
    """The dataset card of SRC plus what tuning did and the held-out before/after table."""
    record = manifest.build.get("finetune", {})
    adapter = manifest.model.get("adapter", {})
    return dataset_card(manifest) + f"""
## Tuned embedding space

Tuned on its own captions with `python -m rag.finetune` (method `{record.get('method')}`: a residual adapter on the
frozen `{manifest.model_id}` {' and '.join(adapter.get('sides', []))} embeddings, file `{ADAPTER_FILE}`), from
`{record.get('source', {}).get('collection')}`. Held-out rows ({len(record.get('heldout', {}).get('rows', []))}, by
image, never trained on), before → after:

{table}
"""


def write_tuned(source: Collection, out: Path, adapters: dict[str, ResidualAdapter], adapter_info: dict[str, Any],
                record: dict[str, Any], table: str, image_vectors: np.ndarray | None, overwrite: bool = False) -> Manifest:
    """Write DST at ``out`` (refused when it would touch SRC or a folder that is not ours); returns its manifest."""
    out = Path(out).expanduser()
    check_output(out, source.directory, overwrite)
    partial = partial_dir(out.resolve())
    if partial.exists():
        shutil.rmtree(partial)  # marked ours (check_output refused it otherwise): a leftover of an interrupted run
    mark(partial, "partial")
    manifest = copy.deepcopy(source.manifest)
    manifest.model["adapter"] = adapter_info
    if adapter_info.get("text_model"):
        manifest.model["text_model"] = adapter_info["text_model"]
    manifest.build["finetune"] = record
    manifest.build["time"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    names = _write_vectors(source, partial, manifest, image_vectors) + _copy_rows(source, partial)
    save_adapters(partial / ADAPTER_FILE, adapters, {"sides": ",".join(adapters), "method": str(record.get("method"))})
    names.append(ADAPTER_FILE)
    manifest.files = {name: sha256_file(partial / name) for name in names}
    (partial / CARD_FILE).write_text(tuned_card(manifest, table), encoding="utf-8")
    (partial / MANIFEST).write_text(manifest.to_json(), encoding="utf-8")
    Collection.open(partial)  # never move into place a collection that would not load
    move_into_place(partial, out.resolve())
    return manifest
