"""The collection's map file ``map.parquet`` (id, x, y): written at build, added to a built collection, read back.

The file is optional and listed with its sha256 in ``manifest.json`` like every other file, so the
loader verifies it (and format-1 loaders that predate maps still open the collection). How it was made
(method, seed, seconds) is recorded under ``manifest.build["map"]``.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rag.collection.reader import MANIFEST, MAP_FILE, Collection, Manifest, sha256_file
from rag.errors import CollectionError
from rag.explore.layout import DEFAULT_METHOD, DEFAULT_SEED, PCA_DIMS, compute_layout

MAP_SCHEMA = pa.schema([("id", pa.int64()), ("x", pa.float32()), ("y", pa.float32())])
ADD_MAP_HINT = "python index_build.py --add-map DIR_OR_REPO"


def write_map_file(path: Path, xy: np.ndarray) -> None:
    """Write an (n, 2) layout as ``id, x, y`` rows, atomically (temporary name, then rename)."""
    xy = np.asarray(xy, dtype=np.float32)
    table = pa.table({"id": np.arange(len(xy), dtype=np.int64), "x": xy[:, 0], "y": xy[:, 1]}, schema=MAP_SCHEMA)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)


def store_map(path: Path, vectors: np.ndarray, method: str = DEFAULT_METHOD, seed: int = DEFAULT_SEED,
              progress: bool = True, should_stop: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Compute the layout of ``vectors`` and write it to ``path``; returns the record for ``manifest.build``."""
    started = time.perf_counter()
    xy = compute_layout(vectors, method=method, seed=seed, progress=progress, should_stop=should_stop)
    write_map_file(Path(path), xy)
    return {"file": MAP_FILE, "method": method, "seed": seed, "pca_dims": PCA_DIMS, "rows": len(xy),
            "seconds": round(time.perf_counter() - started, 2)}


def write_manifest(directory: Path, manifest: Manifest) -> None:
    """Replace ``manifest.json`` atomically."""
    tmp = Path(directory) / (MANIFEST + ".tmp")
    tmp.write_text(manifest.to_json(), encoding="utf-8")
    os.replace(tmp, Path(directory) / MANIFEST)


def collection_vectors(collection: Collection) -> np.ndarray:
    """All vectors of a loaded collection, read back from its index (no re-encoding)."""
    vectors = collection.stored_vectors(np.arange(len(collection), dtype=np.int64))
    if vectors is None:
        raise CollectionError(
            f"The vectors cannot be read back from this index ({collection.index_type}); "
            "rebuild the collection (the map is computed at build time by default)."
        )
    return vectors


def add_map(directory: str | Path, method: str = DEFAULT_METHOD, seed: int = DEFAULT_SEED,
            progress: bool = True) -> Manifest:
    """Compute a map from a built collection's stored vectors (no re-encoding) and list it in its manifest.

    Every step leaves a loadable collection: an old map is first dropped from the manifest, then the new
    file is renamed into place, then the manifest listing it (with its checksum) replaces the old one.
    """
    directory = Path(directory)
    collection = Collection.open(directory, verify_checksums=True)
    aside = directory / (MAP_FILE + ".new")  # a listed map stays valid until the manifest lets go of it
    record = store_map(aside, collection_vectors(collection), method, seed, progress)
    manifest = collection.manifest
    if MAP_FILE in manifest.files:
        manifest.files.pop(MAP_FILE)
        manifest.build.pop("map", None)
        write_manifest(directory, manifest)
    os.replace(aside, directory / MAP_FILE)
    manifest.files[MAP_FILE] = sha256_file(directory / MAP_FILE)
    manifest.build["map"] = record
    write_manifest(directory, manifest)
    return manifest


def local_copy(source_dir: Path, out: Path) -> Path:
    """Copy a (downloaded) collection into a folder of our own, following the HF cache's symlinks."""
    if out.exists():
        raise CollectionError(f"{out} already exists; choose a new folder for the local copy.")
    shutil.copytree(source_dir, out, symlinks=False, ignore=shutil.ignore_patterns(".cache", ".huggingface"))
    return out


def read_map(collection: Collection) -> np.ndarray | None:
    """The (n, 2) float32 map of a loaded collection, or None when it has none; CollectionError if it doesn't fit."""
    if MAP_FILE not in collection.manifest.files:
        return None
    try:
        table = pq.read_table(collection.directory / MAP_FILE, columns=["id", "x", "y"])
    except (OSError, pa.ArrowException, KeyError) as exc:
        raise CollectionError(f"{MAP_FILE} cannot be read ({exc}); recompute it with {ADD_MAP_HINT}.") from exc
    ids = table.column("id").to_numpy()
    if len(ids) != len(collection) or not np.array_equal(ids, np.arange(len(collection))):
        raise CollectionError(
            f"{MAP_FILE} has {len(ids)} points but the collection has {len(collection)} rows; "
            f"recompute it with {ADD_MAP_HINT}."
        )
    return np.column_stack([table.column("x").to_numpy(), table.column("y").to_numpy()]).astype(np.float32)


def add_map_to(spec: str, out: str | Path | None = None, revision: str | None = None, token: str | None = None,
               method: str = DEFAULT_METHOD, seed: int = DEFAULT_SEED, progress: bool = True) -> Path:
    """``index_build.py --add-map``: a local folder gets its map in place (or in a copy at ``out``); a Hub
    repo is downloaded and copied to ``out`` first, never changed in the HF cache. Returns the folder."""
    from rag.collection.hub import looks_like_repo_id, resolve_collection

    local = Path(spec).expanduser()
    if not local.is_dir() and looks_like_repo_id(spec) and not out:
        raise CollectionError(f"{spec} is a Hub repo: give --out DIR for the local copy that gets the map "
                              "(then --push-to-hub to publish it).")
    source = resolve_collection(spec, revision, token)
    target = local_copy(source, Path(out)) if out else source
    add_map(target, method=method, seed=seed, progress=progress)
    return target
