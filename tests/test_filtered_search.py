"""Filtered top-k inside FAISS against brute force on random data (hypothesis), plus filter parsing errors.

The property: when at least offset+k rows pass, a page has exactly k hits, all passing, in score order, equal
to the brute-force filtered ranking (scores within 1e-4). The filter semantics are re-implemented here in
plain Python, so the pyarrow mask is checked too.
"""

from __future__ import annotations

import json

import faiss
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rag.search import filtered as filtered_search
from rag.errors import InvalidInput
from rag.search.filtered import search_page
from rag.search.filters import FilterCache, parse_filters

ROWS, DIM = 600, 16
LABELS = ["dog", "cat", "bird", None]
WORDS = ["beach", "city", "forest", "Beach house", "mountain"]


def _data(seed: int = 3):
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(ROWS, DIM)).astype(np.float32)
    faiss.normalize_L2(vectors)
    columns = {
        "label": [LABELS[i] for i in rng.integers(0, len(LABELS), ROWS)],
        "source": [f"{WORDS[i]}/{n}.jpg" for n, i in enumerate(rng.integers(0, len(WORDS), ROWS))],
        "captions": [[f"a {WORDS[i]}", f"photo {n}"] for n, i in enumerate(rng.integers(0, len(WORDS), ROWS))],
        "year": [str(y) if y % 7 else "unknown" for y in rng.integers(1980, 2025, ROWS)],
    }
    table = pa.table({**columns, "captions": pa.array(columns["captions"], pa.list_(pa.string()))})
    return vectors, columns, table


VECTORS, COLUMNS, TABLE = _data()
FLAT = faiss.IndexFlatIP(DIM)
FLAT.add(VECTORS)
CACHE = FilterCache(TABLE.column, ROWS, ["label", "source", "captions", "year"])


def _passes(row: int, spec: dict) -> bool:
    """The filter semantics, row by row in plain Python."""
    for column, conditions in spec.items():
        raw = COLUMNS[column][row]
        value = "\n".join(raw) if column == "captions" else raw
        for op, bound in conditions.items():
            if value is None:
                return False
            number = float(value) if value.replace(".", "", 1).isdigit() else None
            if op == "contains" and str(bound).lower() not in value.lower():
                return False
            if op == "in" and value not in bound and (number is None or number not in bound):
                return False
            if op in ("eq", "min", "max"):
                left = number if isinstance(bound, (int, float)) else value
                if left is None:
                    return False
                if (op == "eq" and left != bound) or (op == "min" and left < bound) or (op == "max" and left > bound):
                    return False
    return True


def _brute(query: np.ndarray, spec: dict) -> tuple[np.ndarray, np.ndarray]:
    scores = VECTORS @ query[0]
    ids = np.array([i for i in range(ROWS) if _passes(i, spec)], dtype=np.int64)
    order = np.lexsort((ids, -scores[ids]))
    return ids[order], scores[ids][order]


conditions = st.one_of(
    st.lists(st.sampled_from(["dog", "cat", "bird"]), min_size=1, max_size=3, unique=True),
    st.sampled_from(["dog", "cat"]),
    st.fixed_dictionaries({}, optional={"min": st.integers(1975, 2030), "max": st.integers(1975, 2030)}).filter(bool),
    st.fixed_dictionaries({"contains": st.sampled_from(["beach", "BEACH", "o", "house", "zzz"])}),
    st.fixed_dictionaries({"eq": st.sampled_from(["2001", 2001, 1999.0, "unknown"])}),
)
filters = st.dictionaries(st.sampled_from(["label", "source", "captions", "year"]), conditions, min_size=0, max_size=3)


