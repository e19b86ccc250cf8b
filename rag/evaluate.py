"""Measure a collection with the Space's own pipeline: retrieval recall and RAG description quality.

    python -m rag.evaluate --collection user/flickr30k-collection --out report.json

Tasks (``--tasks``, default: every task the collection supports):

* ``t2i``  text -> image, Flickr30k/COCO protocol: every ground-truth caption is a query and its own
  image the one answer; Recall@1/5/10, MRR, median rank. Searched with ``Pipeline.search_ids``,
  so approximate indexes (HNSW, IVF-PQ) are measured as the Space serves them.
* ``i2t``  image -> text: for each image (its stored vector), the rank of the best of its own captions
  among all captions of the collection (encoded once); Recall@1/5/10, MRR, median rank.
* ``i2i``  image -> image by label: each labelled image queries the collection with itself excluded;
  top-1 / top-5 accuracy (label of the first / any of the first five results equals the query's) and
  mAP@10 (see ``rag.metrics.average_precision_at_k``: AP over the top 10 normalised by
  ``min(10, R)``, R = other rows with the query's label).
* ``describe``  for a seeded sample of rows, ``Pipeline.describe(thumbnail, k=k, exclude=[row])`` for
  each context size in ``--k`` (k = 0 is the captioner without retrieval); BLEU-4 and ROUGE-L F
  against the row's captions, label-inclusion rate, mean words, seconds per description (after one
  untimed warm-up call; ``Description.seconds``: retrieval + generation), and how
  often the description is word for word one of the retrieved captions (GIT's reranking can pick one).
* ``queries``  text -> image for a JSONL file of ``{"query": ..., "relevant": [row ids]}`` (for
  collections without captions); Recall@1/5/10 (any relevant row in the top K), MRR, median rank, mAP@10.

Captions written by a model at build time (``--caption-missing``) are not ground truth and are not
used as queries or references. Ranks from a search are cut at ``--depth`` results: a query whose
answer is deeper counts as not found (reciprocal rank 0), so MRR is MRR@depth (exact when the depth
covers the collection). All metric math lives in ``rag.metrics``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from . import metrics
from .config import CAPTIONER_CHOICES, Settings
from .errors import RagError

log = logging.getLogger("rag.evaluate")

TASKS: dict[str, str] = {
    "t2i": "text → image",
    "i2t": "image → text",
    "i2i": "image → image (label)",
    "queries": "text → image (query file)",
    "describe": "describe",
}
REPORT_SCHEMA = 1
DEFAULT_KS = (0, 1, 5)
DEFAULT_DESCRIBE_ROWS = 100
DEFAULT_DEPTH = 100
SEARCH_BATCH = 256
SCORE_CHUNK = 128
EXAMPLES = 5
I2I_DEPTH = 10


class UsageError(Exception):
    """A bad flag or input file: reported in one line, exit status 2."""


# ----------------------------------------------------------------------------------------------------
# Arguments
# ----------------------------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _task_list(text: str) -> list[str]:
    tasks = [t.strip().lower() for t in text.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise argparse.ArgumentTypeError(
            f"unknown task(s) {', '.join(unknown) or '(none given)'}; choose from {','.join(TASKS)}"
        )
    return list(dict.fromkeys(tasks))


def _k_list(text: str) -> list[int]:
    from .pipeline import MAX_CONTEXT_K

    values = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            value = int(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"context sizes are whole numbers, got {part!r}") from None
        if not 0 <= value <= MAX_CONTEXT_K:
            raise argparse.ArgumentTypeError(f"context size {value} is outside 0..{MAX_CONTEXT_K}")
        values.append(value)
    if not values:
        raise argparse.ArgumentTypeError("give at least one context size, e.g. 0,1,5")
    return list(dict.fromkeys(values))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m rag.evaluate",
        description="Retrieval and RAG-description metrics of a collection, measured through rag.pipeline.",
        epilog="Example: python -m rag.evaluate --collection user/flickr30k-collection --sample 200 --out report.json",
    )
    parser.add_argument("--collection", help="collection folder or Hub dataset repo id (default: $RAG_COLLECTION)")
    parser.add_argument("--revision", help="branch, tag or commit of the dataset repo (default: $RAG_REVISION)")
    parser.add_argument("--tasks", type=_task_list, help=f"comma list of {','.join(TASKS)} "
                        "(default: every task the collection supports)")
    parser.add_argument("--sample", type=_positive_int, help=f"rows to describe (default {DEFAULT_DESCRIBE_ROWS}) and, "
                        "when given, the most queries per retrieval task (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the row/query samples (default: 0)")
    parser.add_argument("--k", type=_k_list, default=list(DEFAULT_KS), help="context sizes to describe with; "
                        "0 = no retrieval (default: 0,1,5)")
    parser.add_argument("--depth", type=_positive_int, default=DEFAULT_DEPTH,
                        help=f"results searched per text query (default: {DEFAULT_DEPTH}); an answer ranked deeper "
                        "counts as not found (MRR@depth). R@1/5/10 are exact for any depth >= 10; a smaller depth "
                        "is faster on big collections")
    parser.add_argument("--queries", metavar="FILE", help='JSONL of {"query": "...", "relevant": [row ids]} '
                        "for text -> image on collections without captions")
    parser.add_argument("--captioner", choices=CAPTIONER_CHOICES,
                        help="captioner for describe (default: $RAG_CAPTIONER, else auto)")
    parser.add_argument("--captioner-model", help="model id or folder of the captioner (default: $RAG_CAPTIONER_MODEL)")
    parser.add_argument("--text-model",
                        help="aligned text encoder for queries (default: $RAG_TEXT_MODEL, else the collection's model)")
    parser.add_argument("--device", help="cpu, cuda, ... (default: $RAG_DEVICE, else cuda if available)")
    parser.add_argument("--out", metavar="FILE", help="write the JSON report here")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.depth < max(metrics.DEFAULT_KS):
        parser.error(f"--depth must be at least {max(metrics.DEFAULT_KS)} (Recall@10 needs 10 results)")
    if args.tasks and "queries" in args.tasks and not args.queries:
        parser.error("the 'queries' task needs --queries FILE")
    if args.queries:
        try:
            args.query_items = read_queries(Path(args.queries))
        except UsageError as exc:
            parser.error(str(exc))
    else:
        args.query_items = None
    return args


def read_queries(path: Path) -> list[dict[str, Any]]:
    """Parse a JSONL query file; any malformed line is a UsageError naming the line."""
    if not path.is_file():
        raise UsageError(f"--queries: no file at {path}")
    items = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except ValueError as exc:
                raise UsageError(f"{path} line {number}: not JSON ({exc})") from None
            if not isinstance(item, dict):
                raise UsageError(f"{path} line {number}: expected an object with 'query' and 'relevant'")
            query, relevant = item.get("query"), item.get("relevant")
            if not isinstance(query, str) or not query.strip():
                raise UsageError(f"{path} line {number}: 'query' must be a non-empty string")
            if (
                not isinstance(relevant, list)
                or not relevant
                or not all(isinstance(i, int) and not isinstance(i, bool) for i in relevant)
            ):
                raise UsageError(f"{path} line {number}: 'relevant' must be a non-empty list of row ids (integers)")
            items.append({"query": " ".join(query.split()), "relevant": sorted(set(relevant)), "line": number})
    if not items:
        raise UsageError(f"{path} holds no queries")
    return items


# ----------------------------------------------------------------------------------------------------
# What the collection offers
# ----------------------------------------------------------------------------------------------------


@dataclass
class GroundTruth:
    """Per-row ground truth: human captions (model-written ones removed) and labels."""

    rows: int
    captions: list[list[str]]
    labels: list[str | None]
    generated_caption_rows: int = 0
    label_codes: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    label_counts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @classmethod
    def of(cls, collection: Any) -> GroundTruth:
        n = len(collection)
        captions = [[c.strip() for c in caps if c and c.strip()] for caps in collection.all_captions()]
        labels = [
            label.strip() if isinstance(label, str) and label.strip() else None for label in collection.all_labels()
        ]
        generated = 0
        if collection.manifest.generated_captions:
            for start in range(0, n, 10_000):
                for row in collection.rows(range(start, min(n, start + 10_000))):
                    if row["captions_generated"]:
                        captions[row["id"]] = []
                        generated += 1
        names = sorted({label for label in labels if label is not None})
        lookup = {name: i for i, name in enumerate(names)}
        codes = np.array([lookup[l] if l is not None else -1 for l in labels], dtype=np.int64)
        counts = np.bincount(codes[codes >= 0], minlength=len(names)) if names else np.zeros(0, dtype=np.int64)
        return cls(n, captions, labels, generated, codes, counts)

    @property
    def caption_rows(self) -> np.ndarray:
        return np.array([i for i, caps in enumerate(self.captions) if caps], dtype=np.int64)

    @property
    def labelled_rows(self) -> np.ndarray:
        return np.flatnonzero(self.label_codes >= 0)

    def label_peers(self, rows: np.ndarray) -> np.ndarray:
        """How many *other* rows share each row's label (0 for unlabelled rows)."""
        codes = self.label_codes[rows]
        return np.where(codes >= 0, self.label_counts[np.maximum(codes, 0)] - 1, 0)

    def skip_reason(self, task: str, have_queries: bool) -> str | None:
        if task in ("t2i", "i2t") and not len(self.caption_rows):
            if self.generated_caption_rows:
                return (f"the collection's only captions were written by a model at build time "
                        f"({self.generated_caption_rows} rows); they are not ground truth")
            return "the collection has no captions"
        if task == "i2i":
            if not len(self.labelled_rows):
                return "the collection has no labels"
            if not (self.label_counts > 1).any():
                return "no label occurs on more than one row, so no image has a relevant neighbour"
        if task == "queries" and not have_queries:
            return "no --queries file given"
        return None


