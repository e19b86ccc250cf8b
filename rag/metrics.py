"""Retrieval and caption metrics as pure, vectorised functions (no models, no I/O).

Retrieval metrics work on one of two representations:

* **ranks**: a float array with, per query, the 1-based rank of its best-ranked relevant item, or
  ``inf`` when no relevant item was found (within the searched depth);
* a **relevance matrix**: ``relevant[q, i]`` is True when the item at rank ``i + 1`` of query ``q``'s
  result list is relevant (lists shorter than the depth are padded with False).

``ranks_from_scores`` turns a dense score matrix (higher = better) into ranks, breaking ties
*pessimistically*: a relevant item tied with irrelevant ones is ranked after all of them, so a model
that gives everything the same score gets no credit. Rankings that come from a search (FAISS) keep the
order the search returned.

Conventions (Flickr30k / MSCOCO retrieval protocol):

* ``Recall@K`` is the fraction of queries with *at least one* relevant item in the top K (for
  image -> text, any of the image's captions). With exactly one relevant item per query (text ->
  image) this equals IR recall; with several it is the hit rate (torchmetrics ``RetrievalHitRate``),
  not the fraction of relevant items retrieved (torchmetrics ``RetrievalRecall``).
* ``MRR`` is the mean of 1 / rank of the first relevant item, 0 when none was found within the
  searched depth (so it is MRR@depth; exact when the depth covers the whole collection).
* ``median rank`` is ``numpy.median`` of the ranks (so it can end in .5 for an even count), ``inf``
  when at least half the queries found nothing within the depth.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np

DEFAULT_KS = (1, 5, 10)

# ----------------------------------------------------------------------------------------------------
# Ranks
# ----------------------------------------------------------------------------------------------------


def ranks_from_relevance(relevant: np.ndarray) -> np.ndarray:
    """1-based rank of the first True in each row of a (queries x depth) relevance matrix; ``inf`` if none.

    >>> ranks_from_relevance(np.array([[1, 0, 0], [0, 0, 1], [0, 0, 0]], bool)).tolist()
    [1.0, 3.0, inf]
    """
    relevant = np.asarray(relevant, dtype=bool)
    if relevant.ndim != 2:
        raise ValueError(f"relevance must be a 2-d (queries x depth) matrix, got shape {relevant.shape}")
    found = relevant.any(axis=1)
    first = relevant.argmax(axis=1).astype(np.float64) + 1.0
    return np.where(found, first, np.inf)


def ranks_from_scores(scores: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """Rank of the best relevant item per query of a dense (queries x items) score matrix, ties pessimistic.

    rank = 1 + number of irrelevant items scoring >= the best relevant score; ``inf`` for a query with
    no relevant item. Scores must be finite.
    """
    scores = np.asarray(scores)
    if not np.issubdtype(scores.dtype, np.floating):
        scores = scores.astype(np.float64)
    relevant = np.asarray(relevant, dtype=bool)
    if scores.shape != relevant.shape or scores.ndim != 2:
        raise ValueError(f"scores {scores.shape} and relevance {relevant.shape} must be the same 2-d shape")
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite")
    best = np.where(relevant, scores, -np.inf).max(axis=1, initial=-np.inf)
    beaten_or_tied = ((scores >= best[:, None]) & ~relevant).sum(axis=1)
    return np.where(np.isfinite(best), 1.0 + beaten_or_tied, np.inf)


def relevance_from_ids(result_ids: np.ndarray, relevant_sets: Sequence[Iterable[int]]) -> np.ndarray:
    """Relevance matrix of search results (queries x depth, padded with -1) against each query's relevant ids."""
    result_ids = np.asarray(result_ids, dtype=np.int64)
    if result_ids.ndim != 2 or len(result_ids) != len(relevant_sets):
        raise ValueError("result_ids must be (queries x depth) with one relevant set per query")
    out = np.zeros(result_ids.shape, dtype=bool)
    for q, wanted in enumerate(relevant_sets):
        wanted_array = np.fromiter((int(i) for i in wanted), dtype=np.int64)
        out[q] = np.isin(result_ids[q], wanted_array) & (result_ids[q] >= 0)
    return out


# ----------------------------------------------------------------------------------------------------
# Rank metrics
# ----------------------------------------------------------------------------------------------------


def _ranks(ranks: Sequence[float] | np.ndarray) -> np.ndarray:
    array = np.asarray(ranks, dtype=np.float64).ravel()
    if len(array) == 0:
        raise ValueError("no queries to average over")
    if np.isnan(array).any() or (array < 1).any():
        raise ValueError("ranks are 1-based (>= 1) or inf")
    return array


