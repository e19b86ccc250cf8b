"""Build a collection: source items -> (decode in threads) -> embeddings -> parquet + FAISS, atomically.

Reader -> mapper -> writer, as in clip-retrieval: worker threads decode, thumbnail and preprocess the next
batches while the main thread runs the model on the current one. Work is committed in chunks inside
``<out>.partial/`` so an interrupted build can ``resume`` without encoding those rows again; the finished
collection appears at ``out`` by one rename, never half-written.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from rag.ingest.paths import check_output, move_into_place, partial_dir
from rag.ingest.partial import BUILD_STATE, CHUNKS_DIR, Chunks, check_complete, open_partial
from rag.collection.reader import MAP_FILE, TEXT_EXPORT_FILE, TEXT_EXPORT_KEY, Manifest
from rag.collection.writer import seal_collection
from rag.models.encoder import Encoder
from rag.errors import CollectionError, InvalidInput, RagError
from rag.images.decode import load_image, thumbnail_bytes
from rag.search.index import auto_factory, build_index, default_search_params
from rag.ingest.sources import Source, SourceItem

log = logging.getLogger(__name__)

MAX_SKIPPED_LISTED = 1000
DRAFT_SIZE = 448  # JPEGs are decoded at reduced scale when this still covers the model and thumbnail sizes


class BuildCancelled(RagError):
    """The build was stopped on request (``should_stop``) between batches; nothing was written at ``out``."""


class CaptionWriter(Protocol):
    """Anything that writes one caption per image (rag.models.captioner implements it)."""

    model_id: str

    def caption(self, images: Sequence[Image.Image]) -> list[str]: ...


@dataclass
class BuildOptions:
    """Knobs of one build; the ones that change the result are part of the resume fingerprint."""

    index_factory: str = "auto"
    batch_size: int = 32
    workers: int = 2
    chunk_rows: int = 1024
    progress: bool = True
    caption_missing: bool = False
    quantize: str = "none"  # the encoder conversion in effect (rag.models.quantize): recorded in the manifest
    map: bool = True  # compute the 2-D map (rag.explore.layout) once all vectors are in
    map_seed: int = 42
    # the int8 ONNX text tower the build ran (file, export key; rag.models.onnx_text), shipped with the collection
    # so that the Space's start-up need not export it again
    text_export: tuple[Path, dict[str, Any]] | None = None


@dataclass
class _Batch:
    rows: list[dict[str, Any]] = field(default_factory=list)
    images: list[Image.Image] = field(default_factory=list)
    features: dict[str, Any] | None = None
    skipped: list[dict[str, str]] = field(default_factory=list)
    source_end: int = 0


def decode_item(item: SourceItem) -> Image.Image:
    """Decode at reduced scale where possible (JPEG draft, integer reduction): 448 px still covers model and thumbnail."""
    return load_image(item.image, side=DRAFT_SIZE)


def _prepare(items: list[SourceItem], encoder: Encoder, keep_images: bool) -> _Batch:
    """Worker-thread stage: decode, thumbnail and preprocess a batch; bad files become skip records."""
    batch = _Batch(source_end=items[-1].position + 1 if items else 0)
    good: list[Image.Image] = []
    for item in items:
        try:
            image = decode_item(item)
        except InvalidInput as exc:
            log.warning("skipping %s: %s", item.source, exc)
            batch.skipped.append({"source": item.source, "reason": str(exc)})
            continue
        good.append(image)
        batch.rows.append(
            {
                "thumbnail": thumbnail_bytes(image),
                "captions": item.captions,
                "label": item.label,
                "source": item.source,
                "extra": item.extra,
            }
        )
    if good:
        batch.features = encoder.preprocess_images(good)
        if keep_images:
            batch.images = good
    return batch


def _batched(items: Iterator[SourceItem], size: int) -> Iterator[list[SourceItem]]:
    batch: list[SourceItem] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _prepared_batches(
    source: Source, start: int, encoder: Encoder, options: BuildOptions, keep_images: bool
) -> Iterator[_Batch]:
    """Yield prepared batches in order while up to ``workers + 1`` more are being prepared in threads."""
    with ThreadPoolExecutor(max_workers=max(1, options.workers), thread_name_prefix="decode") as pool:
        pending: deque[Future] = deque()
        for items in _batched(source.items(start), options.batch_size):
            pending.append(pool.submit(_prepare, items, encoder, keep_images))
            if len(pending) > options.workers + 1:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _fingerprint(source: Source, encoder: Encoder, options: BuildOptions, captioner: CaptionWriter | None) -> dict:
    folder = source_folder(source)
    return {
        "source": source.manifest_entry(),
        "source_path": str(folder.expanduser().resolve()) if folder is not None else None,
        "model": {"id": encoder.model_id, "revision": encoder.revision},
        "caption_missing": bool(options.caption_missing),
        "captioner": getattr(captioner, "model_id", None),
        "chunk_rows": options.chunk_rows,
        "quantize": options.quantize,
    }


def build_collection(
    source: Source,
    out_dir: str | Path,
    encoder: Encoder,
    options: BuildOptions | None = None,
    resume: bool = False,
    captioner: CaptionWriter | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    overwrite: bool = False,
    should_stop: Callable[[], bool] | None = None,
) -> Manifest:
    """Encode every usable image of ``source`` and write a complete collection at ``out_dir``.

    Refuses (UnsafeOutput, nothing touched) an ``out_dir`` the builder may not write: see rag.ingest.paths.
    ``should_stop`` is polled between batches: True removes the unfinished build and raises BuildCancelled.
    """
    options = options or BuildOptions()
    out = Path(out_dir).expanduser().absolute()
    check_output(out, source_folder(source), overwrite)
    chunks = open_partial(out, _fingerprint(source, encoder, options, captioner), resume)
    started = time.perf_counter()
    total = len(source)
    bar = tqdm(total=total or None, initial=chunks.source_end, unit="img", desc="encoding", disable=not options.progress,
               dynamic_ncols=True)
    keep_images = options.caption_missing and captioner is not None
    pending_rows: list[dict[str, Any]] = []
    pending_vectors: list[np.ndarray] = []
    pending_skipped: list[dict[str, str]] = []
    pending_images: list[Image.Image] = []
    source_end = chunks.source_end

    def flush() -> None:
        nonlocal pending_rows, pending_vectors, pending_skipped, pending_images
        generated = _caption_missing(pending_rows, pending_images, captioner) if keep_images else 0
        vectors = np.concatenate(pending_vectors) if pending_vectors else np.zeros((0, encoder.dim), np.float32)
        chunks.commit(vectors, pending_rows, pending_skipped, source_end, source.extra_columns, generated)
        pending_rows, pending_vectors, pending_skipped, pending_images = [], [], [], []

    try:
        for batch in _prepared_batches(source, chunks.source_end, encoder, options, keep_images):
            _stop_if_asked(should_stop, partial_dir(out))
            if batch.features is not None:
                pending_vectors.append(encoder.embed_features(batch.features))
            pending_rows.extend(batch.rows)
            pending_images.extend(batch.images)
            pending_skipped.extend(batch.skipped)
            source_end = batch.source_end
            bar.update(len(batch.rows) + len(batch.skipped))
            if on_progress:
                on_progress(source_end, total)
            if len(pending_rows) >= options.chunk_rows:
                flush()
        if pending_rows or pending_skipped:
            flush()
    finally:
        bar.close()
    return _finish(source, encoder, options, chunks, partial_dir(out), out, started, captioner, should_stop)


def _stop_if_asked(should_stop: Callable[[], bool] | None, partial: Path) -> None:
    """Cancel between batches: remove the unfinished build and raise BuildCancelled."""
    if should_stop is not None and should_stop():
        shutil.rmtree(partial, ignore_errors=True)
        raise BuildCancelled("The build was cancelled; nothing was kept.")


def _caption_missing(rows: list[dict[str, Any]], images: list[Image.Image], captioner: CaptionWriter) -> int:
    """Caption the rows that have no caption (flagged as generated); returns how many."""
    missing = [i for i, row in enumerate(rows) if not row["captions"]]
    if missing:
        for i, text in zip(missing, captioner.caption([images[i] for i in missing])):
            rows[i]["captions"] = [text]
            rows[i]["captions_generated"] = True
    return len(missing)


def source_folder(source: Source) -> Path | None:
    """The local folder (or file) a source reads, which a build must never write over."""
    folder = getattr(source, "folder", None)
    if folder is not None:
        return Path(folder)
    name = getattr(source, "name", None)
    return Path(name) if isinstance(name, str) and Path(name).exists() else None


def _finish(source: Source, encoder: Encoder, options: BuildOptions, chunks: Chunks, partial: Path, out: Path,
            started: float, captioner: CaptionWriter | None, should_stop: Callable[[], bool] | None = None) -> Manifest:
    """Build the index, write manifest and card, then move the collection into place in one rename."""
    skipped = [s for r in chunks.records for s in r["skipped"]]
    rows = chunks.rows
    if rows == 0:
        shutil.rmtree(partial, ignore_errors=True)
        raise CollectionError(
            f"No usable image in the source ({len(skipped)} unreadable of {len(source)}); nothing was written."
        )
    vectors = chunks.vectors(encoder.dim)
    check_complete(chunks, vectors)
    factory = options.index_factory
    if factory == "auto":
        factory = auto_factory(rows, encoder.dim)
    index = build_index(vectors, factory)
    generated = sum(r["generated"] for r in chunks.records)
    caption_source = source.caption_source
    if generated:
        caption_source += f"; missing captions generated by {captioner.model_id}"
    manifest = Manifest(
        model={"id": encoder.model_id, "revision": encoder.revision},
        dim=encoder.dim,
        rows=rows,
        index_factory=factory,
        search_params=default_search_params(factory),
        source=source.manifest_entry(),
        caption_source=caption_source,
        generated_captions=generated,
        columns=source.extra_columns,
        skipped={"count": len(skipped), "items": skipped[:MAX_SKIPPED_LISTED]},
        build={
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(time.perf_counter() - started, 2),
            "batch_size": options.batch_size,
            "quantize": options.quantize,
        },
    )
    _stop_if_asked(should_stop, partial)
    write_build_map(partial, lambda: vectors, options, manifest, should_stop)
    _stop_if_asked(should_stop, partial)  # a cancel during the map ended the layout early: keep nothing
    ship_text_export(partial, options.text_export, manifest)
    seal_collection(partial, index, manifest)
    shutil.rmtree(partial / CHUNKS_DIR)
    (partial / BUILD_STATE).unlink()
    move_into_place(partial, out)
    return manifest


def ship_text_export(partial: Path, export: tuple[Path, dict[str, Any]] | None, manifest: Manifest) -> None:
    """Copy the build's int8 text tower export into the collection (sealed, so checksummed, with the rest) and
    record its export key in ``manifest.build``; without one, make sure no stale export is left."""
    (partial / TEXT_EXPORT_FILE).unlink(missing_ok=True)
    if export is None:
        return
    path, key = export
    shutil.copyfile(path, partial / TEXT_EXPORT_FILE)
    manifest.build[TEXT_EXPORT_KEY] = dict(key)


def write_build_map(partial: Path, vectors: Callable[[], np.ndarray], options: Any, manifest: Manifest,
                    should_stop: Callable[[], bool] | None = None) -> None:
    """map.parquet for --map (``options.map``, ``.map_seed``, ``.progress``; recorded in manifest.build), for the
    local and Ray builders alike; ``vectors()`` is called only when a map is asked for. A stale map from an
    interrupted run never survives."""
    from rag.explore.map_file import store_map

    (partial / MAP_FILE).unlink(missing_ok=True)
    if options.map:
        manifest.build["map"] = store_map(partial / MAP_FILE, vectors(), seed=options.map_seed, progress=options.progress,
                                          should_stop=should_stop)