def sample_rows(rows: np.ndarray, cap: int | None, seed: int, task: str) -> np.ndarray:
    """A sorted, seeded sample of at most ``cap`` rows (each task draws from its own stream)."""
    rows = np.asarray(rows, dtype=np.int64)
    if cap is None or len(rows) <= cap:
        return rows
    rng = np.random.default_rng([seed, list(TASKS).index(task)])
    return np.sort(rng.choice(rows, size=cap, replace=False))


# ----------------------------------------------------------------------------------------------------
# Going through the pipeline
# ----------------------------------------------------------------------------------------------------


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
    """The collection's image vectors through ``Pipeline.row_vectors``: stored ones, else re-encoded thumbnails."""

    def __init__(self, pipeline: Any, progress: bool):
        self.pipeline = pipeline
        self.progress = progress
        self.source = "stored"

    def get(self, rows: np.ndarray) -> np.ndarray:
        stored = self.pipeline.collection.stored_vectors(rows)
        if stored is not None:
            return stored
        if self.source == "stored":
            log.warning("the index cannot return stored vectors; re-encoding thumbnails")
            self.source = "re-encoded thumbnails"
        step = 256
        parts = [
            self.pipeline.row_vectors(rows[start : start + step])
            for start in tqdm(range(0, len(rows), step), desc="encode thumbnails", disable=not self.progress, leave=False)
        ]
        return np.concatenate(parts)