def recall_at_k(ranks: Sequence[float] | np.ndarray, k: int) -> float:
    """Fraction of queries whose first relevant item is in the top k (Recall@K / hit rate / top-k accuracy)."""
    if k < 1:
        raise ValueError("k must be >= 1")
    return float(np.mean(_ranks(ranks) <= k))


def mean_reciprocal_rank(ranks: Sequence[float] | np.ndarray) -> float:
    """Mean of 1/rank, counting a query with no relevant item found (rank ``inf``) as 0."""
    return float(np.mean(1.0 / _ranks(ranks)))


def median_rank(ranks: Sequence[float] | np.ndarray) -> float:
    """Median of the ranks (``inf`` when at least half the queries found nothing)."""
    array = np.sort(_ranks(ranks))
    n = len(array)
    middle = array[(n - 1) // 2 : n // 2 + 1]
    return float(np.inf if np.isinf(middle).any() else middle.mean())


def rank_summary(ranks: Sequence[float] | np.ndarray, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float | None]:
    """``{"R@1": .., "R@5": .., "R@10": .., "MRR": .., "median_rank": ..}`` (median ``None`` when infinite)."""
    out: dict[str, float | None] = {f"R@{k}": recall_at_k(ranks, k) for k in ks}
    out["MRR"] = mean_reciprocal_rank(ranks)
    median = median_rank(ranks)
    out["median_rank"] = None if np.isinf(median) else median
    return out


def hit_rate_at_k(relevant: np.ndarray, k: int) -> float:
    """Fraction of queries with any relevant item among the first k results (top-k accuracy)."""
    relevant = np.asarray(relevant, dtype=bool)
    if k < 1:
        raise ValueError("k must be >= 1")
    if len(relevant) == 0:
        raise ValueError("no queries to average over")
    return float(relevant[:, :k].any(axis=1).mean())


def average_precision_at_k(
    relevant: np.ndarray, n_relevant: Sequence[int] | np.ndarray, k: int, normalise: str = "min"
) -> np.ndarray:
    """AP@k per query from a relevance matrix in rank order.

    AP@k = (1 / Z) * sum_{i=1..k} P@i * rel_i, where P@i is the precision of the first i results and
    rel_i is 1 when result i is relevant. The normaliser Z is

    * ``"min"`` (default, the one ``rag.evaluate`` reports): ``min(k, R)`` with R the number of relevant
      items for the query in the whole collection — 1.0 means the top k are as good as they can be;
    * ``"retrieved"``: the number of relevant items found in the top k (torchmetrics
      ``RetrievalMAP(top_k=k)``), which does not penalise relevant items missing from the top k.

    Queries with R = 0 get ``nan`` (AP is undefined; leave them out of the mean).
    Example: relevance [1, 0, 1] with R = 4, k = 3: (1/1 + 2/3) / min(3, 4) = 0.5556.
    """
    relevant = np.asarray(relevant, dtype=bool)[:, :k]
    n_relevant = np.asarray(n_relevant, dtype=np.float64)
    if len(n_relevant) != len(relevant):
        raise ValueError("one relevant count per query")
    if k < 1:
        raise ValueError("k must be >= 1")
    hits = relevant.astype(np.float64)
    positions = np.arange(1, relevant.shape[1] + 1, dtype=np.float64)
    precision_sum = (np.cumsum(hits, axis=1) / positions * hits).sum(axis=1)
    if (hits.sum(axis=1) > n_relevant).any():
        raise ValueError("more relevant items retrieved than exist: check n_relevant")
    if normalise == "min":
        denominator = np.minimum(float(k), n_relevant)
    elif normalise == "retrieved":
        denominator = hits.sum(axis=1)
    else:
        raise ValueError(f"normalise must be 'min' or 'retrieved', not {normalise!r}")
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = np.where(denominator > 0, precision_sum / np.maximum(denominator, 1e-300), 0.0)
    return np.where(n_relevant > 0, ap, np.nan)


def mean_average_precision_at_k(
    relevant: np.ndarray, n_relevant: Sequence[int] | np.ndarray, k: int = 10, normalise: str = "min"
) -> float:
    """Mean of ``average_precision_at_k`` over the queries that have at least one relevant item."""
    ap = average_precision_at_k(relevant, n_relevant, k, normalise)
    ap = ap[~np.isnan(ap)]
    if len(ap) == 0:
        raise ValueError("no query has a relevant item")
    return float(ap.mean())


def chance_recall_at_k(n_items: int, n_relevant: Sequence[int] | np.ndarray, k: int) -> float:
    """Expected Recall@K of a random ranking: mean over queries of 1 - C(N - R, k) / C(N, k).

    With one relevant item among N this is k / N.
    """
    n_relevant = np.asarray(n_relevant, dtype=np.float64)
    k = min(int(k), int(n_items))
    j = np.arange(k, dtype=np.float64)
    miss = np.prod(np.clip((n_items - n_relevant[:, None] - j) / (n_items - j), 0.0, None), axis=1)
    return float(np.mean(1.0 - miss))


def chance_mrr(n_items: int, n_relevant: Sequence[int] | np.ndarray) -> float:
    """Expected MRR of a random ranking: E[1 / rank of the first of R relevant items among N].

    P(first relevant at rank x) = C(N - x, R - 1) / C(N, R); with R = 1 this is H_N / N.
    """
    n_relevant = np.asarray(n_relevant, dtype=np.int64)
    out = np.empty(len(n_relevant), dtype=np.float64)
    x = np.arange(1, n_items + 1, dtype=np.float64)
    for r in np.unique(n_relevant):
        # P(X >= x) = C(N - x + 1, R) / C(N, R) = prod_{j<R} (N - x + 1 - j) / (N - j); P(X = x) by differencing
        j = np.arange(r, dtype=np.float64)
        survive = np.prod(np.clip((n_items - x[:, None] + 1 - j) / (n_items - j), 0.0, None), axis=1)
        p = survive - np.append(survive[1:], 0.0)
        out[n_relevant == r] = float((p / x).sum()) if r > 0 else 0.0
    return float(out.mean())


# ----------------------------------------------------------------------------------------------------
# Text metrics for generated descriptions
# ----------------------------------------------------------------------------------------------------

BLEU_SETTINGS = {"tokenize": "13a", "lowercase": True, "max_ngram_order": 4}
ROUGE_SETTINGS = {"rouge_types": ["rougeL"], "use_stemmer": False}


def reference_streams(references: Sequence[Sequence[str]]) -> list[list[str | None]]:
    """Transpose per-hypothesis reference lists into sacrebleu's reference streams, padding with ``None``.

    sacrebleu wants N streams each as long as the hypotheses; a ``None`` entry is dropped per segment
    (not counted as an empty reference), so rows with fewer captions are scored against exactly their
    own captions. An empty string would instead act as a real zero-length reference and change the
    brevity penalty, which is why padding uses ``None``.
    """
    cleaned = [[r for r in refs if r and r.strip()] for refs in references]
    if any(not refs for refs in cleaned):
        raise ValueError("every hypothesis needs at least one non-empty reference")
    width = max(len(refs) for refs in cleaned)
    return [[refs[i] if i < len(refs) else None for refs in cleaned] for i in range(width)]


def corpus_bleu4(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> tuple[float, str]:
    """Corpus BLEU-4 (sacrebleu, 13a tokenisation, lowercased) in 0..100 and its sacrebleu signature.

    Each hypothesis is scored against its own (variable-size) list of references: n-gram matches
    clipped by the max count over that row's references, the closest reference length for the brevity
    penalty, statistics summed over the corpus.
    """
    from sacrebleu.metrics import BLEU

    if len(hypotheses) != len(references):
        raise ValueError("one reference list per hypothesis")
    if not hypotheses:
        raise ValueError("no hypotheses")
    bleu = BLEU(**BLEU_SETTINGS)
    score = bleu.corpus_score([h or "" for h in hypotheses], reference_streams(references))
    return float(score.score), str(bleu.get_signature())


def rouge_l_f(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Mean over hypotheses of the ROUGE-L F-measure against the best-matching reference (rouge-score)."""
    from rouge_score import rouge_scorer

    if len(hypotheses) != len(references):
        raise ValueError("one reference list per hypothesis")
    if not hypotheses:
        raise ValueError("no hypotheses")
    scorer = rouge_scorer.RougeScorer(**ROUGE_SETTINGS)
    values = []
    for hypothesis, refs in zip(hypotheses, references):
        refs = [r for r in refs if r and r.strip()]
        if not refs:
            raise ValueError("every hypothesis needs at least one non-empty reference")
        values.append(max(scorer.score(ref, hypothesis or "")["rougeL"].fmeasure for ref in refs))
    return float(np.mean(values))


def label_pattern(label: str) -> re.Pattern[str]:
    """Case-insensitive, word-bounded pattern for a label; its words may be split by spaces, '_' or '-'.

    "red circle" matches "A Red  circle." and "red-circle" but not "bored circles"; "golden_retriever"
    matches "golden retriever".
    """
    words = [w for w in re.split(r"[\s_\-]+", label.strip()) if w]
    if not words:
        raise ValueError("empty label")
    body = r"[\s_\-]+".join(re.escape(w) for w in words)
    return re.compile(rf"(?<!\w){body}(?!\w)", re.IGNORECASE)


def label_included(text: str, label: str) -> bool:
    """Whether ``text`` mentions ``label`` (case-insensitive, on word boundaries)."""
    return bool(label_pattern(label).search(text or ""))


def label_inclusion_rate(texts: Sequence[str], labels: Sequence[str]) -> float:
    """Fraction of texts that mention their own label."""
    if len(texts) != len(labels) or not texts:
        raise ValueError("one label per text, at least one text")
    return float(np.mean([label_included(t, l) for t, l in zip(texts, labels)]))


def mean_words(texts: Sequence[str]) -> float:
    """Mean length in whitespace-separated words."""
    if not texts:
        raise ValueError("no texts")
    return float(np.mean([len((t or "").split()) for t in texts]))


# ----------------------------------------------------------------------------------------------------
# Map (2-D layout) quality
# ----------------------------------------------------------------------------------------------------


def _knn_same_label(points: np.ndarray, labels: np.ndarray, k: int, metric: str) -> np.ndarray:
    """For every point, how many of its k nearest other points share its label."""
    from sklearn.neighbors import NearestNeighbors

    if len(points) != len(labels) or len(points) <= k:
        raise ValueError(f"need one label per point and more than k={k} points")
    neighbours = NearestNeighbors(n_neighbors=k, metric=metric).fit(points).kneighbors(return_distance=False)
    return (labels[neighbours] == labels[:, None]).sum(axis=1)


def attainable_same_label(labels: Sequence[str], k: int) -> np.ndarray:
    """Per point, the most of its k neighbours that can share its label: min(k, rows with that label - 1)."""
    _, inverse, counts = np.unique(np.asarray(labels, dtype=object).astype(str), return_inverse=True,
                                   return_counts=True)
    return np.minimum(k, counts[inverse] - 1)


def knn_label_agreement(points: np.ndarray, labels: Sequence[str], k: int = 10, metric: str = "euclidean",
                        normalise: bool = False) -> float:
    """Mean fraction of each point's k nearest other points that share its label.

    Raw, it cannot reach 1 when a label has k rows or fewer; ``normalise=True`` divides each point's count by
    what its label allows (``attainable_same_label``), so 1 = every neighbourhood as pure as the labels permit
    (points whose label is theirs alone are left out).
    """
    points = np.asarray(points, dtype=np.float32)
    labels = np.asarray(labels, dtype=object)
    same = _knn_same_label(points, labels, k, metric)
    if not normalise:
        return float(np.mean(same / k))
    attainable = attainable_same_label(labels, k)
    keep = attainable > 0
    if not keep.any():
        raise ValueError("every label has a single row: nothing to agree with")
    return float(np.mean(same[keep] / attainable[keep]))


def map_quality(
    vectors: np.ndarray, xy: np.ndarray, labels: Sequence[str | None], k: int = 10, sample: int = 2000, seed: int = 0
) -> dict[str, float | int]:
    """How well a 2-D map keeps neighbourhoods, on a seeded sample of rows.

    Label agreement (cosine in the embedding space, euclidean on the map) raw, its ceiling on this sample, and
    normalised by that ceiling; ``trustworthiness`` (1 = no false neighbours on the map) and ``continuity``
    (1 = no true neighbours torn apart: trustworthiness with the two spaces swapped; the vectors are unit length,
    so euclidean ranks equal cosine ranks).
    """
    from sklearn.manifold import trustworthiness

    vectors, xy = np.asarray(vectors, dtype=np.float32), np.asarray(xy, dtype=np.float32)
    if len(vectors) != len(xy):
        raise ValueError("one map point per vector")
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(xy), size=min(sample, len(xy)), replace=False))
    labelled = np.array([i for i in rows if labels[i]], dtype=np.int64)
    out: dict[str, float | int] = {"rows": int(len(xy)), "sampled": int(len(rows)), "k": k}
    if len(labelled) > k:
        chosen = [labels[i] for i in labelled]
        out["label_agreement_ceiling"] = float(np.mean(attainable_same_label(chosen, k) / k))
        for space, points, metric in (("embedding", vectors[labelled], "cosine"), ("map", xy[labelled], "euclidean")):
            out[f"label_agreement_{space}"] = knn_label_agreement(points, chosen, k, metric=metric)
            if out["label_agreement_ceiling"] > 0:
                out[f"label_agreement_{space}_normalised"] = knn_label_agreement(points, chosen, k, metric=metric,
                                                                                   normalise=True)
    if len(rows) > 2 * k:
        unit = vectors[rows] / np.maximum(np.linalg.norm(vectors[rows], axis=1, keepdims=True), 1e-12)
        out["trustworthiness"] = float(trustworthiness(unit, xy[rows], n_neighbors=k))
        out["continuity"] = float(trustworthiness(xy[rows], unit, n_neighbors=k))
    return out
