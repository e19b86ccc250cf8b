"""index_build --engine ray on a local 2-CPU Ray: the same collection as --engine local, bad files listed, resume."""

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
from testkit.shapes import write_shape_folder
from testkit.tiny_models import make_shape_images

import index_build
from rag.ingest.partial import prepare_partial
from rag.collection.reader import Collection
from rag.explore.map_file import read_map

ROOT = Path(__file__).resolve().parents[1]
ray = pytest.importorskip("ray")


def _add_bad_files(folder: Path) -> list[str]:
    (folder / "bad").mkdir()
    (folder / "bad" / "zero.jpg").write_bytes(b"")
    (folder / "bad" / "notes.png").write_text("not an image")
    good = io.BytesIO()
    Image.new("RGB", (64, 64), (255, 0, 0)).save(good, format="JPEG")
    (folder / "bad" / "truncated.jpg").write_bytes(good.getvalue()[:150])
    return ["bad/notes.png", "bad/truncated.jpg", "bad/zero.jpg"]


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray with 2 CPUs and a small object store, shut down after the module."""
    from rag.ingest.ray.engine import start_local

    start_local(num_cpus=2, object_store_memory=100 * 1024 * 1024, include_dashboard=False, log_to_driver=False,
                runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def pair(tiny_clip_dir, tmp_path_factory, local_ray):
    """The shapes folder (with 3 bad files, not all at the end) built by both engines."""
    folder = write_shape_folder(tmp_path_factory.mktemp("src") / "shapes", n=48)
    bad = _add_bad_files(folder)
    common = ["--images", str(folder), "--captions", str(folder / "captions.csv"), "--model", tiny_clip_dir,
              "--batch-size", "8", "--chunk-rows", "16", "--no-progress"]
    out = tmp_path_factory.mktemp("out")
    assert index_build.main([*common, "--out", str(out / "local")]) == 0
    assert index_build.main([*common, "--out", str(out / "ray"), "--engine", "ray", "--workers", "2"]) == 0
    return folder, out / "local", out / "ray", bad


@pytest.mark.slow
def test_ray_build_matches_local_build(pair):
    _, local_dir, ray_dir, _ = pair
    local, built = Collection.open(local_dir), Collection.open(ray_dir)
    assert len(built) == len(local) == 48
    ids = range(len(local))
    keys = ("id", "captions", "label", "source", "metadata")
    assert [{k: r[k] for k in keys} for r in built.rows(ids)] == [{k: r[k] for k in keys} for r in local.rows(ids)]
    everyone = list(range(len(local)))
    cosine = np.sum(built.stored_vectors(everyone) * local.stored_vectors(everyone), axis=1)
    assert cosine.min() >= 0.999
    assert [built.thumbnail(i) for i in (0, 47)] == [local.thumbnail(i) for i in (0, 47)]
    manifest = json.loads((ray_dir / "manifest.json").read_text())
    assert manifest["build"]["engine"] == "ray" and manifest["index_factory"] == "Flat"
    assert not ray_dir.with_name("ray.partial").exists()
    # the Explore map, as the local builder writes it: listed, checksummed, one point per row
    assert "map.parquet" in manifest["files"] and manifest["build"]["map"]["rows"] == 48
    ray_map, local_map = read_map(built), read_map(local)
    assert ray_map.shape == local_map.shape == (48, 2) and np.isfinite(ray_map).all()


@pytest.mark.slow
def test_ray_build_skips_and_lists_bad_files_and_verifies(pair, capsys):
    _, _, ray_dir, bad = pair
    manifest = json.loads((ray_dir / "manifest.json").read_text())
    assert manifest["skipped"]["count"] == 3
    assert sorted(item["source"] for item in manifest["skipped"]["items"]) == bad
    assert all(item["reason"] for item in manifest["skipped"]["items"])
    assert index_build.main(["--verify", str(ray_dir)]) == 0
    assert "rows            48" in capsys.readouterr().out
    shards = datasets.load_dataset("parquet", data_files=str(ray_dir / "data" / "*.parquet"), split="train")
    assert isinstance(shards.features["image"], datasets.Image) and shards["id"] == list(range(48))


@pytest.mark.slow
def test_interrupted_ray_build_resumes_from_its_parts(pair, tiny_clip_dir, tmp_path, caplog):
    """Parts left by an interrupted build are kept; the resumed build encodes only the rest, here into an IVF index."""
    from rag.ingest.ray import engine as ray_build
    from rag.ingest.ray import parts as ray_parts

    folder, _, ray_dir, _ = pair
    argv = ["--images", str(folder), "--captions", str(folder / "captions.csv"), "--model", tiny_clip_dir,
            "--batch-size", "8", "--chunk-rows", "16", "--no-progress", "--engine", "ray", "--workers", "1",
            "--index-factory", "IVF4,Flat", "--out", str(tmp_path / "c")]
    source = index_build.make_source(index_build.parse_args(argv), None)
    options = ray_build.RayOptions(model=tiny_clip_dir, batch_size=8, chunk_rows=16, progress=False)
    partial = prepare_partial(tmp_path / "c", ray_build._fingerprint(source, options), resume=False,
                              check=ray_parts.read_records)
    ray_build._run_pipeline(source, partial, options, [{"start": 0, "end": 20}])  # then "interrupted"
    assert sum(r["end"] - r["start"] for r in ray_parts.read_records(partial)) == 20
    caplog.set_level("INFO")
    assert index_build.main([*argv, "--resume"]) == 0
    assert f"resuming: {len(source) - 20} of {len(source)} source items still to encode" in caplog.text
    resumed, reference = Collection.open(tmp_path / "c"), Collection.open(ray_dir)
    assert resumed.manifest.index_factory == "IVF4,Flat" and len(resumed) == len(reference)
    assert [r["source"] for r in resumed.rows(range(48))] == [r["source"] for r in reference.rows(range(48))]
    assert resumed.manifest.skipped == reference.manifest.skipped


def test_resume_refuses_a_partial_build_of_the_other_engine(tiny_clip_dir, tmp_path, capsys):
    folder = write_shape_folder(tmp_path / "shapes", n=4)
    from rag.ingest.paths import mark

    partial = tmp_path / "c.partial"
    mark(partial, "partial")  # as the local builder leaves it
    (partial / "build.json").write_text(json.dumps({"source": {}, "model": {}}))
    code = index_build.main(["--images", str(folder), "--model", tiny_clip_dir, "--out", str(tmp_path / "c"),
                             "--engine", "ray", "--resume", "--no-progress"])
    assert code == 1
    assert "local engine" in capsys.readouterr().err
    assert (partial / "build.json").exists()


def test_ray_flags_need_the_ray_engine(capsys):
    with pytest.raises(SystemExit):
        index_build.parse_args(["--images", "x", "--out", "y", "--num-gpus", "1"])
    assert "--engine ray" in capsys.readouterr().err


def test_int8_is_refused_with_the_ray_engine_rather_than_ignored(capsys):
    with pytest.raises(SystemExit):
        index_build.parse_args(["--images", "x", "--out", "y", "--engine", "ray", "--quantize", "int8"])
    assert "--quantize int8 needs --engine local" in capsys.readouterr().err


def test_the_space_never_imports_ray():
    code = "import sys, app, rag.pipeline; print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.slow
def test_ray_build_of_a_parquet_dataset_matches_local(tiny_clip_dir, tmp_path, local_ray):
    """A `datasets` parquet source with a ClassLabel, list captions, an extra column and one corrupt image."""
    samples = make_shape_images(12, seed=3)
    names = sorted({label for _, _, label in samples})
    encoded = []
    for image, _, _ in samples:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        encoded.append({"bytes": buffer.getvalue(), "path": None})
    encoded[4] = {"bytes": b"not an image", "path": None}
    features = datasets.Features({"img": datasets.Image(), "sentences": datasets.List(datasets.Value("string")),
                                  "label": datasets.ClassLabel(names=names), "img_id": datasets.Value("int32")})
    datasets.Dataset.from_dict({
        "img": encoded, "sentences": [[caption, "another"] for _, caption, _ in samples],
        "label": [names.index(label) for _, _, label in samples], "img_id": list(range(100, 112)),
    }, features=features).to_parquet(str(tmp_path / "train.parquet"))
    common = ["--dataset", str(tmp_path / "train.parquet"), "--split", "train", "--label-column", "label",
              "--caption-column", "sentences", "--model", tiny_clip_dir, "--batch-size", "4", "--no-progress"]
    assert index_build.main([*common, "--out", str(tmp_path / "local")]) == 0
    assert index_build.main([*common, "--out", str(tmp_path / "ray"), "--engine", "ray", "--workers", "1"]) == 0
    local, built = Collection.open(tmp_path / "local"), Collection.open(tmp_path / "ray")
    assert len(built) == len(local) == 11
    assert built.rows(range(11)) == local.rows(range(11))
    assert built.rows([4])[0]["metadata"] == {"img_id": "105"}
    assert np.sum(built.stored_vectors(range(11)) * local.stored_vectors(range(11)), axis=1).min() >= 0.999
    assert built.manifest.skipped["count"] == local.manifest.skipped["count"] == 1
    assert [item["source"] for item in built.manifest.skipped["items"]] == ["train[4]"]


@pytest.mark.slow
def test_ray_build_of_an_archive_matches_local(tiny_clip_dir, tmp_path, local_ray):
    """A zip (extracted into the driver's temporary folder) gives the workers the same files; nothing is deleted early."""
    folder = write_shape_folder(tmp_path / "shapes", n=12)
    archive = shutil.make_archive(str(tmp_path / "shapes"), "zip", folder)
    common = ["--images", archive, "--model", tiny_clip_dir, "--batch-size", "4", "--no-progress"]
    assert index_build.main([*common, "--out", str(tmp_path / "local")]) == 0
    assert index_build.main([*common, "--out", str(tmp_path / "ray"), "--engine", "ray", "--workers", "1"]) == 0
    local, built = Collection.open(tmp_path / "local"), Collection.open(tmp_path / "ray")
    assert len(built) == len(local) == 12
    assert built.rows(range(12)) == local.rows(range(12))
    assert built.manifest.source == local.manifest.source
