"""rag.metrics against hand-worked cases, torchmetrics' retrieval metrics, sacrebleu and rouge-score."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU
from torchmetrics.retrieval import RetrievalHitRate, RetrievalMAP, RetrievalMRR, RetrievalRecall

from rag import metrics

# ---------------------------------------------------------------------------------------------------
# Hand-worked retrieval cases
# ---------------------------------------------------------------------------------------------------


def test_rank_metrics_hand_worked():
    # three queries whose answers sit at ranks 1, 3 and 11
    ranks = [1, 3, 11]
    assert metrics.recall_at_k(ranks, 1) == pytest.approx(1 / 3)
    assert metrics.recall_at_k(ranks, 5) == pytest.approx(2 / 3)
    assert metrics.recall_at_k(ranks, 10) == pytest.approx(2 / 3)
    assert metrics.mean_reciprocal_rank(ranks) == pytest.approx((1 + 1 / 3 + 1 / 11) / 3)
    assert metrics.median_rank(ranks) == 3
    summary = metrics.rank_summary(ranks)
    expected = {"R@1": 1 / 3, "R@5": 2 / 3, "R@10": 2 / 3, "MRR": (1 + 1 / 3 + 1 / 11) / 3, "median_rank": 3}
    assert summary == pytest.approx(expected)


def test_rank_metrics_with_not_found_and_even_count():
    # answers at ranks 2, 4, 1 and one not found within the searched depth (inf: reciprocal rank 0)
    ranks = [2, math.inf, 4, 1]
    assert metrics.recall_at_k(ranks, 1) == 0.25
    assert metrics.recall_at_k(ranks, 5) == 0.75
    assert metrics.mean_reciprocal_rank(ranks) == pytest.approx((1 / 2 + 0 + 1 / 4 + 1) / 4)  # 0.4375
    assert metrics.median_rank(ranks) == 3.0  # sorted 1, 2, 4, inf -> (2 + 4) / 2
    assert metrics.median_rank([1, math.inf, math.inf]) == math.inf
    assert metrics.rank_summary([1, math.inf, math.inf])["median_rank"] is None
    with pytest.raises(ValueError):
        metrics.recall_at_k([], 1)
    with pytest.raises(ValueError):
        metrics.recall_at_k([0, 2], 1)  # ranks are 1-based


def test_ranks_from_relevance_and_ids():
    relevant = np.array([[1, 0, 0], [0, 0, 1], [0, 0, 0]], dtype=bool)
    assert metrics.ranks_from_relevance(relevant).tolist() == [1.0, 3.0, math.inf]
    ids = np.array([[4, 7, 9], [3, -1, -1], [5, 6, 2]])
    found = metrics.relevance_from_ids(ids, [[9], [3, 8], [0]])
    assert found.tolist() == [[False, False, True], [True, False, False], [False, False, False]]
    assert metrics.relevance_from_ids(np.array([[-1, 2]]), [[-1]]).tolist() == [[False, False]]  # padding never matches


def test_ranks_from_scores_breaks_ties_pessimistically():
    scores = np.array([
        [0.9, 0.5, 0.5, 0.1],  # relevant item 1 is tied with irrelevant item 2 -> ranked after it: 3
        [0.9, 0.5, 0.7, 0.1],  # relevant items 1 and 2; the best (0.7) is beaten by 0.9 only: 2
        [0.2, 0.2, 0.2, 0.2],  # a constant-score "model" gets the worst rank, not rank 1
        [0.3, 0.2, 0.1, 0.0],  # no relevant item
    ])
    relevant = np.array([[0, 1, 0, 0], [0, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=bool)
    assert metrics.ranks_from_scores(scores, relevant).tolist() == [3.0, 2.0, 4.0, math.inf]


def test_average_precision_at_k_hand_worked():
    rel = np.zeros((5, 10), dtype=bool)
    rel[0, [0, 2]] = True  # hits at ranks 1 and 3
    rel[1, [0, 2]] = True
    rel[2, :] = True       # ten hits
    rel[3, 1] = True       # one hit at rank 2
    n_relevant = [2, 4, 20, 1, 3]  # relevant items in the whole collection (R)
    ap = metrics.average_precision_at_k(rel, n_relevant, k=10)
    expected = [
        (1 / 1 + 2 / 3) / 2,  # R = 2: both found -> 0.8333
        (1 / 1 + 2 / 3) / 4,  # R = 4: two missing ones count against it -> 0.4167
        1.0,                  # R = 20 > k: normalised by min(10, 20) = 10
        1 / 2,                # first and only relevant at rank 2
        0.0,                  # none found
    ]
    assert ap == pytest.approx(expected)
    retrieved = metrics.average_precision_at_k(rel, n_relevant, k=10, normalise="retrieved")
    assert retrieved == pytest.approx([(1 + 2 / 3) / 2, (1 + 2 / 3) / 2, 1.0, 0.5, 0.0])
    # AP@3 of [1, 0, 1] with R = 4: (1 + 2/3) / min(3, 4)
    assert metrics.average_precision_at_k(rel[1:2], [4], k=3)[0] == pytest.approx(5 / 9)
    # a query with no relevant item in the collection is undefined and left out of the mean
    with_empty = metrics.average_precision_at_k(np.zeros((1, 10), bool), [0], k=10)
    assert np.isnan(with_empty[0])
    two = np.vstack([rel[:1], np.zeros((1, 10), bool)])
    assert metrics.mean_average_precision_at_k(two, [2, 0]) == pytest.approx(5 / 6)
    with pytest.raises(ValueError):
        metrics.average_precision_at_k(rel[2:3], [3], k=10)  # 10 hits cannot come from 3 relevant items


def test_hit_rate_is_top_k_accuracy():
    rel = np.array([[0, 1, 0, 0, 0, 1], [1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1]], dtype=bool)
    assert metrics.hit_rate_at_k(rel, 1) == pytest.approx(1 / 3)
    assert metrics.hit_rate_at_k(rel, 5) == pytest.approx(2 / 3)
    assert metrics.hit_rate_at_k(rel, 6) == 1.0


def test_chance_levels_hand_worked_and_simulated():
    assert metrics.chance_recall_at_k(96, [1], 10) == pytest.approx(10 / 96)  # one answer among 96
    assert metrics.chance_recall_at_k(4, [2, 2], 2) == pytest.approx(1 - (2 / 4) * (1 / 3))  # 5/6
    assert metrics.chance_recall_at_k(5, [1], 10) == 1.0
    assert metrics.chance_mrr(3, [1]) == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)  # H_3 / 3
    assert metrics.chance_mrr(3, [2]) == pytest.approx(2 / 3 * 1 + 1 / 3 * 1 / 2)  # first relevant at 1 or 2
    rng = np.random.default_rng(0)
    first = np.array([np.flatnonzero(rng.permutation(20) < 3)[0] + 1 for _ in range(20000)])
    assert metrics.chance_mrr(20, [3]) == pytest.approx(np.mean(1 / first), abs=0.01)
    assert metrics.chance_recall_at_k(20, [3], 5) == pytest.approx(np.mean(first <= 5), abs=0.01)


# ---------------------------------------------------------------------------------------------------
# Against torchmetrics on random scores
# ---------------------------------------------------------------------------------------------------


def _random_case(seed: int, queries: int = 60, items: int = 40, single: bool = False):
    rng = np.random.default_rng(seed)
    # strictly positive, tie-free scores: torchmetrics treats an item with a score <= 0 as not relevant
    scores = rng.uniform(0.01, 1.0, size=(queries, items))
    if single:
        relevant = np.zeros((queries, items), dtype=bool)
        relevant[np.arange(queries), rng.integers(0, items, queries)] = True
    else:
        relevant = rng.random((queries, items)) < rng.uniform(0.02, 0.3, size=(queries, 1))
        relevant[np.arange(queries), rng.integers(0, items, queries)] = True  # at least one each
    order = np.argsort(-scores, axis=1)
    in_rank_order = np.take_along_axis(relevant, order, axis=1)
    flat = {
        "preds": torch.tensor(scores.ravel()),
        "target": torch.tensor(relevant.ravel()),
        "indexes": torch.arange(queries).repeat_interleave(items),
    }
    return scores, relevant, in_rank_order, flat


def _tm(metric, flat) -> float:
    return float(metric(**flat))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_single_answer_recall_and_mrr_match_torchmetrics(seed):
    scores, relevant, in_rank_order, flat = _random_case(seed, single=True)
    ranks = metrics.ranks_from_scores(scores, relevant)
    assert np.array_equal(ranks, metrics.ranks_from_relevance(in_rank_order))  # no ties: same ranks both ways
    for k in (1, 5, 10):
        assert metrics.recall_at_k(ranks, k) == pytest.approx(_tm(RetrievalRecall(top_k=k), flat), abs=1e-6)
    assert metrics.mean_reciprocal_rank(ranks) == pytest.approx(_tm(RetrievalMRR(), flat), abs=1e-6)
    # a search cut at depth 10: deeper answers are "not found", which is torchmetrics' MRR@10
    cut = np.where(ranks <= 10, ranks, np.inf)
    assert metrics.mean_reciprocal_rank(cut) == pytest.approx(_tm(RetrievalMRR(top_k=10), flat), abs=1e-6)


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_several_answers_hit_rate_mrr_and_map_match_torchmetrics(seed):
    scores, relevant, in_rank_order, flat = _random_case(seed)
    ranks = metrics.ranks_from_scores(scores, relevant)
    assert np.array_equal(ranks, metrics.ranks_from_relevance(in_rank_order))
    for k in (1, 5, 10):
        # Recall@K here is the Flickr/COCO "any relevant item in the top K" = torchmetrics' hit rate ...
        hit = _tm(RetrievalHitRate(top_k=k), flat)
        assert metrics.recall_at_k(ranks, k) == pytest.approx(hit, abs=1e-6)
        assert metrics.hit_rate_at_k(in_rank_order, k) == pytest.approx(hit, abs=1e-6)
        # ... not the fraction of relevant items retrieved (torchmetrics' RetrievalRecall), which is lower
        assert metrics.recall_at_k(ranks, k) >= _tm(RetrievalRecall(top_k=k), flat) - 1e-9
    assert metrics.mean_reciprocal_rank(ranks) == pytest.approx(_tm(RetrievalMRR(), flat), abs=1e-6)

    n_relevant = relevant.sum(axis=1)
    # over the full ranking, AP normalised by min(N, R) = R is the textbook AP = torchmetrics' RetrievalMAP()
    full = metrics.mean_average_precision_at_k(in_rank_order, n_relevant, k=relevant.shape[1])
    assert full == pytest.approx(_tm(RetrievalMAP(), flat), abs=1e-6)
    # torchmetrics' RetrievalMAP(top_k=10) divides by the relevant items found in the top 10
    retrieved = metrics.mean_average_precision_at_k(in_rank_order, n_relevant, k=10, normalise="retrieved")
    assert retrieved == pytest.approx(_tm(RetrievalMAP(top_k=10), flat), abs=1e-6)
    # our default divides by min(10, R): per query, ours * min(10, R) == torchmetrics' * found-in-top-10
    ours = metrics.average_precision_at_k(in_rank_order, n_relevant, k=10)
    theirs = metrics.average_precision_at_k(in_rank_order, n_relevant, k=10, normalise="retrieved")
    found = in_rank_order[:, :10].sum(axis=1)
    assert ours * np.minimum(10, n_relevant) == pytest.approx(theirs * found, abs=1e-9)
    assert (ours <= theirs + 1e-12).all()


# ---------------------------------------------------------------------------------------------------
# Text metrics against sacrebleu and rouge-score
# ---------------------------------------------------------------------------------------------------

HYPS = ["a red circle on a white background", "a small blue square", "Green triangle", "a yellow circle"]
REFS = [
    ["a red circle", "picture number 1", "A red circle on a white background."],
    ["a large blue square"],
    ["a green triangle", "an image of a green triangle"],
    ["a photo of a yellow square", "yellow square", "a yellow square", "picture number 7"],
]


def test_bleu_with_equal_reference_counts_is_sacrebleu():
    refs = [r[:1] for r in REFS]
    score, signature = metrics.corpus_bleu4(HYPS, refs)
    direct = BLEU(lowercase=True).corpus_score(HYPS, [[r[0] for r in refs]])
    assert score == pytest.approx(direct.score)
    assert "nrefs:1" in signature and "case:lc" in signature and "tok:13a" in signature


def test_bleu_with_varying_reference_counts_sums_each_rows_own_statistics():
    score, signature = metrics.corpus_bleu4(HYPS, REFS)
    assert "nrefs:var" in signature
    # independent computation: score each row against exactly its own references, sum the statistics
    bleu = BLEU(lowercase=True)
    rows = [bleu.corpus_score([h], [[r] for r in refs]) for h, refs in zip(HYPS, REFS)]
    correct = [sum(r.counts[n] for r in rows) for n in range(4)]
    total = [sum(r.totals[n] for r in rows) for n in range(4)]
    expected = BLEU.compute_bleu(correct, total, sum(r.sys_len for r in rows), sum(r.ref_len for r in rows)).score
    assert score == pytest.approx(expected)


def test_bleu_pads_with_none_not_empty_strings():
    # "green triangle" (2 words) has one 5-word reference. Padded with "" it would also get a 0-word
    # reference, the closest length to 2, and escape the brevity penalty: 100 instead of
    # exp(1 - 9/6) * 100 = 60.65 (hyp_len 6, ref_len 5 + 4 = 9, all n-grams matched).
    hyps = ["green triangle", "a large blue square"]
    refs = [["a green triangle on white"], ["a large blue square", "large blue square"]]
    score, _ = metrics.corpus_bleu4(hyps, refs)
    assert score == pytest.approx(100 * math.exp(1 - 9 / 6))
    empty_padded = [["a green triangle on white", "a large blue square"], ["", "large blue square"]]
    assert BLEU(lowercase=True).corpus_score(hyps, empty_padded).score == pytest.approx(100.0)


def test_reference_streams_pad_with_none():
    assert metrics.reference_streams([["a", "b"], ["c"], ["d", " ", "e"]]) == [["a", "c", "d"], ["b", None, "e"]]
    with pytest.raises(ValueError):
        metrics.reference_streams([["a"], []])


def test_rouge_l_is_rouge_score_best_reference():
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    expected = np.mean([max(scorer.score(r, h)["rougeL"].fmeasure for r in refs) for h, refs in zip(HYPS, REFS)])
    assert metrics.rouge_l_f(HYPS, REFS) == pytest.approx(expected)
    assert metrics.rouge_l_f(["a red circle"], [["a red circle", "picture number 3"]]) == 1.0
    # hand-worked: LCS("a small blue square", "a large blue square") = "a blue square" = 3 words, P = R = 3/4
    assert metrics.rouge_l_f(["a small blue square"], [["a large blue square"]]) == pytest.approx(0.75)


@pytest.mark.parametrize(
    "text, label, included",
    [
        ("A Red  circle.", "red circle", True),
        ("a red-circle", "red circle", True),
        ("bored circles", "red circle", False),
        ("a redcircle", "red circle", False),
        ("a circle that is red", "red circle", False),
        ("Golden retriever on grass", "golden_retriever", True),
        ("code in C++!", "c++", True),
        ("", "cat", False),
    ],
)
def test_label_inclusion(text, label, included):
    assert metrics.label_included(text, label) is included


def test_label_inclusion_rate_and_words():
    texts = ["a red circle", "a blue square", "picture number 4"]
    assert metrics.label_inclusion_rate(texts, ["red circle", "blue square", "green triangle"]) == pytest.approx(2 / 3)
    assert metrics.mean_words(texts + [""]) == pytest.approx((3 + 3 + 3 + 0) / 4)
