"""Pipeline.search and Pipeline.duplicates on real (tiny-CLIP) collections of generated images.

What a user notices: weighted +/- terms and #rows move the results, filters hold on every hit, "Load more"
continues a page without overlap, the threshold cuts, every bad request says why, and planted exact and
near-duplicates (resized, re-compressed copies) come back as groups while distinct images do not.
"""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from testkit.shapes import build_shapes, write_shape_folder
from testkit.tiny_models import make_shape_images

from rag.config import Settings
from rag.errors import InvalidInput, ServiceError
from rag.pipeline import Pipeline
from rag.startup import open_pipeline


@pytest.fixture(scope="module")
def pipeline(tiny_clip_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("search-shapes")
    write_shape_folder(root / "images", n=96)
    build_shapes(root / "images", root / "collection", tiny_clip_dir)
    settings = Settings(cache_dir=root / "cache")
    return open_pipeline(settings, collection_dir=root / "collection", with_captioner=False)


def labels(result) -> list[str]:
    return [hit.label for hit in result.hits]


def test_text_terms_find_their_images_and_are_reported(pipeline):
    result = pipeline.search("red circle", k=8)
    assert labels(result).count("red circle") >= 6
    assert [t.to_dict() for t in result.terms] == [{"kind": "text", "value": "red circle", "weight": 1.0}]
    assert result.to_dict()["terms"][0]["value"] == "red circle" and result.to_dict()["k"] == 8


def test_a_row_term_finds_itself_and_a_negative_term_pushes_away(pipeline):
    row = pipeline.search("blue square", k=1).hits[0].id
    itself = pipeline.search(f"#{row}", k=1).hits[0]
    assert itself.id == row and itself.score == pytest.approx(1.0, abs=1e-4)
    plain = pipeline.search("red circle", k=30)
    minus = pipeline.search("red circle - 2*circle", k=30)
    assert labels(minus).count("red circle") < labels(plain).count("red circle")
    assert minus.terms[1].weight == -2.0


def test_the_image_is_one_more_weighted_term(pipeline, tmp_path):
    image, _, label = make_shape_images(1, seed=99)[0]
    image.save(tmp_path / "query.png")
    alone = pipeline.search(image=str(tmp_path / "query.png"), k=6)
    assert [h.id for h in alone.hits] == [h.id for h in pipeline.search_image(str(tmp_path / "query.png"), k=6)]
    assert sum(found.split()[0] == label.split()[0] for found in labels(alone)) >= 4  # same colour
    assert alone.terms[-1].to_dict() == {"kind": "image", "value": "uploaded image", "weight": 1.0}
    mixed = pipeline.search("yellow triangle", image=str(tmp_path / "query.png"), image_weight=0.25, k=6)
    assert mixed.terms[-1].weight == 0.25 and labels(mixed).count("yellow triangle") >= 4


def test_filters_hold_on_every_hit_and_still_fill_the_page(pipeline):
    result = pipeline.search("red circle", k=10, filters={"label": ["blue square", "green triangle"]})
    assert len(result.hits) == 10 and set(labels(result)) <= {"blue square", "green triangle"}
    assert result.filters == {"label": {"in": ["blue square", "green triangle"]}}
    by_column = pipeline.search("red circle", k=10, filters='{"photographer": "p1", "source": {"contains": "SET_A"}}')
    assert len(by_column.hits) == 10
    assert all(h.metadata["photographer"] == "p1" and "set_a" in h.source for h in by_column.hits)
    assert by_column.matching_rows < len(pipeline.collection)


def test_load_more_continues_the_ranking_and_the_threshold_cuts(pipeline):
    whole = pipeline.search("green square", k=30, filters={"photographer": {"in": ["p0", "p2"]}})
    pages = [pipeline.search("green square", k=10, offset=o, filters={"photographer": {"in": ["p0", "p2"]}})
             for o in (0, 10, 20)]
    assert [h.id for p in pages for h in p.hits] == [h.id for h in whole.hits]
    cut_at = whole.hits[12].score
    cut = pipeline.search("green square", k=30, threshold=cut_at, filters={"photographer": {"in": ["p0", "p2"]}})
    assert [h.id for h in cut.hits] == [h.id for h in whole.hits if h.score >= cut_at]
    assert pipeline.search("green square", k=10, threshold=0).threshold is None


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"query": "#99999"}, "Row #99999 is not in the collection: rows are #0 to #95"),
        ({"query": "- red circle"}, "no positive term"),
        ({"query": "red - red"}, "cancel each other out"),
        ({"query": ""}, "Type a query"),
        ({"query": "red +"}, "empty term"),
        ({"query": "red", "filters": {"colour": "red"}},
         "Unknown filter column 'colour': this collection has label, source, captions, photographer"),
        ({"query": "red", "k": 0}, "k must be between 1 and 50"),
        ({"query": "red", "offset": -1}, "offset must be between 0"),
        ({"query": "red", "threshold": 2}, "threshold must be a cosine similarity between -1 and 1"),
        ({"query": "red", "image": "x.png", "image_weight": float("nan")}, "image_weight must be a finite number"),
    ],
)
def test_bad_searches_say_what_to_change(pipeline, kwargs, message):
    with pytest.raises(InvalidInput) as error:
        pipeline.search(**kwargs)
    assert message in str(error.value)


