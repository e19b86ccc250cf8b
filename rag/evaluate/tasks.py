"""The evaluation tasks, in a registry: each is a function of an EvalRun returning its result dict.

A new task is one decorated function: ``@register("name", "title")``. The CLI's ``--tasks`` choices, the
default run and the report's titles all come from ``TASKS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from rag import metrics
from rag.models.captioner import captioner_label
from rag.errors import RagError, UsageError
from .run import EvalRun, caption_pool, chance, encode_texts, search_ids
from .truth import sample_rows

DEFAULT_DESCRIBE_ROWS = 100
EXAMPLES = 5
I2I_DEPTH = 10
SCORE_CHUNK = 128


@dataclass(frozen=True)
class Task:
    """One evaluation task: its name on the command line, its title in the report, and its function."""

    name: str
    title: str
    run: Callable[[EvalRun], dict[str, Any]]
    by_default: bool = True  # False: runs only when asked for with --tasks (e.g. create: slow, needs a generator)


TASKS: dict[str, Task] = {}


def register(name: str, title: str, by_default: bool = True) -> Callable[[Callable[[EvalRun], dict[str, Any]]], Callable[[EvalRun], dict[str, Any]]]:
    """Add a task to the registry (in registration order, which is the order tasks run in)."""

    def add(function: Callable[[EvalRun], dict[str, Any]]) -> Callable[[EvalRun], dict[str, Any]]:
        TASKS[name] = Task(name, title, function, by_default)
        return function

    return add


@register("t2i", "text → image")
def task_t2i(ctx: EvalRun) -> dict[str, Any]:
    """Every ground-truth caption queries the collection; its own image is the one answer."""
    _, owners, vectors, rows = caption_pool(ctx, need_all="i2t" in ctx.requested)
    pick = np.isin(owners, rows)
    owners, vectors = owners[pick], vectors[pick]
    depth = ctx.depth
    ids = search_ids(ctx.pipeline, vectors, depth, progress=ctx.progress, desc="text → image")
    ranks = metrics.ranks_from_relevance(ids == owners[:, None])
    return {
        "queries": len(owners), "images": len(rows), "gallery": ctx.truth.rows, "depth": depth,
        "not_found_within_depth": int(np.isinf(ranks).sum()), **metrics.rank_summary(ranks),
        **chance(ctx.truth.rows, np.ones(len(owners))),
    }


@register("i2t", "image → text")
def task_i2t(ctx: EvalRun) -> dict[str, Any]:
    """Each image ranks all captions of the collection; the best of its own captions counts."""
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
        **metrics.rank_summary(ranks), **chance(len(owners), own),
    }


@register("i2i", "image → image (label)")
def task_i2i(ctx: EvalRun) -> dict[str, Any]:
    """Each labelled image queries the collection (itself excluded); same label = relevant."""
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


@register("queries", "text → image (query file)")
def task_queries(ctx: EvalRun) -> dict[str, Any]:
    """Text queries from a JSONL file with their relevant row ids."""
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
    depth = ctx.depth
    ids = search_ids(ctx.pipeline, vectors, depth, progress=ctx.progress, desc="queries")
    relevant = metrics.relevance_from_ids(ids, [i["relevant"] for i in items])
    n_relevant = np.array([len(i["relevant"]) for i in items])
    ranks = metrics.ranks_from_relevance(relevant)
    return {
        "queries": len(items), "depth": depth, "not_found_within_depth": int(np.isinf(ranks).sum()),
        **metrics.rank_summary(ranks),
        "mAP@10": metrics.mean_average_precision_at_k(relevant, n_relevant, k=10),
        **chance(ctx.truth.rows, n_relevant),
    }


@dataclass
class _Described:
    """What the describe task collected per context size k."""

    texts: dict[int, list[str]]
    seconds: dict[int, list[float]]
    from_context: dict[int, list[bool]]
    examples: list[dict[str, Any]]


def _describe_rows(ctx: EvalRun, rows: np.ndarray, ks: list[int]) -> _Described:
    """Describe each sampled row's thumbnail with each k, the row excluded from its own context."""
    pipeline, truth = ctx.pipeline, ctx.truth
    done = _Described({k: [] for k in ks}, {k: [] for k in ks}, {k: [] for k in ks}, [])
    if len(rows):  # one untimed call first, so lazy initialisation does not land on the first row's timing
        pipeline.describe(pipeline.collection.thumbnail(int(rows[0])), k=max(ks), exclude=[int(rows[0])])
    with tqdm(total=len(rows) * len(ks), desc="describe", unit="desc", disable=not ctx.progress, leave=False) as bar:
        for row in map(int, rows):
            image = pipeline.collection.thumbnail(row)
            outputs = {}
            for k in ks:
                description = pipeline.describe(image, k=k, exclude=[row])
                if any(hit.id == row for hit in description.context):
                    raise RagError(f"describe() put the query row {row} into its own context despite exclude")
                done.texts[k].append(description.text)
                done.seconds[k].append(description.seconds)
                retrieved = {c.strip().lower() for hit in description.context for c in hit.captions}
                done.from_context[k].append(description.text.strip().lower() in retrieved)
                outputs[str(k)] = {"text": description.text, "context": [hit.id for hit in description.context]}
                bar.update(1)
            if len(done.examples) < EXAMPLES:
                done.examples.append({"row": row, "label": truth.labels[row], "references": truth.captions[row],
                                      "outputs": outputs})
    return done


