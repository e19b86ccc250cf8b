"""index_build end to end on generated shapes with the tiny trained CLIP: build, search, verify, resume."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image
from testkit.shapes import COLOURS, RGB, build_shapes, write_shape_folder
from testkit.tiny_models import make_shape_images

import index_build
from rag.images import decode as images
from rag.ingest.builder import BuildOptions, build_collection
from rag.collection.reader import Collection
from rag.config import Settings
from rag.models.encoder import Encoder
from rag.errors import CollectionError
from rag.ingest.sources import FolderSource
from rag.startup import open_pipeline

ROOT = Path(__file__).resolve().parents[1]
LABELS = [f"{c} {s}" for c in COLOURS for s in ("circle", "square", "triangle")]


def _add_bad_files(folder: Path) -> list[str]:
    (folder / "bad").mkdir()
    (folder / "bad" / "zero.jpg").write_bytes(b"")
    (folder / "bad" / "notes.png").write_text("not an image")
    good = io.BytesIO()
    Image.new("RGB", (64, 64), (255, 0, 0)).save(good, format="JPEG")
    (folder / "bad" / "truncated.jpg").write_bytes(good.getvalue()[:150])
    return ["bad/notes.png", "bad/truncated.jpg", "bad/zero.jpg"]


def _dominant_colour(path: str) -> str:
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64).reshape(-1, 3)
    saturated = pixels[(pixels.max(axis=1) - pixels.min(axis=1)) > 80]
    mean = saturated.mean(axis=0)
    return min(COLOURS, key=lambda c: np.linalg.norm(mean - np.array(RGB[c])))


@pytest.fixture(scope="module")
def built(tiny_clip_dir, tmp_path_factory):
    folder = write_shape_folder(tmp_path_factory.mktemp("src") / "shapes", n=96)
    bad = _add_bad_files(folder)
    out = tmp_path_factory.mktemp("out") / "collection"
    code = index_build.main(["--images", str(folder), "--captions", str(folder / "captions.csv"),
                             "--model", tiny_clip_dir, "--out", str(out), "--batch-size", "16",
                             "--chunk-rows", "32", "--no-progress"])
    assert code == 0
    return folder, out, bad


def test_bad_files_are_skipped_and_listed(built):
    _, out, bad = built
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rows"] == 96
    assert manifest["skipped"]["count"] == 3
    assert sorted(item["source"] for item in manifest["skipped"]["items"]) == bad
    assert not out.with_name(out.name + ".partial").exists()


def test_parquet_loads_with_datasets_and_thumbnails(built):
    _, out, _ = built
    ds = datasets.load_dataset("parquet", data_files=str(out / "data" / "*.parquet"), split="train")
    assert len(ds) == 96
    assert isinstance(ds.features["image"], datasets.Image)
    row = ds[5]
    assert isinstance(row["image"], Image.Image) and max(row["image"].size) <= 256
    assert len(row["captions"]) == 2 and row["label"] in LABELS and row["photographer"].startswith("p")
    assert ds["id"] == list(range(96))


def test_text_query_finds_matching_shapes_with_aligned_thumbnails(built, tiny_clip_dir, tmp_path):
    folder, out, _ = built
    pipeline = open_pipeline(Settings(cache_dir=tmp_path), collection_dir=out, with_captioner=False)
    labels_by_file = {}
    for line in (folder / "captions.csv").read_text().splitlines()[1:]:
        file, _, label, _ = line.split(",")
        labels_by_file[file] = label
    precisions = []
    for label in LABELS:
        hits = pipeline.search_text(label, k=5)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        precisions.append(np.mean([h.label == label for h in hits]))
        for hit in hits:
            # metadata, source file and thumbnail must all describe the same image
            assert labels_by_file[hit.source] == hit.label
            assert _dominant_colour(hit.thumbnail) == hit.label.split()[0]
    chance = 1 / len(LABELS)
    assert np.mean(precisions) >= 0.5, (np.mean(precisions), chance)


def test_image_query_and_more_like_this(built, tmp_path):
    folder, out, _ = built
    pipeline = open_pipeline(Settings(cache_dir=tmp_path), collection_dir=out, with_captioner=False)
    hits = pipeline.search_image(folder / "set_a" / "img_001.jpg", k=3)
    assert hits[0].source == "set_a/img_001.jpg" and hits[0].score > 0.99
    similar = pipeline.similar_to(hits[0].id, k=4)
    assert hits[0].id not in [h.id for h in similar] and len(similar) == 4


def test_verify_cli_summary_and_failure(built, tmp_path):
    _, out, _ = built
    ok = subprocess.run([sys.executable, "index_build.py", "--verify", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "rows            96" in ok.stdout and "IndexFlatIP" in ok.stdout
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    with open(broken / "index.faiss", "ab") as handle:
        handle.write(b"\0")
    bad = subprocess.run([sys.executable, "index_build.py", "--verify", str(broken)], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 1 and "checksum" in bad.stderr


def _edit_manifest(path: Path, **changes) -> None:
    data = json.loads((path / "manifest.json").read_text())
    data.update(changes)
    (path / "manifest.json").write_text(json.dumps(data))


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: _edit_manifest(p, format_version=2), "format version 2 is not supported"),
        (lambda p: next((p / "data").glob("*.parquet")).unlink(), "missing data/metadata"),
        (lambda p: (p / "index.faiss").write_bytes((p / "index.faiss").read_bytes()[:-4] + b"abcd"), "checksum"),
        (lambda p: _edit_manifest(p, rows=95), "Row counts disagree"),
        (lambda p: _edit_manifest(p, dim=64), "dimension"),
        (lambda p: (p / "manifest.json").unlink(), "no manifest.json"),
    ],
    ids=["version", "missing-file", "sha256", "row-count", "dim", "no-manifest"],
)
def test_each_validation_failure_has_a_clear_message(built, tmp_path, damage, message):
    _, out, _ = built
    copy = tmp_path / "c"
    shutil.copytree(out, copy)
    damage(copy)
    with pytest.raises(CollectionError, match=message):
        Collection.open(copy)


class _Interrupting(FolderSource):
    def __init__(self, *args, stop_after: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.stop_after = stop_after

    def items(self, start=0):
        for count, item in enumerate(super().items(start)):
            if start + count >= self.stop_after:
                raise KeyboardInterrupt
            yield item


class _CountingEncoder(Encoder):
    encoded = 0

    def embed_features(self, features):
        vectors = super().embed_features(features)
        self.encoded += len(vectors)
        return vectors


def test_interrupted_build_resumes_without_reencoding(tiny_clip_dir, tmp_path):
    folder = write_shape_folder(tmp_path / "src", n=40)
    out = tmp_path / "col"
    options = BuildOptions(batch_size=8, chunk_rows=8, workers=1, progress=False)
    with pytest.raises(KeyboardInterrupt):
        build_collection(_Interrupting(folder, folder / "captions.csv", stop_after=26), out, Encoder(tiny_clip_dir), options)
    assert not out.exists(), "an interrupted build must not leave a collection behind"
    partial = out.with_name("col.partial")
    assert partial.exists()
    done_before = sum(json.loads(p.read_text())["rows"] for p in (partial / "chunks").glob("*.json"))
    assert done_before >= 8  # at least one chunk was committed before the interruption
    encoder = _CountingEncoder(tiny_clip_dir)
    build_collection(FolderSource(folder, folder / "captions.csv"), out, encoder, options, resume=True)
    assert encoder.encoded == 40 - done_before  # committed rows are not encoded again
    resumed = Collection.open(out)
    fresh = build_shapes(folder, tmp_path / "fresh", tiny_clip_dir, batch_size=8, chunk_rows=8)
    assert np.allclose(resumed.stored_vectors(range(40)), Collection.open(fresh).stored_vectors(range(40)), atol=1e-5)
    assert [r["source"] for r in resumed.rows(range(40))] == [r["source"] for r in Collection.open(fresh).rows(range(40))]


def test_source_with_no_usable_image_fails_and_writes_nothing(tiny_clip_dir, tmp_path, capsys):
    folder = tmp_path / "junk"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"")
    (folder / "b.png").write_text("nope")
    code = index_build.main(["--images", str(folder), "--model", tiny_clip_dir, "--out", str(tmp_path / "o"), "--no-progress"])
    assert code == 1
    assert "No usable image" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.partial").exists()


def test_decompression_bomb_in_source_is_skipped(tiny_clip_dir, tmp_path, monkeypatch):
    folder = write_shape_folder(tmp_path / "src", n=12)
    Image.new("RGB", (300, 300), (0, 0, 0)).save(folder / "huge.png")
    monkeypatch.setattr(images, "MAX_PIXELS", 200 * 200)
    out = build_shapes(folder, tmp_path / "o", tiny_clip_dir)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rows"] == 12 and manifest["skipped"]["items"][0]["source"] == "huge.png"


def test_label_from_folder_and_hnsw_index(tiny_clip_dir, tmp_path):
    for i, (image, _, label) in enumerate(make_shape_images(24, seed=1)):
        (tmp_path / "src" / label.replace(" ", "_")).mkdir(parents=True, exist_ok=True)
        image.save(tmp_path / "src" / label.replace(" ", "_") / f"{i}.jpg")
    code = index_build.main(["--images", str(tmp_path / "src"), "--label-from-folder", "--model", tiny_clip_dir,
                             "--out", str(tmp_path / "o"), "--index-factory", "HNSW16,Flat", "--no-progress"])
    assert code == 0
    collection = Collection.open(tmp_path / "o")
    assert collection.index_type == "IndexHNSWFlat"
    rows = collection.rows(range(24))
    assert all(r["label"] == Path(r["source"]).parent.name for r in rows)


def test_dataset_source_with_classlabel_and_list_captions(tiny_clip_dir, tmp_path):
    samples = make_shape_images(24, seed=2)
    names = sorted({label for _, _, label in samples})
    features = datasets.Features({
        "img": datasets.Image(),
        "sentences": datasets.List(datasets.Value("string")),
        "label": datasets.ClassLabel(names=names),
        "img_id": datasets.Value("int32"),
    })
    ds = datasets.Dataset.from_dict({
        "img": [image for image, _, _ in samples],
        "sentences": [[caption, "another caption"] for _, caption, _ in samples],
        "label": [names.index(label) for _, _, label in samples],
        "img_id": list(range(100, 124)),
    }, features=features)
    ds.to_parquet(str(tmp_path / "train.parquet"))
    code = index_build.main(["--dataset", str(tmp_path / "train.parquet"), "--split", "train", "--label-column", "label",
                             "--caption-column", "sentences", "--model", tiny_clip_dir, "--out", str(tmp_path / "o"),
                             "--limit", "20", "--no-progress"])
    assert code == 0
    collection = Collection.open(tmp_path / "o")
    rows = collection.rows(range(20))
    assert len(collection) == 20
    assert [r["label"] for r in rows] == [label for _, _, label in samples[:20]]
    assert rows[0]["captions"] == [samples[0][1], "another caption"]
    assert rows[3]["metadata"] == {"img_id": "103"}


def test_caption_missing_writes_generated_captions_and_says_so(tiny_clip_dir, tiny_git_dir, tmp_path):
    folder = write_shape_folder(tmp_path / "src", n=16)
    # keep captions for half the files only; the rest must be captioned by GIT
    lines = (folder / "captions.csv").read_text().splitlines()
    true_label = {line.split(",")[0]: line.split(",")[2] for line in lines[1:]}
    kept = [lines[0]] + [line for line in lines[1:] if line.startswith("set_a/")]
    (folder / "captions.csv").write_text("\n".join(kept) + "\n")
    code = index_build.main(["--images", str(folder), "--captions", str(folder / "captions.csv"), "--model", tiny_clip_dir,
                             "--caption-missing", "--captioner-model", tiny_git_dir, "--out", str(tmp_path / "o"),
                             "--no-progress"])
    assert code == 0
    collection = Collection.open(tmp_path / "o")
    rows = collection.rows(range(len(collection)))
    generated = [r for r in rows if r["captions_generated"]]
    assert {r["source"].split("/")[0] for r in generated} == {"set_b"}
    assert all(len(r["captions"]) == 1 and r["captions"][0].strip() for r in generated)
    # the tiny GIT names the colour it sees (it was trained on these shapes)
    assert np.mean([true_label[r["source"]].split()[0] in r["captions"][0] for r in generated]) >= 0.75
    assert all(not r["captions_generated"] and len(r["captions"]) == 2 for r in rows if r["source"].startswith("set_a/"))
    manifest = collection.manifest
    assert manifest.generated_captions == len(generated) == 8
    assert "generated by" in manifest.caption_source


def test_more_like_this_on_an_index_without_stored_vectors(tiny_clip_dir, tmp_path):
    folder = write_shape_folder(tmp_path / "src", n=48)
    out = build_shapes(folder, tmp_path / "pq", tiny_clip_dir, index_factory="IVF2,PQ4x4")
    pipeline = open_pipeline(Settings(cache_dir=tmp_path), collection_dir=out, with_captioner=False)
    pipeline.collection._can_reconstruct = False  # an index type that cannot give vectors back
    assert pipeline.collection.stored_vectors([3]) is None
    vectors = pipeline.row_vectors(np.arange(40))
    thumbnail = pipeline.encoder.encode_images([Image.open(io.BytesIO(pipeline.collection.thumbnail(39)))])
    assert vectors.shape == (40, pipeline.encoder.dim) and np.allclose(vectors[39], thumbnail[0], atol=1e-5)
    similar = pipeline.similar_to(3, k=5)
    assert len(similar) == 5 and 3 not in [h.id for h in similar]
