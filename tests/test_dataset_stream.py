"""`--limit` / `--streaming` read a `datasets` source as a stream: only the rows used are read, resume skips the rest.

The dataset is a local folder in the Hub's layout (testkit/hub_fixtures.py), so `load_dataset` takes the same
path as for a Hub id. What a user notices: a `--limit` build does not convert (download) the whole split into
the datasets cache first, the collection holds the first N rows in order with their ClassLabel names, and an
interrupted streaming build resumes without encoding the committed rows again.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from testkit.hub_fixtures import make_hub_fixture
from testkit.tiny_models import make_shape_images

import index_build
from rag.ingest.builder import BuildOptions, build_collection
from rag.collection.reader import Collection
from rag.ingest.dataset_source import DatasetSource
from rag.ingest.dataset_stream import StreamingDatasetSource
from rag.ingest.open_source import SourceSpec, open_source
from rag.models.encoder import Encoder

TIN = "zh-plus/tiny-imagenet"


@pytest.fixture(scope="module")
def tin(tmp_path_factory):
    return make_hub_fixture(TIN, tmp_path_factory.mktemp("hub") / "tiny-imagenet", rows=40)


@pytest.fixture()
def datasets_cache(tmp_path, monkeypatch):
    """A fresh, empty datasets cache, so what a build writes (downloads/converts) there can be seen."""
    import datasets

    cache = tmp_path / "hf-datasets-cache"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    return cache


def _arrow_bytes(cache) -> int:
    return sum(p.stat().st_size for p in cache.rglob("*.arrow")) if cache.exists() else 0


def open_dataset(name, **spec) -> object:
    """open_source for a dataset, as the owner's CLI opens it."""
    return open_source(SourceSpec(dataset=str(name), **spec))


def _build(args: list[str], clip: str) -> int:
    return index_build.main([*args, "--model", clip, "--no-progress", "--batch-size", "4", "--workers", "1"])


def test_limit_streams_the_first_rows_without_preparing_the_split(tin, tiny_clip_dir, tmp_path, datasets_cache,
                                                                   capsys):
    code = _build(["--dataset", str(tin), "--split", "valid", "--label-column", "label", "--limit", "10",
                   "--out", str(tmp_path / "streamed")], tiny_clip_dir)
    assert code == 0
    assert "source: at most 10 item(s)" in capsys.readouterr().err
    assert _arrow_bytes(datasets_cache) == 0, "a --limit build must not convert the whole split into the cache"
    collection = Collection.open(tmp_path / "streamed")
    expected = [label for _, _, label in make_shape_images(40, seed=3 + 1)[:10]]  # the fixture's valid split
    assert [r["label"] for r in collection.rows(range(10))] == expected  # ClassLabel ids became names, in order
    assert [r["source"] for r in collection.rows(range(10))] == [f"valid[{i}]" for i in range(10)]
    source = json.loads((tmp_path / "streamed" / "manifest.json").read_text())["source"]
    assert source["streaming"] is True and source["rows"] == 10

    # without a limit the whole split is read as before: prepared in the cache, every row in the collection
    assert _build(["--dataset", str(tin), "--split", "valid", "--out", str(tmp_path / "whole")], tiny_clip_dir) == 0
    assert _arrow_bytes(datasets_cache) > 0
    assert len(Collection.open(tmp_path / "whole")) == 40


def test_streaming_flag_and_limit_sizes(tin, datasets_cache):
    assert isinstance(open_dataset(tin, split="valid"), DatasetSource)
    assert not isinstance(open_dataset(tin, split="valid"), StreamingDatasetSource)
    whole = open_dataset(tin, split="valid", streaming=True)
    assert isinstance(whole, StreamingDatasetSource) and len(whole) == 40  # row count from the dataset card
    capped = open_dataset(tin, split="valid", limit=1000)
    assert len(capped) == 40  # "at most": the limit, or the split when it is smaller
    assert len(open_dataset(tin, split="valid", limit=7)) == 7
    assert [item.position for item in open_dataset(tin, split="valid", limit=7).items(5)] == [5, 6]


def test_streaming_flag_builds_the_whole_split_and_where_filters_the_stream(tin, tiny_clip_dir, tmp_path,
                                                                            datasets_cache):
    assert _build(["--dataset", str(tin), "--split", "valid", "--streaming", "--out", str(tmp_path / "all")],
                  tiny_clip_dir) == 0
    assert _arrow_bytes(datasets_cache) == 0
    assert len(Collection.open(tmp_path / "all")) == 40
    red_circles = open_dataset(tin, split="valid", label_column="label", where={"label": "0"}, limit=2)
    assert [item.label for item in red_circles.items()] == ["red circle", "red circle"]
    assert [item.source for item in red_circles.items()] == ["valid[0]", "valid[1]"]  # positions in the filtered stream


def test_saved_to_disk_folder_keeps_the_plain_source(tin, tmp_path, datasets_cache):
    import datasets

    saved = tmp_path / "saved"
    datasets.load_dataset(str(tin), split="valid").save_to_disk(str(saved))
    source = open_dataset(saved, split="valid", limit=5, label_column="label")
    assert type(source) is DatasetSource and len(source) == 5
    assert [item.label for item in source.items()] == [label for _, _, label in make_shape_images(5, seed=4)]


class _Interrupting(StreamingDatasetSource):
    def items(self, start=0):
        for item in super().items(start):
            if item.position >= 22:
                raise KeyboardInterrupt
            yield item


class _CountingEncoder(Encoder):
    encoded = 0

    def embed_features(self, features):
        vectors = super().embed_features(features)
        self.encoded += len(vectors)
        return vectors


def test_interrupted_streaming_build_resumes_by_skipping_committed_rows(tin, tiny_clip_dir, tmp_path, datasets_cache):
    out = tmp_path / "col"
    options = BuildOptions(batch_size=4, chunk_rows=8, workers=1, progress=False)
    args = dict(split="valid", label_column="label", limit=30)
    with pytest.raises(KeyboardInterrupt):
        build_collection(_Interrupting(SourceSpec(dataset=str(tin), **args)), out, Encoder(tiny_clip_dir), options)
    committed = sum(json.loads(p.read_text())["rows"] for p in (tmp_path / "col.partial" / "chunks").glob("*.json"))
    assert 8 <= committed < 30
    encoder = _CountingEncoder(tiny_clip_dir)
    build_collection(open_dataset(tin, **args), out, encoder, options, resume=True)
    assert encoder.encoded == 30 - committed  # the stream skipped what was committed
    fresh = build_collection(open_dataset(tin, **args), tmp_path / "fresh", Encoder(tiny_clip_dir), options)
    assert fresh.rows == len(Collection.open(out)) == 30
    resumed, whole = Collection.open(out), Collection.open(tmp_path / "fresh")
    assert [r["source"] for r in resumed.rows(range(30))] == [r["source"] for r in whole.rows(range(30))]
    assert np.allclose(resumed.stored_vectors(range(30)), whole.stored_vectors(range(30)), atol=1e-5)