# ----------------------------------------------------------------------------------------------------
# Tasks
# ----------------------------------------------------------------------------------------------------


@dataclass
class Context:
    pipeline: Any
    truth: GroundTruth
    args: argparse.Namespace
    images: ImageVectors
    caption_cache: dict[str, Any] = field(default_factory=dict)

    @property
    def progress(self) -> bool:
        return not self.args.no_progress


def caption_pool(ctx: Context, need_all: bool) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
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


def _depth(ctx: Context) -> int:
    return min(ctx.args.depth, ctx.truth.rows)


def _chance(n_items: int, n_relevant: np.ndarray) -> dict[str, float]:
    """What a random ranking would score, to read the numbers against."""
    return {
        "chance_R@10": metrics.chance_recall_at_k(n_items, n_relevant, 10),
        "chance_MRR": metrics.chance_mrr(n_items, n_relevant),
    }


def task_t2i(ctx: Context, need_all: bool) -> dict[str, Any]:
    _, owners, vectors, rows = caption_pool(ctx, need_all)
    pick = np.isin(owners, rows)
    owners, vectors = owners[pick], vectors[pick]
    depth = _depth(ctx)
    ids = search_ids(ctx.pipeline, vectors, depth, progress=ctx.progress, desc="text → image")
    ranks = metrics.ranks_from_relevance(ids == owners[:, None])
    return {
        "queries": len(owners), "images": len(rows), "gallery": ctx.truth.rows, "depth": depth,
        "not_found_within_depth": int(np.isinf(ranks).sum()), **metrics.rank_summary(ranks),
        **_chance(ctx.truth.rows, np.ones(len(owners))),
    }


