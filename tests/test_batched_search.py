"""Bursts of searches are served in batches (rag.search.batching) without changing what any caller sees: each call
gets its own result or its own error, /search_text keeps its API, and a burst answers as the same calls made
one at a time. Bursts are lined up deterministically: the first batch is held until the others wait behind it.
Throughput is measured in benchmarks/burst.py."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from gradio_client.exceptions import AppError
from test_app import LABELS, launch_app, make_client, shapes_collection

from rag.config import Settings
from rag.errors import InvalidInput
from rag.search.batching import BatchingSearcher, Coalescer, batch_encoder
from rag.search.flat import Int8FlatSearcher
from rag.search.index import build_index
from rag.startup import open_pipeline

BURST = [*LABELS, "a red circle", "a photo of a blue square", "yellow", "a large green triangle"]  # 16 queries


def _held_first_batch(work, started: threading.Event, release: threading.Event):
    """``work`` whose first call waits for ``release`` (after setting ``started``), so a burst lines up behind it."""
    calls = []

    def held(items):
        calls.append(list(items))
        if len(calls) == 1:
            started.set()
            assert release.wait(60)
        return work(items)

    return held, calls


def test_concurrent_calls_become_batches_each_with_its_own_result_or_error():
    started, release = threading.Event(), threading.Event()
    work, calls = _held_first_batch(lambda items: [ValueError(f"item {i} is bad") if i < 0 else 10 * i for i in items],
                                    started, release)
    coalescer = Coalescer(work, max_size=8)
    items = [1, 2, -3, 4, 5, 6, 7, 8, 9]
    with ThreadPoolExecutor(len(items) + 1) as pool:
        first = pool.submit(coalescer, 0)
        assert started.wait(60)
        rest = [pool.submit(coalescer, i) for i in items]
        assert coalescer.wait_for_waiting(len(items), timeout=60)
        release.set()
        assert first.result(60) == 0
        for item, future in zip(items, rest):
            if item < 0:
                with pytest.raises(ValueError, match="item -3 is bad"):
                    future.result(60)
            else:
                assert future.result(60) == 10 * item
    assert calls[0] == [0] and [len(c) for c in calls[1:]] == [8, 1]  # at most max_size, oldest first
    assert sorted(calls[1] + calls[2]) == sorted(items)
    assert coalescer(11) == 110 and calls[-1] == [11]  # a lone call runs at once, alone


@pytest.mark.parametrize("coupled", [False, True])
def test_texts_are_encoded_together_only_when_that_leaves_each_vector_unchanged(coupled):
    """An int8 encoder quantises a whole batch's activations together: its texts are encoded one by one."""

    def encode(texts):
        rows = [np.random.default_rng(sum(map(ord, t))).standard_normal(8) for t in texts]
        return np.asarray(rows, dtype=np.float32) + (0.01 * len(texts) if coupled else 0.0)

    started, release = threading.Event(), threading.Event()
    work, calls = _held_first_batch(encode, started, release)
    encoder = batch_encoder(work)
    texts = [f"text {i}" for i in range(6)]
    with ThreadPoolExecutor(len(texts)) as pool:
        first = pool.submit(encoder, texts[0])
        assert started.wait(60)
        rest = [pool.submit(encoder, t) for t in texts[1:]]
        assert encoder.wait_for_waiting(len(texts) - 1, timeout=60)
        release.set()
        vectors = [first.result(60)] + [f.result(60) for f in rest]
    for text, vector in zip(texts, vectors):
        np.testing.assert_array_equal(vector, encode([text]))
    burst_calls = [c for c in calls if set(c) <= set(texts)]
    assert [len(c) for c in burst_calls] == ([1] * 6 if coupled else [1, 5])


def test_concurrent_single_searches_are_one_faiss_call_per_k_with_the_answers_of_alone():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3000, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    exact = Int8FlatSearcher(build_index(x, "Flat"))
    started, release = threading.Event(), threading.Event()
    calls = []

    class HeldFirstCall:
        ntotal = exact.ntotal

        def search(self, queries, k):
            calls.append((len(queries), k))
            if len(calls) == 1:
                started.set()
                assert release.wait(60)
            return exact.search(queries, k)

    searcher = BatchingSearcher(HeldFirstCall())
    asked = [(x[i] + 0.1 * rng.standard_normal(32).astype(np.float32), 5 if i % 3 else 12) for i in range(10)]
    with ThreadPoolExecutor(len(asked)) as pool:
        first = pool.submit(searcher.search, *asked[0])
        assert started.wait(60)
        rest = [pool.submit(searcher.search, *a) for a in asked[1:]]
        assert searcher.coalescer.wait_for_waiting(len(asked) - 1, timeout=60)
        release.set()
        found = [first.result(60)] + [f.result(60) for f in rest]
    for (query, k), (scores, ids) in zip(asked, found):
        alone = exact.search(query, k)
        np.testing.assert_array_equal(ids, alone[1])
        np.testing.assert_array_equal(scores, alone[0])
    assert sorted(calls) == [(1, 12), (3, 12), (6, 5)]  # the first alone, then one call per k for the other 9


