"""RAG_QUANTIZE and its fidelity check, the ONNX int8 towers, the query cache, the exact fp16 Flat scan returning
exactly what FAISS returns, and ``index_build.py --quantize`` in the manifest. Speed is measured in benchmarks/."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import faiss
import numpy as np
import pytest
from testkit.shapes import build_shapes, write_shape_folder

import index_build
from rag.models import quantize
from rag.config import Settings
from rag.models.encoder import Encoder
from rag.errors import ConfigError
from rag.search.flat import HalfFlatSearcher, IndexSearcher, make_searcher
from rag.search.index import build_index, load_index, save_index
from rag.startup import open_pipeline

QUERIES = ["red circle", "a photo of a blue square", "yellow triangle", "green", "a large red square"]


def _quantised_linears(module) -> int:
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    return sum(isinstance(m, DynamicLinear) for m in module.modules())


@pytest.fixture(scope="module")
def shapes_collection(tiny_clip_dir, tmp_path_factory) -> Path:
    folder = write_shape_folder(tmp_path_factory.mktemp("speed-src") / "shapes", n=48)
    return build_shapes(folder, tmp_path_factory.mktemp("speed-col") / "collection", tiny_clip_dir)


# -- RAG_QUANTIZE ------------------------------------------------------------------------------------


@pytest.mark.parametrize("value, expected", [(None, "auto"), ("", "auto"), ("INT8", "int8"), (" none ", "none"), ("auto", "auto")])
def test_rag_quantize_is_read_from_the_environment(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("RAG_QUANTIZE", raising=False)
    else:
        monkeypatch.setenv("RAG_QUANTIZE", value)
    assert Settings.from_env().quantize == expected


def test_unknown_rag_quantize_is_refused_with_the_choices(monkeypatch):
    monkeypatch.setenv("RAG_QUANTIZE", "int4")
    with pytest.raises(ConfigError, match="auto, int8, none"):
        Settings.from_env()


@pytest.mark.parametrize("requested, device, mode", [
    ("auto", "cpu", "int8"), ("auto", "cuda", "fp16"), ("auto", "cuda:1", "fp16"), ("int8", "cpu", "int8"),
    ("int8", "cuda", "fp16"), ("none", "cpu", "none"), ("none", "cuda", "none"), ("auto", "mps", "none"),
])
def test_auto_means_int8_on_cpu_and_fp16_on_cuda(requested, device, mode):
    assert quantize.resolve_mode(requested, device) == mode


# -- quantised encoder ---------------------------------------------------------------------------------


def test_int8_text_tower_stays_faithful_to_fp32(tiny_clip_dir):
    encoder = Encoder(tiny_clip_dir)
    reference = encoder.encode_texts(QUERIES)
    images = quantize.probe_images()
    image_reference = encoder.encode_images(images)
    result = quantize.quantize_encoder(encoder, "int8")
    assert result.mode == "int8" and result.towers == ("text",) and result.min_cosine >= quantize.MIN_COSINE
    assert _quantised_linears(encoder.model) > 0
    assert np.min(np.sum(encoder.encode_texts(QUERIES) * reference, axis=1)) >= quantize.MIN_COSINE
    # only the text tower was converted: image vectors are bit for bit the fp32 ones
    np.testing.assert_array_equal(encoder.encode_images(images), image_reference)


def test_low_fidelity_falls_back_to_fp32_and_says_why(tiny_clip_dir, monkeypatch, caplog):
    encoder = Encoder(tiny_clip_dir)
    reference = encoder.encode_texts(QUERIES)
    monkeypatch.setattr(quantize, "fidelity", lambda a, b: 0.5)
    with caplog.at_level(logging.WARNING, logger="rag.models.quantize"):
        result = quantize.quantize_encoder(encoder, "int8", towers=("text", "image"))
    assert result.mode == "none" and result.min_cosine == 0.5
    assert "0.5000" in result.reason and "below 0.99" in caplog.text
    assert _quantised_linears(encoder.model) == 0
    np.testing.assert_array_equal(encoder.encode_texts(QUERIES), reference)


def test_pipeline_info_shows_the_mode_in_effect(shapes_collection, tmp_path, monkeypatch):
    pipeline = open_pipeline(
        Settings(cache_dir=tmp_path, quantize="none"), collection_dir=shapes_collection, with_captioner=False
    )
    assert pipeline.info()["quantize"] == "none"
    monkeypatch.setattr(quantize, "fidelity", lambda a, b: 0.0)
    fallback = open_pipeline(Settings(cache_dir=tmp_path), collection_dir=shapes_collection, with_captioner=False)
    assert fallback.info()["quantize"] == "none"
    monkeypatch.undo()
    auto = open_pipeline(Settings(cache_dir=tmp_path), collection_dir=shapes_collection, with_captioner=False)
    assert (auto.info()["quantize"], auto.info()["quantize_engine"]) == ("int8", "onnxruntime")
    assert [h.label for h in auto.search_text("red circle", k=3)] == [h.label for h in pipeline.search_text("red circle", k=3)]


def test_cpu_auto_runs_the_text_tower_in_onnxruntime_int8_exported_once(tiny_clip_dir, tmp_path):
    """RAG_QUANTIZE=auto on CPU: the text tower is exported once into the cache, reused by the next start."""
    reference = Encoder(tiny_clip_dir).encode_texts(QUERIES)
    encoder = Encoder(tiny_clip_dir)
    result = quantize.quantize_encoder(encoder, "auto", cache_dir=tmp_path)
    assert (result.mode, result.engine) == ("int8", "onnxruntime") and result.min_cosine >= quantize.MIN_COSINE
    assert _quantised_linears(encoder.model) == 0  # torch modules untouched: the image tower stays exact
    assert np.min(np.sum(encoder.encode_texts(QUERIES) * reference, axis=1)) >= quantize.MIN_COSINE
    exported = list((tmp_path / "onnx").glob("*/model.int8.onnx"))
    assert len(exported) == 1
    stamp = exported[0].stat().st_mtime_ns
    again = Encoder(tiny_clip_dir)
    assert quantize.quantize_encoder(again, "auto", cache_dir=tmp_path).engine == "onnxruntime"
    assert exported[0].stat().st_mtime_ns == stamp and list((tmp_path / "onnx").iterdir()) == [exported[0].parent]
    np.testing.assert_allclose(again.encode_texts(QUERIES), encoder.encode_texts(QUERIES), atol=1e-6)


def test_onnx_path_unavailable_falls_back_to_torch_int8_and_says_why(tiny_clip_dir, tmp_path, monkeypatch, caplog):
    def broken(*_args, **_kwargs):
        raise RuntimeError("onnxruntime is not installed (test)")

    monkeypatch.setattr(quantize, "int8_text_runner", broken)
    encoder = Encoder(tiny_clip_dir)
    with caplog.at_level(logging.WARNING, logger="rag.models.quantize"):
        result = quantize.quantize_encoder(encoder, "auto", cache_dir=tmp_path)
    assert (result.mode, result.engine) == ("int8", "torch") and _quantised_linears(encoder.model) > 0
    assert "onnxruntime is not installed (test)" in caplog.text


# -- query cache ----------------------------------------------------------------------------------------


def test_repeated_query_is_encoded_once(shapes_collection, tmp_path, monkeypatch):
    pipeline = open_pipeline(
        Settings(cache_dir=tmp_path, quantize="none"), collection_dir=shapes_collection, with_captioner=False
    )
    calls = []
    original = pipeline.encoder.encode_texts
    monkeypatch.setattr(pipeline.encoder, "encode_texts", lambda texts, **kw: calls.append(list(texts)) or original(texts, **kw))
    first = pipeline.search_text("red circle", k=5)
    again = pipeline.search_text("  red   circle ", k=5)  # the same query once whitespace is normalised
    other = pipeline.search_text("blue square", k=5)
    assert calls == [["red circle"], ["blue square"]]
    assert [h.to_dict() for h in again] == [h.to_dict() for h in first] and other != first
    assert pipeline.query_cache_info().hits == 1


# -- fast exact Flat search -----------------------------------------------------------------------------


def _vectors(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((20, dim)).astype(np.float32)
    x = centres[rng.integers(0, 20, n)] + 0.05 * rng.standard_normal((n, dim)).astype(np.float32)
    x[n // 2 : n // 2 + 30] = x[0]  # exact duplicates: ties
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("shards", [None, 3])  # one shard (small collection), or cut in three scanned side by side
def test_fast_flat_search_equals_faiss_top_k(tmp_path, shards):
    x = _vectors(6000, 48, seed=3)
    save_index(build_index(x, "Flat"), tmp_path / "index.faiss")
    index = load_index(tmp_path / "index.faiss")  # memory-mapped, as the app loads it
    searcher = make_searcher(index) if shards is None else HalfFlatSearcher(index, shards=shards)
    assert isinstance(searcher, HalfFlatSearcher) and len(searcher.shards) == (shards or 1)
    rng = np.random.default_rng(4)
    queries = x[rng.integers(0, len(x), 60)] + 0.02 * rng.standard_normal((60, 48)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    for k in (1, 10, 50):
        truth_scores, truth_ids = index.search(queries, k)
        for q in range(len(queries)):
            scores, ids = searcher.search(queries[q], k)
            np.testing.assert_allclose(scores[0], truth_scores[q], atol=1e-5)
            # ids agree except where two rows tie on score (the duplicates, or a tie at the k-th place)
            ours, theirs = x[ids[0]] @ queries[q], x[truth_ids[q]] @ queries[q]
            assert all(a == b or abs(sa - sb) <= 1e-6 for a, b, sa, sb in zip(ids[0], truth_ids[q], ours, theirs))
    batch_scores, batch_ids = searcher.search(queries, 10)
    # a batch answers each query exactly as if it came alone (ties by row id, as search_page pages them)
    np.testing.assert_array_equal(batch_ids, np.concatenate([searcher.search(q, 10)[1] for q in queries]))


def test_fast_flat_search_widens_to_exact():
    """Many near-equal scores around the k-th place force the candidate set to grow; the answer stays exact."""
    rng = np.random.default_rng(5)
    base = rng.standard_normal(32).astype(np.float32)
    x = base + 3e-3 * np.linalg.norm(base) * rng.standard_normal((3000, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    index = build_index(x, "Flat")
    searcher = HalfFlatSearcher(index, shards=2)
    widened = []
    within = searcher.within
    searcher.within = lambda q, radius: widened.append(radius) or within(q, radius)
    for row in (7, 100, 2000):
        scores, ids = searcher.search(x[row], 10)
        truth_scores, truth_ids = index.search(x[row][None], 10)
        np.testing.assert_allclose(scores, truth_scores, atol=1e-6)
        np.testing.assert_array_equal(ids, truth_ids)
    assert len(widened) == 3  # scores ~1e-5 apart, under the fp16 error bound: each query widened by a range scan


def test_other_indexes_are_searched_as_they_are():
    x = _vectors(2000, 16, seed=6)
    assert isinstance(make_searcher(build_index(x, "HNSW16,Flat")), IndexSearcher)


# -- index_build --quantize -----------------------------------------------------------------------------


@pytest.mark.parametrize("flag", [["--quantize", "int8"], []])
def test_build_records_quantize_in_the_manifest(tiny_clip_dir, tmp_path, flag, monkeypatch):
    monkeypatch.setenv("RAG_CACHE_DIR", str(tmp_path / "cache"))
    folder = write_shape_folder(tmp_path / "src", n=12)
    out = tmp_path / "col"
    code = index_build.main(["--images", str(folder), "--captions", str(folder / "captions.csv"), "--model",
                             tiny_clip_dir, "--out", str(out), "--no-progress", *flag])
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["build"]["quantize"] == ("int8" if flag else "none")
    # int8 on CPU runs both towers in ONNX Runtime, exported once into RAG_CACHE_DIR/onnx
    exported = sorted(p.parent.name for p in (tmp_path / "cache").glob("onnx/*/model.int8.onnx"))
    assert len(exported) == (2 if flag else 0) and sum(name.startswith("image-") for name in exported) == len(exported) // 2


def test_int8_build_vectors_stay_faithful_to_fp32(tiny_clip_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("RAG_CACHE_DIR", str(tmp_path / "cache"))
    folder = write_shape_folder(tmp_path / "src", n=12)
    common = ["--images", str(folder), "--model", tiny_clip_dir, "--no-progress"]
    assert index_build.main([*common, "--out", str(tmp_path / "fp32")]) == 0
    assert index_build.main([*common, "--out", str(tmp_path / "int8"), "--quantize", "int8"]) == 0
    exact = load_index(tmp_path / "fp32" / "index.faiss").reconstruct_n(0, 12)
    quantised = load_index(tmp_path / "int8" / "index.faiss").reconstruct_n(0, 12)
    assert np.min(np.sum(exact * quantised, axis=1)) >= quantize.MIN_COSINE