def _valid(column: str, condition) -> bool:
    if column in ("source", "captions"):
        return isinstance(condition, dict) and "contains" in condition
    if column == "label":
        return isinstance(condition, (list, str))
    return isinstance(condition, dict)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    spec=filters.map(lambda f: {c: v for c, v in f.items() if _valid(c, v)}),
    k=st.integers(1, 50),
    offset=st.integers(0, 80),
    seed=st.integers(0, 2**31 - 1),
    as_json=st.booleans(),
)
def test_filtered_page_equals_brute_force(spec, k, offset, seed, as_json):
    query = np.random.default_rng(seed).normal(size=(1, DIM)).astype(np.float32)
    faiss.normalize_L2(query)
    row_filter = CACHE.compile(json.dumps(spec) if as_json else spec)
    page = search_page(FLAT, query, k, offset, row_filter)
    spec = parse_filters(spec, CACHE.columns)  # {"label": ["dog"]} -> {"label": {"in": ["dog"]}}
    ids, scores = _brute(query, spec)
    expected = list(zip(ids[offset:offset + k].tolist(), scores[offset:offset + k].tolist()))
    assert (row_filter.count if row_filter else ROWS) == len(ids)
    assert len(page) == len(expected) == max(0, min(k, len(ids) - offset))
    assert all(_passes(i, spec) for i, _ in page)
    assert np.allclose([s for _, s in page], [s for _, s in expected], atol=1e-4)
    assert [i for i, _ in page] == [i for i, _ in expected]


def test_pages_are_contiguous_and_threshold_cuts():
    query = VECTORS[5:6]
    row_filter = CACHE.compile({"label": ["dog", "cat"]})
    whole = search_page(FLAT, query, 40, 0, row_filter)
    pages = [search_page(FLAT, query, 10, offset, row_filter) for offset in (0, 10, 20, 30)]
    assert sum(pages, []) == whole
    threshold = whole[17][1]
    cut = search_page(FLAT, query, 40, 0, row_filter, threshold=threshold)
    assert cut == [hit for hit in whole if hit[1] >= threshold] and len(cut) >= 18
    assert all(score >= threshold for _, score in search_page(FLAT, query, 10, 10, row_filter, threshold))


def test_exact_duplicate_rows_do_not_straddle_pages():
    vectors = np.repeat(VECTORS[:30], 3, axis=0)  # every vector three times: equal scores everywhere
    index = faiss.IndexFlatIP(DIM)
    index.add(vectors)
    pages = [search_page(index, VECTORS[:1], 4, offset) for offset in range(0, 40, 4)]
    ids = [i for page in pages for i, _ in page]
    assert len(ids) == len(set(ids)) == 40
    assert ids == [i for i, _ in search_page(index, VECTORS[:1], 40, 0)]


@pytest.mark.parametrize("factory, force_selector", [("HNSW16,Flat", False), ("HNSW16,Flat", True), ("PQ4x4", False)])
def test_approximate_indexes_still_return_k_passing_hits(factory, force_selector, monkeypatch):
    """HNSW searches its flat storage exactly (or the graph with the selector); PQ takes no selector and widens."""
    if force_selector:
        monkeypatch.setattr(filtered_search, "use_exact_subset", lambda passing, total: False)
    index = faiss.index_factory(DIM, factory, faiss.METRIC_INNER_PRODUCT)
    index.train(VECTORS)
    index.add(VECTORS)
    row_filter = CACHE.compile({"label": "bird", "year": {"min": 2000}})
    page = search_page(index, VECTORS[:1], 10, 0, row_filter)
    assert len(page) == 10 and all(_passes(i, row_filter.spec) for i, _ in page)
    if factory.startswith("HNSW") and not force_selector:
        ids, _ = _brute(VECTORS[:1], row_filter.spec)
        assert [i for i, _ in page] == ids[:10].tolist()


@pytest.mark.parametrize(
    "filters, message",
    [
        ({"colour": "red"}, "Unknown filter column 'colour': this collection has label, source, captions, year"),
        ({"year": {"after": 2000}}, "Unknown filter operator 'after' on 'year': use one of eq, in, contains, min, max"),
        ({"label": []}, "needs a non-empty list"),
        ({"year": {}}, "has no condition"),
        ({"year": {"min": True}}, "use a text or a number"),
        ({"year": {"min": None}}, "use a text or a number"),
        ({"year": {"min": float("inf")}}, "not a finite number"),
        ({"captions": {"min": "a"}}, "takes only contains or eq"),
        ('{"label": ', "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
    ],
)
def test_bad_filters_are_refused_naming_what_is_valid(filters, message):
    with pytest.raises(InvalidInput) as error:
        CACHE.compile(filters)
    assert message in str(error.value)


def test_no_filter_means_every_row():
    assert CACHE.compile(None) is None and CACHE.compile("") is None and CACHE.compile({}) is None
    assert CACHE.compile({"label": "nothing-like-this"}).count == 0
    assert search_page(FLAT, VECTORS[:1], 5, 0, CACHE.compile({"label": "nothing-like-this"})) == []