def task_i2t(ctx: Context) -> dict[str, Any]:
    _, owners, caption_vectors, rows = caption_pool(ctx, True)
    image_vectors = ctx.images.get(rows)
    ranks = np.empty(len(rows), dtype=np.float64)
    for start in tqdm(range(0, len(rows), SCORE_CHUNK), desc="image → text", disable=not ctx.progress, leave=False):
        chunk = slice(start, start + SCORE_CHUNK)
        scores = image_vectors[chunk] @ caption_vectors.T
        ranks[chunk] = metrics.ranks_from_scores(scores, owners[None, :] == rows[chunk, None])
    own = np.array([len(ctx.truth.captions[r]) for r in rows])
    return {
        "queries": len(rows), "gallery_captions": len(owners), "query_vectors": ctx.images.source,
        **metrics.rank_summary(ranks), **_chance(len(owners), own),
    }


def task_i2i(ctx: Context) -> dict[str, Any]:
    truth = ctx.truth
    eligible = truth.labelled_rows[truth.label_peers(truth.labelled_rows) > 0]
    rows = sample_rows(eligible, ctx.args.sample, ctx.args.seed, "i2i")
    depth = min(I2I_DEPTH, truth.rows - 1)
    ids = search_ids(ctx.pipeline, ctx.images.get(rows), depth, exclude_own=rows, progress=ctx.progress,
                     desc="image → image")
    result_codes = np.where(ids >= 0, truth.label_codes[np.maximum(ids, 0)], -1)
    relevant = (result_codes == truth.label_codes[rows][:, None]) & (result_codes >= 0)
    peers = truth.label_peers(rows)
    return {
        "queries": len(rows),
        "labelled_rows_without_peer": int(len(truth.labelled_rows) - len(eligible)),
        "classes": len(truth.label_counts),
        "query_vectors": ctx.images.source,
        "top1": metrics.hit_rate_at_k(relevant, 1),
        "top5": metrics.hit_rate_at_k(relevant, 5),
        "mAP@10": metrics.mean_average_precision_at_k(relevant, peers, k=10, normalise="min"),
        "chance_top1": metrics.chance_recall_at_k(truth.rows - 1, peers, 1),
    }


def task_queries(ctx: Context) -> dict[str, Any]:
    items = ctx.args.query_items
    for item in items:
        bad = [i for i in item["relevant"] if not 0 <= i < ctx.truth.rows]
        if bad:
            raise UsageError(
                f"{ctx.args.queries} line {item['line']}: row id {bad[0]} is outside the collection "
                f"(0..{ctx.truth.rows - 1})"
            )
    picked = sample_rows(np.arange(len(items)), ctx.args.sample, ctx.args.seed, "queries")
    items = [items[i] for i in picked]
    vectors = encode_texts(ctx.pipeline, [i["query"] for i in items], ctx.progress, "encode queries")
    depth = _depth(ctx)
    ids = search_ids(ctx.pipeline, vectors, depth, progress=ctx.progress, desc="queries")
    relevant = metrics.relevance_from_ids(ids, [i["relevant"] for i in items])
    n_relevant = np.array([len(i["relevant"]) for i in items])
    ranks = metrics.ranks_from_relevance(relevant)
    return {
        "queries": len(items), "depth": depth, "not_found_within_depth": int(np.isinf(ranks).sum()),
        **metrics.rank_summary(ranks),
        "mAP@10": metrics.mean_average_precision_at_k(relevant, n_relevant, k=10),
        **_chance(ctx.truth.rows, n_relevant),
    }