def _describe_scores(ctx: EvalRun, rows: np.ndarray, k: int, done: _Described,
                     with_captions: list[int], with_labels: list[int]) -> tuple[dict[str, Any], Any]:
    """BLEU-4, ROUGE-L, label inclusion, words and seconds of the descriptions written with context size k."""
    truth, texts = ctx.truth, done.texts[k]
    result: dict[str, Any] = {"rows": len(rows)}
    signature = None
    if with_captions:
        hyps = [texts[i] for i in with_captions]
        refs = [truth.captions[rows[i]] for i in with_captions]
        result["bleu4"], signature = metrics.corpus_bleu4(hyps, refs)
        result["rougeL_f"] = metrics.rouge_l_f(hyps, refs)
    if with_labels:
        result["label_inclusion"] = metrics.label_inclusion_rate(
            [texts[i] for i in with_labels], [truth.labels[rows[i]] for i in with_labels]
        )
    result["words"] = metrics.mean_words(texts)
    result["seconds"] = float(np.mean(done.seconds[k]))
    result["from_context"] = float(np.mean(done.from_context[k])) if k > 0 else None
    return result, signature


@register("describe", "describe")
def task_describe(ctx: EvalRun) -> dict[str, Any]:
    """Describe a seeded sample of rows with each context size; caption and label metrics per k."""
    truth = ctx.truth
    rows = sample_rows(np.arange(truth.rows), ctx.args.sample or DEFAULT_DESCRIBE_ROWS, ctx.args.seed, "describe")
    ks = ctx.args.k
    done = _describe_rows(ctx, rows, ks)
    with_captions = [i for i, r in enumerate(rows) if truth.captions[r]]
    with_labels = [i for i, r in enumerate(rows) if truth.labels[r]]
    per_k, signature = {}, None
    for k in ks:
        per_k[str(k)], signature = _describe_scores(ctx, rows, k, done, with_captions, with_labels)
    notes = []
    if not with_captions:
        notes.append("no sampled row has human captions: BLEU-4 and ROUGE-L skipped")
    if not with_labels:
        notes.append("no sampled row has a label: label inclusion skipped")
    return {
        "captioner": captioner_label(ctx.pipeline.captioner),
        "rows": len(rows), "rows_with_captions": len(with_captions), "rows_with_labels": len(with_labels),
        "sample": [int(r) for r in rows], "by_k": per_k, "bleu_signature": signature,
        "rouge": dict(metrics.ROUGE_SETTINGS), "notes": notes, "examples": done.examples,
    }