# -- near-duplicates ------------------------------------------------------------------------------------


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


@pytest.fixture(scope="module")
def planted(tiny_clip_dir, tmp_path_factory):
    """One image per label (12 distinct), plus an exact copy, a resized + a re-compressed copy, and a resized re-compressed one."""
    root = tmp_path_factory.mktemp("duplicates")
    folder = root / "images"
    folder.mkdir()
    originals = {}
    for image, _, label in make_shape_images(48, seed=11):
        originals.setdefault(label, image)
    names = []
    for n, image in enumerate(originals.values()):
        image.save(folder / f"d{n:02d}.png")
        names.append(f"d{n:02d}.png")
    shutil.copy(folder / "d00.png", folder / "z_exact_copy_of_d00.png")
    originals_list = list(originals.values())
    originals_list[3].resize((40, 40)).save(folder / "z_small_d03.png")
    _jpeg(originals_list[3], 20).save(folder / "z_jpeg_d03.jpg")
    _jpeg(originals_list[7].resize((128, 128)), 35).save(folder / "z_big_jpeg_d07.jpg")
    with open(folder / "captions.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "caption"])
        writer.writerows([[p.name, p.stem] for p in sorted(folder.iterdir()) if p.suffix != ".csv"])
    build_shapes(folder, root / "collection", tiny_clip_dir)
    return open_pipeline(Settings(cache_dir=root / "cache"), collection_dir=root / "collection",
                                  with_captioner=False)


def _names(pipeline: Pipeline, ids: list[int]) -> set[str]:
    return {Path(row["source"]).name for row in pipeline.collection.rows(ids)}


def test_planted_duplicates_come_back_as_groups(planted):
    """Every planted copy (exact, resized, re-compressed) is grouped with its original, no group joins two
    originals, bigger groups come first. (0.97: the tiny test CLIP scores a 40 px re-save of a 64 px shape ~0.98.)"""
    found = planted.duplicates(threshold=0.97, max_groups=10)
    groups = [_names(planted, g.ids) for g in found.groups]
    planted_sets = [{"d03.png", "z_small_d03.png", "z_jpeg_d03.jpg"}, {"d00.png", "z_exact_copy_of_d00.png"},
                    {"d07.png", "z_big_jpeg_d07.jpg"}]
    for copies in planted_sets:
        assert any(copies <= group for group in groups), f"{sorted(copies)} not grouped together: {groups}"
    assert all(len(group & {"d00.png", "d03.png", "d07.png"}) <= 1 for group in groups)
    assert [len(g) for g in groups] == sorted((len(g) for g in groups), reverse=True)
    assert found.total_groups == len(groups) and all(0.97 <= g.min_score <= 1.0 for g in found.groups)
    by_name = {Path(row["source"]).name: i for i, row in enumerate(planted.collection.rows(range(len(planted.collection))))}
    pair = planted.collection.stored_vectors(np.array([by_name["d00.png"], by_name["z_exact_copy_of_d00.png"]]))
    assert float(pair[0] @ pair[1]) == pytest.approx(1.0, abs=1e-5)
    data = found.to_dict()
    assert set(data["groups"][0]) == {"ids", "min_score"} and data["threshold"] == 0.97


def test_lower_thresholds_only_merge_and_max_groups_caps(planted):
    strict = planted.duplicates(threshold=0.99)
    loose = planted.duplicates(threshold=0.95)
    for group in strict.groups:  # every strict group sits inside one looser group
        assert any(set(group.ids) <= set(other.ids) for other in loose.groups)
    capped = planted.duplicates(threshold=0.97, max_groups=1)
    assert len(capped.groups) == 1 and capped.total_groups == planted.duplicates(threshold=0.97).total_groups >= 3
    vectors = planted.collection.stored_vectors(np.arange(len(planted.collection)))
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -1)
    paired = {int(i) for i in np.argwhere(sims >= 0.95 - 1e-6).ravel()}
    assert paired == {i for g in planted.duplicates(threshold=0.95, max_groups=500).groups for i in g.ids}


@pytest.mark.parametrize(
    "kwargs, message",
    [({"threshold": 0.2}, "between 0.5 and 1"), ({"threshold": "high"}, "cosine similarity"),
     ({"max_groups": 0}, "between 1 and 500"), ({"max_groups": 2.5}, "whole number")],
)
def test_bad_duplicate_requests_say_why(planted, kwargs, message):
    with pytest.raises(InvalidInput) as error:
        planted.duplicates(**kwargs)
    assert message in str(error.value)


def test_duplicates_refuse_collections_too_big_for_an_all_pairs_search(planted, monkeypatch):
    import rag.pipeline

    monkeypatch.setattr(rag.pipeline, "MAX_DUPLICATE_ROWS", 10)
    with pytest.raises(ServiceError, match="up to 10 rows on this hardware"):
        planted.duplicates(threshold=0.985)  # a threshold no other test asked for: results are cached per threshold
