"""The Explore tab's API: /map (compact points) and /map_select (details), with and without a map."""

from __future__ import annotations

import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import pytest
from gradio_client.exceptions import AppError
from test_app import launch_app, make_client
from testkit.shapes import build_shapes, write_shape_folder

from rag.config import Settings
from rag.explore.map_api import NO_LABEL, OTHER, label_groups
from rag.startup import open_pipeline


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_shape_folder(tmp_path_factory.mktemp("explore") / "images", n=48)


def _serve(folder, out, clip_dir, cache, **options):
    collection = build_shapes(folder, out, clip_dir, **options)
    pipeline = open_pipeline(Settings(cache_dir=cache), collection_dir=collection, with_captioner=False)
    demo, url = launch_app(pipeline)
    return demo, url, pipeline


@pytest.fixture(scope="module")
def served(folder, tiny_clip_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("explore-app")
    demo, url, pipeline = _serve(folder, root / "collection", tiny_clip_dir, root / "cache")
    yield make_client(url, root / "downloads"), pipeline
    demo.close()


def test_map_sends_every_row_as_compact_parallel_arrays(served):
    client, pipeline = served
    data = client.predict(api_name="/map")
    assert set(data) == {"ids", "x", "y", "label_ids", "labels"}
    assert data["ids"] == list(range(48)) and len(data["x"]) == len(data["y"]) == len(data["label_ids"]) == 48
    labels = pipeline.collection.all_labels()
    assert [data["labels"][g] for g in data["label_ids"]] == labels  # 12 labels: all among the top 20
    counts = [labels.count(name) for name in data["labels"]]
    assert counts == sorted(counts, reverse=True)
    assert all(-1 <= v <= 1 for v in data["x"] + data["y"])


def test_map_limit_is_a_stable_sample(served):
    client, _ = served
    full = client.predict(api_name="/map")
    sample = client.predict(limit=10, api_name="/map")
    assert len(sample["ids"]) == 10 and sample["ids"] == sorted(set(sample["ids"]))
    assert sample == client.predict(limit=10, api_name="/map")
    assert sample["x"] == [full["x"][i] for i in sample["ids"]]
    with pytest.raises(AppError, match="limit must be between 1 and 48"):
        client.predict(limit=500, api_name="/map")


def test_map_select_returns_the_rows_details_at_their_map_position(served):
    client, pipeline = served
    full = client.predict(api_name="/map")
    rows = client.predict(ids=[7, 3], api_name="/map_select")
    assert [r["id"] for r in rows] == [7, 3]
    expected = pipeline.collection.rows([7, 3])
    assert [r["captions"] for r in rows] == [e["captions"] for e in expected]
    assert [r["label"] for r in rows] == [e["label"] for e in expected]
    assert (rows[0]["x"], rows[0]["y"]) == (full["x"][7], full["y"][7])
    assert "thumbnail" not in rows[0]
    assert [r["id"] for r in client.predict(ids="3, 7", api_name="/map_select")] == [3, 7]
    with pytest.raises(AppError, match="Row id 99 is not in the collection"):
        client.predict(ids=[99], api_name="/map_select")


def test_collection_without_map_says_how_to_add_one(folder, tiny_clip_dir, tmp_path):
    demo, url, _ = _serve(folder, tmp_path / "collection", tiny_clip_dir, tmp_path / "cache", map=False)
    try:
        with pytest.raises(AppError, match="index_build.py --add-map"):
            make_client(url, tmp_path / "downloads").predict(api_name="/map")
    finally:
        demo.close()


def test_colour_groups_are_the_top_labels_then_other_and_unlabelled():
    labels = [f"l{i:02d}" for i in range(25) for _ in range(25 - i)] + [None, ""]
    ids, names = label_groups(labels)
    assert names == [f"l{i:02d}" for i in range(20)] + [OTHER, NO_LABEL]
    assert names[ids[0]] == "l00" and names[ids[-3]] == OTHER and names[ids[-1]] == NO_LABEL
