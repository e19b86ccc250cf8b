"""The collection map: built with the collection, verified on load, --no-map, --add-map, seeded, its quality."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from testkit.shapes import write_shape_folder

import index_build
from rag.collection.reader import Collection
from rag.errors import CollectionError
from rag.explore.layout import compute_layout
from rag.explore.map_file import add_map_to, collection_vectors, read_map
from rag.metrics import knn_label_agreement, map_quality


def _build(folder, out, clip_dir, *extra) -> int:
    return index_build.main(["--images", str(folder), "--captions", str(folder / "captions.csv"), "--model", clip_dir,
                             "--out", str(out), "--batch-size", "16", "--no-progress", *extra])


@pytest.fixture(scope="module")
def shape_folder(tmp_path_factory):
    return write_shape_folder(tmp_path_factory.mktemp("src") / "shapes", n=64)


@pytest.fixture(scope="module")
def mapped(shape_folder, tiny_clip_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("mapped") / "collection"
    assert _build(shape_folder, out, tiny_clip_dir) == 0
    return out


@pytest.fixture(scope="module")
def unmapped(shape_folder, tiny_clip_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("unmapped") / "collection"
    assert _build(shape_folder, out, tiny_clip_dir, "--no-map") == 0
    return out


def test_build_stores_a_checksummed_map_of_every_row(mapped):
    manifest = json.loads((mapped / "manifest.json").read_text())
    assert "map.parquet" in manifest["files"]
    assert manifest["build"]["map"]["method"] in ("tsne", "umap") and manifest["build"]["map"]["rows"] == 64
    table = pq.read_table(mapped / "map.parquet")
    assert table.column_names == ["id", "x", "y"] and table.column("id").to_pylist() == list(range(64))
    xy = read_map(Collection.open(mapped))
    assert xy.shape == (64, 2) and np.isfinite(xy).all() and len(np.unique(xy, axis=0)) == 64


def test_map_keeps_similar_images_together(mapped):
    collection = Collection.open(mapped)
    labels = collection.all_labels()
    quality = map_quality(collection_vectors(collection), read_map(collection), labels, k=5)
    chance = sum((labels.count(l) - 1) / 63 * labels.count(l) / 64 for l in set(labels))
    assert quality["label_agreement_map"] > 2 * chance
    assert quality["trustworthiness"] > 0.7


def test_tampered_map_is_refused_on_load(mapped, tmp_path):
    copy = shutil.copytree(mapped, tmp_path / "copy")
    table = pq.read_table(copy / "map.parquet").to_pydict()
    table["x"][0] += 0.5
    pq.write_table(pa.table(table), copy / "map.parquet")
    with pytest.raises(CollectionError, match="map.parquet does not match its checksum"):
        Collection.open(copy)
    (copy / "map.parquet").unlink()
    with pytest.raises(CollectionError, match="missing map.parquet"):
        Collection.open(copy)


def test_no_map_collection_loads_and_says_how_to_add_one(unmapped, capsys):
    manifest = json.loads((unmapped / "manifest.json").read_text())
    assert "map.parquet" not in manifest["files"] and not (unmapped / "map.parquet").exists()
    assert read_map(Collection.open(unmapped)) is None
    assert index_build.main(["--verify", str(unmapped)]) == 0
    assert "none (add one with --add-map)" in capsys.readouterr().out


def test_add_map_uses_stored_vectors_and_matches_a_fresh_build(unmapped, mapped, tmp_path, monkeypatch):
    target = shutil.copytree(unmapped, tmp_path / "late")
    import rag.models.encoder

    monkeypatch.setattr(rag.models.encoder.Encoder, "__init__", lambda *a, **k: pytest.fail("--add-map must not encode"))
    assert index_build.main(["--add-map", str(target), "--no-progress"]) == 0
    added = read_map(Collection.open(target))  # checksums verified
    np.testing.assert_array_equal(added, read_map(Collection.open(mapped)))
    assert sorted(p.name for p in target.iterdir()) == sorted(p.name for p in mapped.iterdir())
    # Again on a collection that already has a map: replaced, still verified.
    assert index_build.main(["--add-map", str(target), "--map-seed", "3", "--no-progress"]) == 0
    again = Collection.open(target)
    assert again.manifest.build["map"]["seed"] == 3 and not np.array_equal(read_map(again), added)


def test_add_map_on_a_hub_repo_needs_a_local_copy(unmapped, tmp_path, monkeypatch):
    import rag.collection.hub

    monkeypatch.setattr(rag.collection.hub, "pull_collection", lambda repo, revision=None, token=None: unmapped)
    with pytest.raises(CollectionError, match="give --out DIR"):
        add_map_to("user/photos")
    before = (unmapped / "manifest.json").read_bytes()
    copy = add_map_to("user/photos", out=tmp_path / "copy", progress=False)
    assert read_map(Collection.open(copy)) is not None
    assert (unmapped / "manifest.json").read_bytes() == before and not (unmapped / "map.parquet").exists()


def test_same_seed_same_map_other_seed_other_map():
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((120, 32)).astype(np.float32)
    first = compute_layout(vectors, seed=7, progress=False)
    np.testing.assert_array_equal(first, compute_layout(vectors, seed=7, progress=False))
    assert not np.allclose(first, compute_layout(vectors, seed=8, progress=False))


def test_tiny_collections_get_a_map_too():
    assert compute_layout(np.ones((1, 8), np.float32), progress=False).shape == (1, 2)
    assert compute_layout(np.eye(3, 8, dtype=np.float32), progress=False).shape == (3, 2)


def test_knn_label_agreement_separates_clusters_from_noise():
    rng = np.random.default_rng(1)
    labels = ["a"] * 50 + ["b"] * 50
    apart = np.concatenate([rng.normal(0, 1, (50, 2)), rng.normal(20, 1, (50, 2))])
    assert knn_label_agreement(apart, labels, k=10) == 1.0
    mixed = rng.normal(0, 1, (100, 2))
    assert 0.3 < knn_label_agreement(mixed, labels, k=10) < 0.7


def test_normalised_agreement_reaches_one_when_labels_are_smaller_than_k():
    """Five rows a label and k = 10: a perfect map scores 0.4 raw (its ceiling) but 1.0 normalised."""
    rng = np.random.default_rng(2)
    labels = [c for c in "abcdefgh" for _ in range(5)]
    apart = np.concatenate([rng.normal(30 * i, 1, (5, 2)) for i in range(8)])
    assert knn_label_agreement(apart, labels, k=10) == pytest.approx(0.4)
    assert knn_label_agreement(apart, labels, k=10, normalise=True) == pytest.approx(1.0)
    shuffled = rng.normal(0, 1, (40, 2))
    assert knn_label_agreement(shuffled, labels, k=10, normalise=True) < 0.5


def test_map_quality_tells_a_faithful_map_from_one_that_tears_clusters():
    """Continuity drops when true neighbours are scattered; the ceiling is reported beside the raw agreement."""
    rng = np.random.default_rng(3)
    centres = rng.normal(0, 1, (8, 16))
    owner = np.repeat(np.arange(8), 6)
    vectors = (centres[owner] + rng.normal(0, 0.05, (48, 16))).astype(np.float32)
    labels = [f"c{i}" for i in owner]
    faithful = (centres[owner, :2] * 10 + rng.normal(0, 0.05, (48, 2))).astype(np.float32)
    torn = rng.normal(0, 1, (48, 2)).astype(np.float32)
    good, bad = map_quality(vectors, faithful, labels, k=5), map_quality(vectors, torn, labels, k=5)
    assert good["label_agreement_ceiling"] == pytest.approx(1.0) and good["label_agreement_map_normalised"] > 0.9
    assert good["continuity"] > bad["continuity"] + 0.2 and good["trustworthiness"] > bad["trustworthiness"] + 0.2
    assert bad["label_agreement_map_normalised"] < 0.5


def test_evaluate_map_task_reports_both_agreements_and_trustworthiness(mapped, unmapped, tmp_path, monkeypatch, capsys):
    from rag import evaluate

    monkeypatch.setenv("RAG_CACHE_DIR", str(tmp_path / "cache"))
    report_path = tmp_path / "r.json"
    assert evaluate.main(["--collection", str(mapped), "--tasks", "map", "--out", str(report_path), "--no-progress"]) == 0
    result = json.loads(report_path.read_text())["results"]["map"]
    assert result["sampled"] == 64 and result["method"] == "tsne"
    assert 0 <= result["label_agreement_map"] <= 1 and 0 <= result["label_agreement_embedding"] <= 1
    assert 0.5 < result["trustworthiness"] <= 1
    table = capsys.readouterr().out
    assert "| map (tsne) |" in table
    print(table)  # the numbers quoted in the README (pytest -s)
    other = tmp_path / "unmapped.json"
    assert evaluate.main(["--collection", str(unmapped), "--tasks", "map", "--out", str(other), "--no-progress"]) == 0
    assert "--add-map" in json.loads(other.read_text())["skipped"]["map"]
