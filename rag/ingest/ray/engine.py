"""Build a collection on Ray (``index_build.py --engine ray``): same sources, format and manifest as rag.ingest.builder.

Ray Data pipeline, streamed in source order (``preserve_order``): ranges of source positions -> read and
decode in Ray tasks -> CLIP forward in a fixed pool of model replicas (one actor each, ``--workers``, each
with ``--num-gpus``) -> parts (metadata parquet + vectors) written by Ray tasks. The driver then turns the
parts into shards, gathers the vectors by row id into the FAISS index (trained indexes: trained on a sample,
then filled part by part so it never holds all vectors plus the index) and seals the collection with the
same writer as the local builder. The Space never imports this module: Ray is a build-only requirement.
"""

from __future__ import annotations

import copy
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import ray

from rag.ingest.builder import MAX_SKIPPED_LISTED, source_folder, write_build_map
from rag.ingest.paths import check_output, move_into_place
from rag.ingest.partial import BUILD_STATE, prepare_partial
from rag.collection.reader import Manifest
from rag.collection.writer import seal_collection
from rag.errors import CollectionError
from rag.search.index import TRAIN_SAMPLE_MAX, apply_search_params, auto_factory, build_index, default_search_params
from rag.ingest.ray.parts import PARTS_DIR, check_tiling, gather_rows, missing_ranges, part_vectors, place_shard, read_records, shard_plan
from rag.ingest.ray.stages import EmbedReplica, read_and_decode, write_parts
from rag.ingest.sources import Source

log = logging.getLogger(__name__)

LOCAL = "local"
READ_ROWS = 256  # source positions per read task


@dataclass
class RayOptions:
    """Knobs of a Ray build: the local builder's plus where Ray runs and how many model replicas."""

    model: str
    revision: str | None = None
    device: str | None = None
    token: str | None = None
    index_factory: str = "Flat"
    batch_size: int = 32
    chunk_rows: int = 1024
    progress: bool = True
    caption_missing: bool = False
    captioner_model: str | None = None
    address: str | None = None
    workers: int = 1
    num_gpus: float = 0.0
    map: bool = True  # --map / --no-map: the Explore layout, from all vectors gathered on the driver
    map_seed: int = 42


def connect(address: str | None) -> bool:
    """Start a local Ray (``None``/``local``) or join a cluster (``auto``, ``ray://host:port``); reuse one already up.

    Returns whether this call started Ray (so the builder shuts down only what it started). On a cluster the
    ``rag`` package is shipped to the workers with the job (also locally, whatever their working directory);
    the source's files must be readable from every node.
    """
    if ray.is_initialized():
        return False
    runtime_env = {"py_modules": [str(Path(__file__).resolve().parents[2])]}  # the rag package (this is rag/ingest/ray/)
    if not address or address == LOCAL:
        start_local(include_dashboard=False, runtime_env=runtime_env)
    else:
        try:
            ray.init(address=address, runtime_env=runtime_env)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise CollectionError(f"Could not connect to the Ray cluster at {address!r}: {exc}") from exc
    return True


def start_local(attempts: int = 3, **init_kwargs: Any) -> None:
    """``ray.init`` a new local Ray, retried: on a loaded machine its raylet can miss Ray's fixed 30 s start-up wait."""
    for attempt in range(1, attempts + 1):
        try:
            ray.init(address=LOCAL, **init_kwargs)
            return
        except Exception as exc:  # Ray raises a bare Exception for this timeout
            if "timed out during startup" not in str(exc) or attempt == attempts:
                raise
            log.warning("local Ray did not start in time (attempt %d of %d); retrying", attempt, attempts)
            ray.shutdown()


