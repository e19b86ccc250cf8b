"""The Ray Data stages of a Ray build: read+decode (tasks), CLIP forward (actor pool), part writer (tasks).

Rows travel between stages as columns: ``position`` (the item's place in the source), ``ok`` (decoded),
``reason``/``source`` (for the skipped list), ``meta`` (the item's captions, label, source and extra
metadata, pickled so values reach the writer exactly as the local builder sees them), ``thumbnail``
(JPEG bytes) and, between decode and embed only, the decoded RGB pixels. The embed stage adds ``vector``.
"""

from __future__ import annotations

import itertools
import logging
import pickle
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image

from rag.ingest.builder import decode_item
from rag.errors import InvalidInput
from rag.images.decode import thumbnail_bytes
from rag.ingest.ray.parts import write_part
from rag.ingest.sources import Source, SourceItem

log = logging.getLogger(__name__)

_SOURCES: dict[str, Source] = {}  # per worker process: the source is fetched once, not once per task


def _source(holder: list) -> Source:
    """The build's Source from the object store (the ref is wrapped in a list so Ray does not resolve it per task)."""
    import ray

    ref = holder[0]
    key = ref.hex()
    if key not in _SOURCES:
        _SOURCES[key] = ray.get(ref)
    return _SOURCES[key]


def _decoded_row(item: SourceItem) -> dict[str, Any]:
    """Decode one item as the local builder does (JPEG draft mode, RGB, EXIF); a bad file becomes a skip record."""
    row: dict[str, Any] = {"position": item.position, "source": str(item.source), "ok": False, "reason": "",
                           "meta": b"", "thumbnail": b"", "pixels": b"", "width": 0, "height": 0}
    try:
        image = decode_item(item)
    except InvalidInput as exc:
        log.warning("skipping %s: %s", item.source, exc)
        row["reason"] = str(exc)
        return row
    meta = {"captions": item.captions, "label": item.label, "source": item.source, "extra": item.extra}
    row.update(ok=True, meta=pickle.dumps(meta), thumbnail=thumbnail_bytes(image), pixels=image.tobytes(),
               width=image.width, height=image.height)
    return row


def _columns(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Rows -> a numpy batch (bytes columns as object arrays, which Ray stores as Arrow binary)."""
    out: dict[str, np.ndarray] = {}
    for name in rows[0]:
        values = [row[name] for row in rows]
        out[name] = np.array(values, dtype=object) if isinstance(values[0], (bytes, str)) else np.array(values)
    return out


def read_and_decode(batch: dict[str, np.ndarray], source_ref: list, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Read stage (a Ray task per range of positions): yield decoded rows in source order, ``batch_size`` at a time."""
    source = _source(source_ref)
    for start, end in zip(batch["start"], batch["end"]):
        rows: list[dict[str, Any]] = []
        for item in itertools.islice(source.items(int(start)), int(end) - int(start)):
            rows.append(_decoded_row(item))
            if len(rows) == batch_size:
                yield _columns(rows)
                rows = []
        if rows:
            yield _columns(rows)


class EmbedReplica:
    """Embed stage: one model replica per Ray actor (loaded once), CLIP forward on each batch of decoded images."""

    def __init__(self, model: str, revision: str | None, device: str | None, token: str | None, threads: int,
                 captioner_model: str | None = None) -> None:
        import torch

        from rag.models.encoder import Encoder

        if threads > 0:
            torch.set_num_threads(threads)
        self.encoder = Encoder(model, revision=revision, device=device, token=token)
        self.captioner = None
        if captioner_model:
            from rag.models.captioner import load_captioner

            self.captioner = load_captioner("git", captioner_model, self.encoder, device=device, token=token)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Add a ``vector`` column (zeros for skipped rows) and, with a captioner, captions where there were none."""
        ok = np.asarray(batch["ok"], dtype=bool)
        good = np.flatnonzero(ok)
        images = [Image.frombytes("RGB", (int(batch["width"][i]), int(batch["height"][i])), batch["pixels"][i])
                  for i in good]
        vectors = np.zeros((len(ok), self.encoder.dim), dtype=np.float32)
        if images:
            vectors[good] = self.encoder.embed_features(self.encoder.preprocess_images(images))
        meta = np.array(batch["meta"], dtype=object)
        if self.captioner is not None and images:
            self._caption_missing(meta, good, images)
        return {"position": batch["position"], "ok": ok, "source": batch["source"], "reason": batch["reason"],
                "meta": meta, "thumbnail": batch["thumbnail"], "vector": vectors}

    def _caption_missing(self, meta: np.ndarray, good: np.ndarray, images: list[Image.Image]) -> None:
        """--caption-missing: caption the rows without captions, flagged as generated (as the local builder does)."""
        decoded = {int(i): pickle.loads(meta[i]) for i in good}
        missing = [k for k, i in enumerate(good) if not decoded[int(i)]["captions"]]
        if not missing:
            return
        texts = self.captioner.caption([images[k] for k in missing])
        for k, text in zip(missing, texts):
            row = decoded[int(good[k])]
            row["captions"], row["captions_generated"] = [text], True
            meta[good[k]] = pickle.dumps(row)


def write_parts(batch: dict[str, np.ndarray], partial: str, extra_columns: list[str]) -> dict[str, np.ndarray]:
    """Writer stage (Ray tasks, in parallel): one part per contiguous run of positions; returns their starts."""
    positions = np.asarray(batch["position"], dtype=np.int64)
    order = np.argsort(positions, kind="stable")
    breaks = np.flatnonzero(np.diff(positions[order]) != 1) + 1
    starts = []
    for run in np.split(order, breaks):
        if not len(run):
            continue
        rows, vectors, skipped = [], [], []
        for i in run:
            if batch["ok"][i]:
                rows.append({**pickle.loads(batch["meta"][i]), "thumbnail": batch["thumbnail"][i]})
                vectors.append(batch["vector"][i])
            else:
                skipped.append({"source": str(batch["source"][i]), "reason": str(batch["reason"][i])})
        start, end = int(positions[run[0]]), int(positions[run[-1]]) + 1
        dim = int(np.asarray(batch["vector"]).shape[1])
        array = np.asarray(vectors, dtype=np.float32).reshape(len(vectors), dim)
        write_part(Path(partial), start, end, rows, array, skipped, extra_columns)
        starts.append(start)
    return {"start": np.array(starts, dtype=np.int64)}