def task_describe(ctx: Context) -> dict[str, Any]:
    truth, pipeline = ctx.truth, ctx.pipeline
    cap = ctx.args.sample or DEFAULT_DESCRIBE_ROWS
    rows = sample_rows(np.arange(truth.rows), cap, ctx.args.seed, "describe")
    ks = ctx.args.k
    texts: dict[int, list[str]] = {k: [] for k in ks}
    seconds: dict[int, list[float]] = {k: [] for k in ks}
    from_context: dict[int, list[bool]] = {k: [] for k in ks}
    examples = []
    if len(rows):  # one untimed call first, so lazy initialisation does not land on the first row's timing
        pipeline.describe(pipeline.collection.thumbnail(int(rows[0])), k=max(ks), exclude=[int(rows[0])])
    with tqdm(total=len(rows) * len(ks), desc="describe", unit="desc", disable=not ctx.progress, leave=False) as bar:
        for row in rows:
            row = int(row)
            image = pipeline.collection.thumbnail(row)
            outputs = {}
            for k in ks:
                description = pipeline.describe(image, k=k, exclude=[row])
                if any(hit.id == row for hit in description.context):
                    raise RagError(f"describe() put the query row {row} into its own context despite exclude")
                texts[k].append(description.text)
                seconds[k].append(description.seconds)
                retrieved = {c.strip().lower() for hit in description.context for c in hit.captions}
                from_context[k].append(description.text.strip().lower() in retrieved)
                outputs[str(k)] = {"text": description.text, "context": [hit.id for hit in description.context]}
                bar.update(1)
            if len(examples) < EXAMPLES:
                examples.append({"row": row, "label": truth.labels[row], "references": truth.captions[row],
                                 "outputs": outputs})
    with_captions = [i for i, r in enumerate(rows) if truth.captions[r]]
    with_labels = [i for i, r in enumerate(rows) if truth.labels[r]]
    per_k = {}
    signature = None
    for k in ks:
        result: dict[str, Any] = {"rows": len(rows)}
        if with_captions:
            hyps = [texts[k][i] for i in with_captions]
            refs = [truth.captions[rows[i]] for i in with_captions]
            result["bleu4"], signature = metrics.corpus_bleu4(hyps, refs)
            result["rougeL_f"] = metrics.rouge_l_f(hyps, refs)
        if with_labels:
            result["label_inclusion"] = metrics.label_inclusion_rate(
                [texts[k][i] for i in with_labels], [truth.labels[rows[i]] for i in with_labels]
            )
        result["words"] = metrics.mean_words(texts[k])
        result["seconds"] = float(np.mean(seconds[k]))
        result["from_context"] = float(np.mean(from_context[k])) if k > 0 else None
        per_k[str(k)] = result
    notes = []
    if not with_captions:
        notes.append("no sampled row has human captions: BLEU-4 and ROUGE-L skipped")
    if not with_labels:
        notes.append("no sampled row has a label: label inclusion skipped")
    return {
        "captioner": f"{pipeline.captioner.kind} ({pipeline.captioner.model_id})",
        "rows": len(rows), "rows_with_captions": len(with_captions), "rows_with_labels": len(with_labels),
        "sample": [int(r) for r in rows], "by_k": per_k, "bleu_signature": signature,
        "rouge": dict(metrics.ROUGE_SETTINGS), "notes": notes, "examples": examples,
    }