def _resources(workers: int, num_gpus: float) -> tuple[float, float, int]:
    """(CPUs per model replica, CPUs per read/write task, torch threads per replica) for this cluster.

    On CPU the replicas reserve at most half of the cluster's CPUs between them, and the read/write tasks ask
    for a quarter CPU where few are left, so Ray Data can always schedule a decode task beside the replicas
    (asking for more left a 2-CPU Ray waiting forever for a free CPU).
    """
    total = float(ray.cluster_resources().get("CPU", 1.0))
    if num_gpus > 0:
        return 1.0, 1.0, 0
    replica = round(min(1.0, 0.5 * total / workers), 2)
    task = 1.0 if total - replica * workers >= 4 else 0.25
    return replica, task, max(1, int(total // workers))


def _read_rows(total: int, options: RayOptions) -> int:
    """Positions per read task: enough tasks to keep every replica fed, at most READ_ROWS each."""
    return int(min(READ_ROWS, max(options.batch_size, -(-total // (4 * options.workers)))))


def _fingerprint(source: Source, options: RayOptions) -> dict[str, Any]:
    return {
        "engine": "ray",
        "source": source.manifest_entry(),
        "model": {"id": options.model, "revision": options.revision},
        "caption_missing": bool(options.caption_missing),
        "captioner": options.captioner_model if options.caption_missing else None,
    }


def _shippable(source: Source) -> Source:
    """A copy of the source for the workers, without what the driver owns (an archive's temporary folder)."""
    clone = copy.copy(source)
    for name, value in list(vars(clone).items()):
        if isinstance(value, tempfile.TemporaryDirectory):
            setattr(clone, name, None)  # unpickled in a worker, it would delete the folder when collected
    return clone


def _run_pipeline(source: Source, partial: Path, options: RayOptions, ranges: list[dict[str, int]]) -> None:
    """Run the Ray Data pipeline over the missing ranges; parts land in ``partial/parts`` as it streams."""
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = options.progress
    replica_cpus, task_cpus, threads = _resources(options.workers, options.num_gpus)
    captioner = options.captioner_model if options.caption_missing else None
    dataset = (
        ray.data.from_items(ranges, override_num_blocks=len(ranges))
        .map_batches(read_and_decode, batch_size=1, num_cpus=task_cpus,
                     fn_kwargs={"source_ref": [ray.put(_shippable(source))], "batch_size": options.batch_size})
        .map_batches(EmbedReplica, batch_size=options.batch_size, num_cpus=replica_cpus,
                     num_gpus=options.num_gpus or None, compute=ray.data.ActorPoolStrategy(size=options.workers),
                     fn_constructor_kwargs={"model": options.model, "revision": options.revision,
                                            "device": options.device, "token": options.token,
                                            "threads": threads, "captioner_model": captioner})
        .map_batches(write_parts, batch_size=options.chunk_rows, num_cpus=task_cpus,
                     fn_kwargs={"partial": str(partial), "extra_columns": source.extra_columns})
    )
    for _ in dataset.iter_batches(batch_size=None):
        pass  # each batch is the start positions of parts already on disk


def build_collection_ray(source: Source, out_dir: str | Path, options: RayOptions, resume: bool = False,
                         overwrite: bool = False) -> Manifest:
    """Encode every usable image of ``source`` on Ray and write a complete collection at ``out_dir``.

    The same output rules as rag.ingest.builder: an ``out_dir`` the builder may not write is refused (UnsafeOutput).
    """
    if options.workers < 1:
        raise CollectionError("--workers must be at least 1 model replica.")
    out = Path(out_dir).expanduser().absolute()
    check_output(out, source_folder(source), overwrite)
    partial = prepare_partial(out, _fingerprint(source, options), resume, check=read_records)
    started = time.perf_counter()
    total = len(source)
    ranges = missing_ranges(read_records(partial), total, _read_rows(total, options))
    todo = sum(r["end"] - r["start"] for r in ranges)
    if todo < total:
        log.info("resuming: %d of %d source items still to encode, the rest are in saved parts", todo, total)
    started_ray = connect(options.address)
    try:
        if ranges:
            _run_pipeline(source, partial, options, ranges)
        return _finish(source, options, partial, out, started)
    finally:
        if started_ray:
            ray.shutdown()


def _place_shards(partial: Path, records: list[dict[str, Any]]) -> int:
    """Parts -> ``data/metadata-*.parquet`` in source order; rewrites (ids shifted by skipped images) run as Ray tasks."""
    plan = shard_plan(partial, records)
    place = ray.remote(num_cpus=0.5)(place_shard)
    ray.get([place.remote(*step) for step in plan if step[3]])
    for step in plan:
        if not step[3]:
            place_shard(*step)
    return len(plan)


def _index(partial: Path, records: list[dict[str, Any]], rows: int, dim: int, factory: str) -> faiss.Index:
    """HNSW from all vectors as today; Flat and trained indexes (IVF...) filled part by part, trained on a sample."""
    if "HNSW" in factory:
        return build_index(np.concatenate(list(part_vectors(partial, records))), factory)
    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise CollectionError(f"FAISS does not understand the index factory {factory!r}: {exc}") from exc
    if not index.is_trained:
        rng = np.random.default_rng(0)  # the same sample rag.search.index.build_index draws
        ids = np.sort(rng.choice(rows, size=min(rows, TRAIN_SAMPLE_MAX), replace=False))
        index.train(gather_rows(partial, records, ids))
    for vectors in part_vectors(partial, records):
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    apply_search_params(index, default_search_params(factory))
    return index


def _finish(source: Source, options: RayOptions, partial: Path, out: Path, started: float) -> Manifest:
    """Shards, index, manifest and card, then the collection moves into place in one rename."""
    records = read_records(partial)
    check_tiling(records, len(source))
    skipped = [s for r in records for s in r["skipped"]]
    rows = sum(r["rows"] for r in records)
    if rows == 0:
        shutil.rmtree(partial, ignore_errors=True)
        raise CollectionError(
            f"No usable image in the source ({len(skipped)} unreadable of {len(source)}); nothing was written."
        )
    dim = int(next(part_vectors(partial, records, mmap=True)).shape[1])
    factory = auto_factory(rows, dim) if options.index_factory == "auto" else options.index_factory
    index = _index(partial, records, rows, dim, factory)
    shards = _place_shards(partial, records)
    generated = sum(r["generated"] for r in records)
    caption_source = source.caption_source
    if generated:
        caption_source += f"; missing captions generated by {options.captioner_model}"
    seconds = round(time.perf_counter() - started, 2)
    manifest = Manifest(
        model={"id": options.model, "revision": options.revision}, dim=dim, rows=rows, index_factory=factory,
        search_params=default_search_params(factory), source=source.manifest_entry(), caption_source=caption_source,
        generated_captions=generated, columns=source.extra_columns,
        skipped={"count": len(skipped), "items": skipped[:MAX_SKIPPED_LISTED]},
        build={"time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "seconds": seconds,
               "batch_size": options.batch_size, "engine": "ray", "workers": options.workers,
               "num_gpus": options.num_gpus},
    )
    write_build_map(partial, lambda: np.concatenate(list(part_vectors(partial, records, mmap=True))), options, manifest)
    seal_collection(partial, index, manifest)
    shutil.rmtree(partial / PARTS_DIR)
    (partial / BUILD_STATE).unlink()
    move_into_place(partial, out)
    log.info("ray build: %d rows, %d skipped, %d shards, %d replica(s), %.1f images/s", rows, len(skipped), shards,
             options.workers, (rows + len(skipped)) / max(seconds, 1e-9))
    return manifest
