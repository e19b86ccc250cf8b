"""The int8 exact scan (rag.search.int8_scan) returns exactly what exact search returns: the same ids, the same
scores (FAISS's own inner-product kernel), ties by row id, with 1 or 3 shards, k up to n, crowded scores, a batch
answered query by query, and the /search pages built on it. Its error bound holds for every row. Speed is
measured in benchmarks/exact_scan.py."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from rag.search import flat
from rag.search.batching import BatchingSearcher
from rag.search.filtered import search_page
from rag.search.filters import RowFilter
from rag.search.flat import HalfFlatSearcher, IndexSearcher, Int8FlatSearcher, make_searcher
from rag.search.index import build_index, load_index, save_index


def _planted(n: int, dim: int, seed: int) -> np.ndarray:
    """Clustered unit vectors with exact duplicates (ties), near-duplicates and one extreme row."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((12, dim)).astype(np.float32)
    x = centres[rng.integers(0, 12, n)] + 0.08 * rng.standard_normal((n, dim)).astype(np.float32)
    x[n // 2 : n // 2 + 25] = x[1]  # 26 identical rows: tied scores for every query
    x[n // 3 : n // 3 + 10] = x[2] + 1e-7 * rng.standard_normal((10, dim)).astype(np.float32)  # scores a hair apart
    x[7] = 0
    x[7, 0] = 1.0  # one row far outside every cluster: stretches dimension 0's quantisation range
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _exact(index: faiss.Index, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact search, as FAISS scores every row (its kernel for a selector search), ranked by score, then id."""
    everything = faiss.SearchParameters(sel=faiss.IDSelectorAll())  # (a Range selector would take the BLAS path)
    scores, ids = index.search(query[None, :], index.ntotal, params=everything)
    order = np.lexsort((ids[0], -scores[0]))[:k]
    return scores[0][order], ids[0][order]


def _queries(x: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    near = x[rng.integers(0, len(x), 12)] + 0.05 * rng.standard_normal((12, x.shape[1])).astype(np.float32)
    far = rng.standard_normal((6, x.shape[1])).astype(np.float32)  # random directions: low, crowded scores
    planted = np.stack([x[1], x[2], x[7], np.zeros(x.shape[1], np.float32)])  # ties at the top, an outlier, zero
    return np.concatenate([near, far, planted]).astype(np.float32)


@pytest.fixture(scope="module")
def mapped(tmp_path_factory) -> faiss.Index:
    """A 4000 x 64 Flat index memory-mapped from disk, as the app loads a collection."""
    path = tmp_path_factory.mktemp("exact-scan") / "index.faiss"
    save_index(build_index(_planted(4000, 64, seed=1), "Flat"), path)
    return load_index(path)


@pytest.mark.parametrize("shards", [1, 3])
@pytest.mark.parametrize("dim", [64, 40])  # 64: FAISS's integer SIMD kernel; 40: its scalar one
def test_int8_scan_equals_exact_search_ties_included(shards, dim):
    x = _planted(3000, dim, seed=dim)
    index = build_index(x, "Flat")
    searcher = Int8FlatSearcher(index, shards=shards)
    assert len(searcher.shards) == shards
    for q in _queries(x, seed=shards):
        for k in (1, 10, 50, len(x) - 3):
            scores, ids = searcher.search(q, k)
            truth_scores, truth_ids = _exact(index, q, k)
            np.testing.assert_array_equal(ids[0], truth_ids)
            np.testing.assert_array_equal(scores[0], truth_scores)
        plain_scores, _ = index.search(q[None, :], 10)  # FAISS's own top 10 (its BLAS path): the same scores
        np.testing.assert_allclose(searcher.search(q, 10)[0], plain_scores, atol=1e-6)


def test_tied_rows_come_back_lowest_id_first(mapped):
    x = faiss.rev_swig_ptr(mapped.get_xb(), mapped.ntotal * mapped.d).reshape(mapped.ntotal, mapped.d)
    scores, ids = Int8FlatSearcher(mapped, shards=3).search(x[1], 20)
    tied = [1, *range(2000, 2025)][:20]  # row 1 and its 25 copies at n // 2
    assert ids[0].tolist() == tied and len(set(scores[0].tolist())) == 1


def test_every_rows_score_lies_within_its_bound(mapped):
    searcher = Int8FlatSearcher(mapped, shards=3)
    x = searcher.vectors.astype(np.float64)
    codes = np.concatenate([faiss.vector_to_array(s.codes).reshape(-1, mapped.d) for _, s in searcher.shards])
    ints = codes.astype(np.float64) - 128
    for q in _queries(searcher.vectors, seed=9)[:-1]:
        folded = q.astype(np.float64) * searcher.step
        scale = np.abs(folded).max() / 127
        t = np.rint(folded / scale)
        estimate = q @ searcher.mid + scale * (ints @ t)
        bound = np.linalg.norm(q) * searcher.residual + np.linalg.norm(folded - scale * t) * searcher.code_norm
        assert (np.abs(x @ q - estimate) <= bound).all()


@pytest.mark.parametrize("spread, rows_rescored", [(0.03, "some"), (3e-3, "all")])
def test_crowded_scores_widen_the_scan_and_stay_exact(monkeypatch, spread, rows_rescored):
    """Rows crowded around the query: the first scan cannot tell the top 10, a scan keeping 8x more can (or, when
    every row is within the bound of the others, every row is rescored); never a wrong answer."""
    rng = np.random.default_rng(5)
    base = rng.standard_normal(32).astype(np.float32)
    x = base + spread * np.linalg.norm(base) * rng.standard_normal((40_000, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    index = build_index(x, "Flat")
    searcher = Int8FlatSearcher(index, shards=2)
    scans, rescored = [], []
    scan, candidates = searcher._scan, searcher._candidates
    monkeypatch.setattr(searcher, "_scan", lambda ints, wanted: scans.append(wanted) or scan(ints, wanted))
    monkeypatch.setattr(searcher, "_candidates", lambda *a: (lambda c: rescored.append(len(c)) or c)(candidates(*a)))
    for row in (7, 100, 2000):
        scores, ids = searcher.search(x[row], 10)
        truth_scores, truth_ids = _exact(index, x[row], 10)
        np.testing.assert_array_equal(ids[0], truth_ids)
        np.testing.assert_array_equal(scores[0], truth_scores)
    assert scans == [522, 8 * 522] * 3  # k + 512 kept, then 8 times more
    assert all(r == len(x) for r in rescored) if rows_rescored == "all" else max(rescored) < len(x) // 8


def test_a_batch_answers_each_query_as_alone_and_fp16_agrees(mapped):
    queries = _queries(faiss.rev_swig_ptr(mapped.get_xb(), mapped.ntotal * mapped.d).reshape(-1, mapped.d), seed=3)
    int8, half = Int8FlatSearcher(mapped), HalfFlatSearcher(mapped, shards=2)
    batch = int8.search(queries, 10)
    for q, query in enumerate(queries):
        alone = int8.search(query, 10)
        for ours in (alone, half.search(query, 10), (batch[0][q : q + 1], batch[1][q : q + 1])):
            np.testing.assert_array_equal(ours[1], alone[1])
            np.testing.assert_array_equal(ours[0], alone[0])


def test_pages_and_thresholds_through_the_searcher_are_exact(mapped):
    """/search without filters pages through the pipeline's searcher; with filters through FAISS's selector search.
    Both rank as exact search does, with the same scores for the same row."""
    searcher = BatchingSearcher(Int8FlatSearcher(mapped, shards=3))
    query = _queries(searcher.inner.vectors, seed=4)[0]
    scores, ids = _exact(mapped, query, mapped.ntotal)
    ranking = list(zip(ids.tolist(), scores.tolist()))
    pages = [search_page(searcher, query, 10, offset) for offset in (0, 10, 20)]
    assert [pair for page in pages for pair in page] == ranking[:30]
    cut = ranking[14][1]
    assert search_page(searcher, query, 50, 0, None, round(cut, 6)) == [p for p in ranking[:50] if round(p[1], 6) >= round(cut, 6)]
    mask = np.zeros(mapped.ntotal, dtype=bool)
    mask[::3] = True
    filtered = search_page(mapped, query, 10, 0, RowFilter({"rows": "every third"}, mask))
    assert filtered == [p for p in ranking if p[0] % 3 == 0][:10]


def test_the_pipeline_picks_int8_where_it_pays(monkeypatch):
    x = _planted(600, 16, seed=2)
    assert isinstance(make_searcher(build_index(x, "Flat")), HalfFlatSearcher)  # small: the fp16 scan is as fast
    monkeypatch.setattr(flat, "INT8_MIN_ROWS", 500)
    assert isinstance(make_searcher(build_index(x, "Flat")), Int8FlatSearcher)
    monkeypatch.setattr(flat, "MAX_DIM", 8)  # too wide for exact int32-in-float32 sums: fp16
    assert isinstance(make_searcher(build_index(x, "Flat")), HalfFlatSearcher)
    assert isinstance(make_searcher(build_index(x, "HNSW16,Flat")), IndexSearcher)


def test_scan_copy_is_a_quarter_of_the_vectors_and_small_cases_work():
    x = _planted(2000, 64, seed=8)
    searcher = Int8FlatSearcher(build_index(x, "Flat"), shards=2)
    assert searcher.nbytes == 2000 * 64 + 2000 * 8  # one byte a dimension, two float32 norms a row
    scores, ids = searcher.search(x[:3], 5000)  # k beyond n: every row, ranked
    assert ids.shape == (3, 2000) and sorted(ids[0].tolist()) == list(range(2000))
    empty = Int8FlatSearcher(faiss.IndexFlatIP(64))
    assert empty.search(x[0], 5)[1].tolist() == [[-1]]
