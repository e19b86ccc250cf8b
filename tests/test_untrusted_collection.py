"""A collection from a stranger is untrusted input; every odd number gets one clear message; stored vectors on IVF."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import faiss
import numpy as np
import pytest
from testkit.shapes import build_shapes, write_shape_folder

from rag.collection.reader import Collection
from rag.config import Settings
from rag.errors import CollectionError, InvalidInput
from rag.startup import open_pipeline


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return write_shape_folder(tmp_path_factory.mktemp("src") / "shapes", n=48)


@pytest.fixture(scope="module")
def flat(source, tiny_clip_dir, tmp_path_factory):
    return build_shapes(source, tmp_path_factory.mktemp("flat") / "col", tiny_clip_dir, index_factory="Flat")


@pytest.fixture(scope="module")
def pipeline(flat, tmp_path_factory):
    return open_pipeline(Settings(cache_dir=tmp_path_factory.mktemp("cache")), collection_dir=flat,
                                  with_captioner=False)


def _copy(collection: Path, tmp_path: Path, **changes) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(collection, copy)
    data = json.loads((copy / "manifest.json").read_text())
    for key, value in changes.items():
        data[key] = value(data[key]) if callable(value) else value
    (copy / "manifest.json").write_text(json.dumps(data))
    return copy


@pytest.mark.parametrize(
    "files, message",
    [
        (lambda f: {**f, "/etc/passwd": "0" * 64}, "outside the collection"),
        (lambda f: {**f, "../secrets/key.parquet": "0" * 64}, "outside the collection"),
        (lambda f: {**f, "data/../../x": "0" * 64}, "outside the collection"),
        (lambda f: {**f, "notes.txt": "0" * 64}, "not a file of this format"),
        (lambda f: {k: v for k, v in f.items() if k != "index.faiss"}, "does not list index.faiss"),
        (lambda f: {k: ("" if k == "index.faiss" else v) for k, v in f.items()}, "no valid sha256"),
        (lambda f: {k: v for k, v in f.items() if k != "data/metadata-00000.parquet"}, "metadata files"),
    ],
    ids=["absolute", "dotdot", "nested-dotdot", "foreign-file", "index-unlisted", "index-no-checksum", "shard-unlisted"],
)
def test_manifest_file_list_is_checked(flat, tmp_path, files, message):
    copy = _copy(flat, tmp_path, files=files)
    with pytest.raises(CollectionError, match=message) as caught:
        Collection.open(copy)
    assert str(tmp_path) not in str(caught.value)


def test_unlisted_index_is_never_loaded_unverified(flat, tmp_path):
    copy = _copy(flat, tmp_path, files=lambda f: {k: v for k, v in f.items() if k != "index.faiss"})
    (copy / "index.faiss").write_bytes(b"anything at all")
    with pytest.raises(CollectionError, match="index.faiss"):
        Collection.open(copy)


def test_search_params_from_the_manifest_are_clamped(source, tiny_clip_dir, tmp_path, caplog):
    hnsw = build_shapes(source, tmp_path / "hnsw", tiny_clip_dir, index_factory="HNSW8,Flat")
    copy = _copy(hnsw, tmp_path, search_params="efSearch=1000000000")
    with caplog.at_level(logging.WARNING):
        collection = Collection.open(copy)
    assert faiss.downcast_index(collection.index).hnsw.efSearch == 1024
    assert "clamped" in caplog.text
    ivf_dir = build_shapes(source, tmp_path / "ivf", tiny_clip_dir, index_factory="IVF4,Flat")
    ivf = Collection.open(_copy(ivf_dir, tmp_path / "x", search_params="nprobe=99999999"))
    assert faiss.extract_index_ivf(ivf.index).nprobe == 4  # never more lists than the index has
    with pytest.raises(CollectionError, match="unknown search parameter"):
        Collection.open(_copy(hnsw, tmp_path / "y", search_params="verbose=1"))


def test_local_collection_info_has_no_revision_and_no_server_path(pipeline, flat):
    info = pipeline.info()
    assert info["revision"] is None and info["collection"] == flat.name
    assert str(flat.parent) not in json.dumps(info, default=str)


def test_collection_errors_name_no_server_path(tmp_path):
    for missing in (tmp_path / "deep" / "gone", tmp_path):
        with pytest.raises(CollectionError) as caught:
            Collection.open(missing)
        assert str(tmp_path.parent) not in str(caught.value)


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan"), 1e300, 10**400, True, False, None,
                                 "many", [5], 2.5])
def test_every_odd_k_gets_the_same_clear_message(pipeline, source, bad, caplog, monkeypatch):
    monkeypatch.setattr(pipeline, "captioner", object())  # describe checks k before it captions anything
    image = source / "set_a" / "img_001.jpg"
    with caplog.at_level(logging.DEBUG):
        for call, message in [
            (lambda: pipeline.describe(image, None, k=bad), "context size k must be a whole number between 0 and 20."),
            (lambda: pipeline.search_text("red circle", k=bad), "k must be a whole number between 1 and 50."),
            (lambda: pipeline.similar_to(3, k=bad), "k must be a whole number between 1 and 50."),
            (lambda: pipeline.similar_to(bad, k=5), "row id must be a whole number between 0 and 47."),
        ]:
            with pytest.raises(InvalidInput) as caught:
                call()
            assert str(caught.value) == message
    assert "Traceback" not in caplog.text


def test_out_of_range_k_says_what_it_got(pipeline):
    with pytest.raises(InvalidInput, match=r"^k must be between 1 and 50; got 51\.$"):
        pipeline.search_text("red circle", k=51)
    assert len(pipeline.search_text("red circle", k=5.0)) == 5


class _CountingEncoder:
    def __init__(self, encoder):
        self.encoder, self.images = encoder, 0

    def __getattr__(self, name):
        return getattr(self.encoder, name)

    def encode_images(self, images):
        self.images += len(images)
        return self.encoder.encode_images(images)


@pytest.mark.parametrize("factory", ["IVF4,SQ8", "IVF2,PQ4x4"])
def test_more_like_this_on_ivf_uses_stored_vectors(source, tiny_clip_dir, tmp_path, factory):
    out = build_shapes(source, tmp_path / "ivf", tiny_clip_dir, index_factory=factory)
    pipeline = open_pipeline(Settings(cache_dir=tmp_path), collection_dir=out, with_captioner=False)
    assert pipeline.collection.can_reconstruct
    stored = pipeline.collection.stored_vectors([3, 7])
    assert stored is not None and stored.shape == (2, pipeline.encoder.dim)
    counting = _CountingEncoder(pipeline.encoder)
    pipeline.encoder = counting
    similar = pipeline.similar_to(3, k=5)
    assert len(similar) == 5 and 3 not in [h.id for h in similar]
    assert counting.images == 0  # no thumbnail was re-encoded
    if "SQ8" in factory:
        exact = Collection.open(build_shapes(source, tmp_path / "flat", tiny_clip_dir, index_factory="Flat"))
        assert np.allclose(stored, exact.stored_vectors([3, 7]), atol=0.02)


def test_index_without_stored_vectors_falls_back_to_thumbnails(pipeline):
    pipeline.collection._can_reconstruct = False
    try:
        assert pipeline.collection.stored_vectors([3]) is None
        vectors = pipeline.row_vectors([3, 4])
        assert vectors.shape == (2, pipeline.encoder.dim)
        assert len(pipeline.similar_to(3, k=4)) == 4
    finally:
        pipeline.collection._can_reconstruct = None