# ----------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    """Enough about the machine and library versions to tell whether two reports are comparable."""
    from importlib import metadata

    import torch

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        import psutil

        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    versions = {}
    for package in ("torch", "transformers", "sentence-transformers", "faiss-cpu", "sacrebleu", "rouge-score", "numpy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    info["versions"] = versions
    return info


def collection_info(pipeline: Any) -> dict[str, Any]:
    collection = pipeline.collection
    manifest = collection.manifest
    directory = Path(collection.directory)
    commit = directory.name if directory.parent.name == "snapshots" else None  # a Hub snapshot folder
    return {
        "name": pipeline.name,
        "revision": pipeline.revision,
        "resolved_commit": commit,
        "directory": str(directory),
        "rows": len(collection),
        "built": manifest.build.get("time"),
        "build": manifest.build,
        "index": f"{manifest.index_factory} ({collection.index_type})",
        "fingerprint": collection.fingerprint,
        "source": manifest.source,
        "caption_source": manifest.caption_source,
        "generated_captions": manifest.generated_captions,
    }


def _pct(value: Any) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _num(value: Any, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def render_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown tables (what the command prints)."""
    results, skipped = report["results"], report["skipped"]
    col, models = report["collection"], report["models"]
    revision = f" @ `{col['revision']}`" if col.get("revision") else ""
    text_model = f", text `{models['text']}`" if models.get("text") else ""
    lines = [
        (
            f"Collection `{col['name']}`{revision}: {col['rows']} rows, index {col['index']}, "
            f"built {col.get('built') or '?'}; embedding `{models['embedding']}`{text_model}."
        ),
        "",
    ]
    rank_tasks = [t for t in ("t2i", "i2t", "queries") if t in results]
    if rank_tasks:
        lines += [
            "| task | queries | R@1 % | R@5 % | R@10 % | MRR | median rank | chance R@10 % |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for task in rank_tasks:
            r = results[task]
            median = f"> {r.get('depth', '?')}" if r["median_rank"] is None else f"{r['median_rank']:g}"
            lines.append(
                f"| {TASKS[task]} | {r['queries']} | {_pct(r['R@1'])} | {_pct(r['R@5'])} | {_pct(r['R@10'])} | "
                f"{_num(r['MRR'])} | {median} | {_pct(r['chance_R@10'])} |"
            )
        lines.append("")
    if "i2i" in results:
        r = results["i2i"]
        lines += [
            "| task | queries | top-1 % | top-5 % | mAP@10 | chance top-1 % |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
            (
                f"| {TASKS['i2i']} | {r['queries']} | {_pct(r['top1'])} | {_pct(r['top5'])} | "
                f"{_num(r['mAP@10'])} | {_pct(r['chance_top1'])} |"
            ),
            "",
        ]
    if "describe" in results:
        d = results["describe"]
        lines += [
            (
                f"Describe with {d['captioner']}, {d['rows']} sampled rows, each row's own thumbnail as the "
                "image and the row excluded from its own context:"
            ),
            "",
            "| context | BLEU-4 | ROUGE-L F | label included % | words | = a retrieved caption % | s / description |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for k, r in d["by_k"].items():
            name = "k = 0 (no RAG)" if k == "0" else f"k = {k}"
            lines.append(
                f"| {name} | {_num(r.get('bleu4'), 1)} | {_num(r.get('rougeL_f'))} | "
                f"{_pct(r.get('label_inclusion'))} | {r['words']:.1f} | {_pct(r['from_context'])} | "
                f"{r['seconds']:.3f} |"
            )
        lines.append("")
    for task, reason in skipped.items():
        lines.append(f"- skipped {task} ({TASKS[task]}): {reason}")
    return "\n".join(lines).rstrip() + "\n"


# ----------------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------------


def make_settings(args: argparse.Namespace) -> Settings:
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    overrides = {
        "collection": args.collection, "revision": args.revision, "text_model": args.text_model,
        "captioner": args.captioner, "captioner_model": args.captioner_model, "device": args.device,
    }
    settings = dataclasses.replace(settings, **{k: v for k, v in overrides.items() if v is not None})
    if not settings.collection:
        raise UsageError("give --collection DIR_OR_REPO (or set RAG_COLLECTION)")
    return settings


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Load the pipeline, run the tasks, return the report dict."""
    from .captioner import load_captioner
    from .pipeline import Pipeline

    started = time.perf_counter()
    settings = make_settings(args)
    requested = args.tasks or [t for t in TASKS if t != "queries" or args.query_items]
    pipeline = Pipeline.from_settings(settings, with_captioner=False, status=log.info)
    truth = GroundTruth.of(pipeline.collection)
    ctx = Context(pipeline, truth, args, ImageVectors(pipeline, not args.no_progress))
    results: dict[str, Any] = {}
    skipped: dict[str, str] = {}

    timings: dict[str, float] = {"load": round(pipeline.load_seconds, 3)}
    if "describe" in requested:
        try:
            load_started = time.perf_counter()
            pipeline.captioner = load_captioner(
                settings.captioner, settings.captioner_model, pipeline.encoder, device=settings.device,
                token=settings.hf_token,
            )
            timings["load_captioner"] = round(time.perf_counter() - load_started, 3)
        except RagError as exc:
            if args.tasks:  # asked for by name: fail loudly
                raise
            skipped["describe"] = f"the captioner could not be loaded: {exc}"
            log.warning("skipping describe: %s", exc)
    for task, title in TASKS.items():
        if task in skipped:
            continue
        if task not in requested:
            if args.tasks is None:
                reason = truth.skip_reason(task, bool(args.query_items))
                if reason:
                    skipped[task] = reason
            continue
        reason = truth.skip_reason(task, bool(args.query_items))
        if reason:
            skipped[task] = reason
            log.warning("skipping %s: %s", task, reason)
            continue
        log.info("running %s (%s)", task, title)
        task_started = time.perf_counter()
        if task == "t2i":
            results[task] = task_t2i(ctx, need_all="i2t" in requested)
        elif task == "i2t":
            results[task] = task_i2t(ctx)
        elif task == "i2i":
            results[task] = task_i2i(ctx)
        elif task == "queries":
            results[task] = task_queries(ctx)
        else:
            results[task] = task_describe(ctx)
        timings[task] = round(time.perf_counter() - task_started, 3)
        results[task]["seconds_total"] = timings[task]
    timings["total"] = round(time.perf_counter() - started, 3)

    info = pipeline.info()
    report = {
        "schema": REPORT_SCHEMA,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": ["python", "-m", "rag.evaluate", *getattr(args, "argv", [])],
        "settings": {
            "tasks": requested, "sample": args.sample, "seed": args.seed, "k": args.k, "depth": args.depth,
            "queries_file": args.queries, "captioner": settings.captioner, "captioner_model": settings.captioner_model,
            "text_model": settings.text_model, "device": info["device"],
            "metrics": {"bleu": metrics.BLEU_SETTINGS, "rouge": metrics.ROUGE_SETTINGS,
                        "map": "AP@10 normalised by min(10, R), R = relevant rows other than the query"},
        },
        "collection": collection_info(pipeline),
        "models": {
            "embedding": info["embedding_model"],
            "embedding_revision": pipeline.collection.manifest.model.get("revision"),
            "text": settings.text_model,
            "captioner": info["captioner"],
        },
        "machine": machine_info(),
        "ground_truth": {"rows_with_captions": len(truth.caption_rows),
                         "rows_with_labels": len(truth.labelled_rows),
                         "rows_with_generated_captions": truth.generated_caption_rows},
        "results": results,
        "skipped": skipped,
        "timings": timings,
    }
    report["table"] = render_markdown(report)
    return report


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)  # exits 2 with a message on bad flags
    args.argv = argv
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        report = evaluate(args)
        if args.out:
            _write_json(Path(args.out), report)
    except UsageError as exc:
        print(f"python -m rag.evaluate: error: {exc}", file=sys.stderr)
        return 2
    except RagError as exc:
        print(f"python -m rag.evaluate: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print(report["table"], end="")
    if args.out:
        print(f"\nreport written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