def _burst(pipeline, monkeypatch, call, queries, waiting: int | None = None):
    """``call(query)`` for every query at once, the first encoder forward held until ``waiting`` others (all
    the others by default) wait to be encoded."""
    started, release = threading.Event(), threading.Event()
    held, calls = _held_first_batch(lambda texts: original(texts), started, release)
    original = pipeline.encoder.encode_texts
    monkeypatch.setattr(pipeline.encoder, "encode_texts", lambda texts, **kw: held(texts))
    pipeline._query_vector.cache_clear()  # every query is encoded again, in the burst
    with ThreadPoolExecutor(len(queries)) as pool:
        first = pool.submit(call, queries[0])
        assert started.wait(120)
        rest = [pool.submit(call, q) for q in queries[1:]]
        assert pipeline.query_encoder.wait_for_waiting(waiting or len(queries) - 1, timeout=120)
        release.set()
        results = [first] + rest
        outcomes = []
        for future in results:
            try:
                outcomes.append(future.result(120))
            except (AppError, InvalidInput) as exc:
                outcomes.append(exc)
    monkeypatch.setattr(pipeline.encoder, "encode_texts", original)
    return outcomes, [c for c in calls if set(c) <= set(queries)]


@pytest.fixture(scope="module")
def collection(tiny_clip_dir, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("batched")
    return shapes_collection(root / "images", root / "collection", tiny_clip_dir, n=48)


def _same_hits(ours: list[dict], alone: list[dict]) -> None:
    """Equal hits; scores to float rounding (a batch of fp32 texts moves a vector by ~5e-7)."""
    assert [{**h, "score": None} for h in ours] == [{**h, "score": None} for h in alone]
    np.testing.assert_allclose([h["score"] for h in ours], [h["score"] for h in alone], atol=2e-6)


@pytest.mark.parametrize("quantize", ["none", "int8"])
def test_a_burst_answers_as_the_same_searches_one_by_one(collection, tmp_path, monkeypatch, quantize):
    pipeline = open_pipeline(Settings(cache_dir=tmp_path, quantize=quantize), collection_dir=collection,
                             with_captioner=False)
    alone = [[h.to_dict() for h in pipeline.search_text(q, 5)] for q in BURST]
    found, forwards = _burst(pipeline, monkeypatch, lambda q: pipeline.search_text(q, 5), BURST)
    for ours, theirs in zip(found, alone):
        _same_hits([h.to_dict() for h in ours], theirs)
    if quantize == "int8":  # batch-coupled int8 activations: one text per forward, bit for bit as alone
        assert [len(f) for f in forwards] == [1] * len(BURST)
        assert [[h.to_dict() for h in hits] for hits in found] == alone
    else:
        assert [len(f) for f in forwards] == [1, len(BURST) - 1]


SEARCH_TEXT_API = {
    "parameters": [("query", "Textbox", False, None), ("k", "Slider", True, 12)],
    "returns": ["Gallery", "Json"],
    "description": "Images of the collection best matching a text query (any language the text encoder reads).",
}


def test_search_text_keeps_its_api_and_a_burst_of_clients_gets_what_each_would_alone(collection, tmp_path,
                                                                                      monkeypatch):
    pipeline = open_pipeline(Settings(cache_dir=tmp_path / "cache", quantize="none"), collection_dir=collection,
                             with_captioner=False)
    demo, url = launch_app(pipeline)
    try:
        client = make_client(url, tmp_path / "downloads")
        api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/search_text"]
        assert {"parameters": [(p["parameter_name"], p["component"], p["parameter_has_default"],
                                p["parameter_default"]) for p in api["parameters"]],
                "returns": [r["component"] for r in api["returns"]], "description": api["description"]} == SEARCH_TEXT_API
        alone = [client.predict(q, 4, api_name="/search_text") for q in BURST]
        # 15 visitors (the queue serves 16 /search_text calls at once), one with an empty query
        queries = [*BURST[:8], "   ", *BURST[8:14]]
        clients = {q: make_client(url, tmp_path / "downloads") for q in queries}
        found, forwards = _burst(pipeline, monkeypatch, lambda q: clients[q].predict(q, 4, api_name="/search_text"),
                                 queries, waiting=13)
    finally:
        demo.close()
    assert isinstance(found[8], AppError) and "Type a text query: it is empty" in str(found[8])
    for (gallery, result), (gallery_alone, result_alone) in zip(found[:8] + found[9:], alone[:14]):
        assert [g["caption"] for g in gallery] == [g["caption"] for g in gallery_alone]
        assert {**result, "hits": None} == {**result_alone, "hits": None}
        _same_hits(result["hits"], result_alone["hits"])
    assert [len(f) for f in forwards] == [1, 13]  # the other 13 texts in one encoder forward
