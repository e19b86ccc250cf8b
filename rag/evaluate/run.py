"""What every evaluation task shares: the run context (EvalRun), batched search and encoding, cached image vectors,
the caption pool and chance levels."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from rag import metrics
from .truth import GroundTruth, sample_rows

log = logging.getLogger("rag.evaluate")

SEARCH_BATCH = 256


def search_ids(
    pipeline: Any, vectors: np.ndarray, depth: int, exclude_own: np.ndarray | None = None,
    progress: bool = True, desc: str = "search",
) -> np.ndarray:
    """(queries x depth) row ids from ``pipeline.search_ids``, padded with -1; with ``exclude_own``,
    query i's own row ``exclude_own[i]`` is left out of its results."""
    out = np.full((len(vectors), depth), -1, dtype=np.int64)
    with tqdm(total=len(vectors), desc=desc, unit="q", disable=not progress, leave=False) as bar:
        for start in range(0, len(vectors), SEARCH_BATCH):
            stop = start + SEARCH_BATCH
            own = None if exclude_own is None else exclude_own[start:stop]
            _, out[start:stop] = pipeline.search_ids(vectors[start:stop], depth, exclude_each=own)
            bar.update(len(vectors[start:stop]))
    return out


def encode_texts(pipeline: Any, texts: Sequence[str], progress: bool, desc: str) -> np.ndarray:
    """Text vectors from the pipeline's encoder (its text model), in progress-bar sized batches."""
    parts = []
    step = 1024
    with tqdm(total=len(texts), desc=desc, unit="text", disable=not progress, leave=False) as bar:
        for start in range(0, len(texts), step):
            parts.append(pipeline.encoder.encode_texts(list(texts[start : start + step])))
            bar.update(len(parts[-1]))
    return np.concatenate(parts) if parts else np.zeros((0, pipeline.collection.manifest.dim), dtype=np.float32)


class ImageVectors:
    """The collection's image vectors through ``Pipeline.row_vectors`` (which decides stored vs re-encoded)."""

    def __init__(self, pipeline: Any, progress: bool):
        self.pipeline = pipeline
        self.progress = progress
        self.source = "stored"

    def get(self, rows: np.ndarray) -> np.ndarray:
        """Vectors of ``rows``, in progress-bar sized batches; notes where they came from for the report."""
        if len(rows) and self.pipeline.collection.stored_vectors(rows[:1]) is None:
            if self.source == "stored":
                log.warning("the index cannot return stored vectors; re-encoding thumbnails")
            self.source = "re-encoded thumbnails"
        step = 256
        parts = [
            self.pipeline.row_vectors(rows[start : start + step])
            for start in tqdm(range(0, len(rows), step), desc="vectors", disable=not self.progress, leave=False)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, self.pipeline.collection.manifest.dim), np.float32)


@dataclass
class EvalRun:
    """One evaluation in progress: the pipeline, its ground truth, the flags and what tasks share."""

    pipeline: Any
    truth: GroundTruth
    args: argparse.Namespace
    images: ImageVectors
    requested: list[str] = field(default_factory=list)
    caption_cache: dict[str, Any] = field(default_factory=dict)

    @property
    def progress(self) -> bool:
        """Progress bars unless --no-progress."""
        return not self.args.no_progress

    @property
    def depth(self) -> int:
        """Results searched per text query, at most the collection size."""
        return min(self.args.depth, self.truth.rows)


def caption_pool(ctx: EvalRun, need_all: bool) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """(captions, owner row of each, their vectors, the sampled query rows) shared by t2i and i2t."""
    key = "all" if need_all else "sample"
    if key in ctx.caption_cache:
        return ctx.caption_cache[key]
    rows = sample_rows(ctx.truth.caption_rows, ctx.args.sample, ctx.args.seed, "t2i")
    pool_rows = ctx.truth.caption_rows if need_all else rows
    texts = [c for r in pool_rows for c in ctx.truth.captions[r]]
    owners = np.array([r for r in pool_rows for _ in ctx.truth.captions[r]], dtype=np.int64)
    vectors = encode_texts(ctx.pipeline, texts, ctx.progress, "encode captions")
    ctx.caption_cache[key] = (texts, owners, vectors, rows)
    return ctx.caption_cache[key]


def chance(n_items: int, n_relevant: np.ndarray) -> dict[str, float]:
    """What a random ranking would score, to read the numbers against."""
    return {
        "chance_R@10": metrics.chance_recall_at_k(n_items, n_relevant, 10),
        "chance_MRR": metrics.chance_mrr(n_items, n_relevant),
    }
