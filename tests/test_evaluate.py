"""`python -m rag.evaluate` end to end on generated shapes, with the tiny trained CLIP and tiny GIT.

What is meaningful on the shapes collection: 96 images, 12 labels ("red circle", ...), 8 images per
label, two captions per image: a visual one ("a red circle", "a photo of a red circle", ...) that
several images share word for word, and "picture number i", unique and non-visual. So
* exact-image text -> image (t2i) can at best put the own image among the ~8 look-alikes for the
  visual half of the queries and is at chance (R@10 = 10/96) for the "picture number" half; we only
  check it beats chance;
* the label-level checks are the real ones: a query file of the 12 label names (t2i by label, chance
  R@1 = 8/96) and image -> image by label (chance top-1 = 7/95).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from testkit.shapes import build_shapes, write_shape_folder

from rag import evaluate
from rag.ingest.builder import BuildOptions, build_collection
from rag.collection.reader import Collection
from rag.models.encoder import Encoder
from rag.ingest.sources import FolderSource

ROOT = Path(__file__).resolve().parents[1]
N = 96
CLASSES = 12


@pytest.fixture(scope="module")
def shapes(tiny_clip_dir, tmp_path_factory):
    folder = write_shape_folder(tmp_path_factory.mktemp("eval-src") / "shapes", n=N)
    out = build_shapes(folder, tmp_path_factory.mktemp("eval-col") / "collection", tiny_clip_dir)
    labels = Collection.open(out).all_labels()
    queries = tmp_path_factory.mktemp("eval-q") / "labels.jsonl"
    queries.write_text("".join(
        json.dumps({"query": label, "relevant": [i for i, l in enumerate(labels) if l == label]}) + "\n"
        for label in sorted(set(labels))
    ))
    return out, queries


@pytest.fixture(scope="module")
def cli_run(shapes, tiny_git_dir, tmp_path_factory):
    out, queries = shapes
    work = tmp_path_factory.mktemp("eval-run")
    report_path = work / "report.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "RAG_CACHE_DIR": str(work / "cache")}
    for name in ("RAG_COLLECTION", "RAG_CAPTIONER", "RAG_CAPTIONER_MODEL", "RAG_TEXT_MODEL", "RAG_REVISION"):
        env.pop(name, None)
    proc = subprocess.run(
        [sys.executable, "-m", "rag.evaluate", "--collection", str(out), "--captioner", "git",
         "--captioner-model", tiny_git_dir, "--sample", "12", "--queries", str(queries),
         "--out", str(report_path), "--no-progress"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(report_path.read_text()), proc.stdout


def test_report_structure(cli_run, shapes, tiny_clip_dir, tiny_git_dir):
    report, stdout = cli_run
    assert report["schema"] == evaluate.REPORT_SCHEMA
    assert set(report["results"]) == {"t2i", "i2t", "i2i", "queries", "describe", "map"} and report["skipped"] == {}
    settings = report["settings"]
    assert settings["sample"] == 12 and settings["seed"] == 0 and settings["k"] == [0, 1, 5]
    # every setting that moves a figure is named: the query path's quantisation and the captioner's decoding
    assert settings["quantize_requested"] == "auto" and settings["quantize"] in ("int8", "none")
    assert settings["quantize_engine"] in ("onnxruntime", "torch", None)
    generation = settings["generation"]
    assert generation["kind"] == "git" and generation["device"] == "cpu" and generation["dtype"] == "float32"
    assert generation["beams"] == 5 and generation["max_new_tokens"] == 20
    collection = report["collection"]
    assert collection["name"] == shapes[0].name and collection["rows"] == N  # a folder name, never a server path
    assert collection["built"] and "IndexFlatIP" in collection["index"]
    assert report["models"]["embedding"] == tiny_clip_dir
    assert report["models"]["captioner"] == f"git ({tiny_git_dir})"
    assert report["machine"]["python"] and report["machine"]["versions"]["sacrebleu"] == "2.6.0"
    assert {"load", "load_captioner", "t2i", "i2t", "i2i", "queries", "describe", "total"} <= set(report["timings"])
    # the printed table is the report's table, and shows RAG (k = 5) beside no RAG (k = 0)
    assert report["table"] in stdout
    assert "| k = 0 (no RAG) |" in stdout and "| k = 5 |" in stdout and "| text → image | 24 |" in stdout


def test_quantize_flag_is_recorded_and_none_runs_fp32(shapes, tmp_path, monkeypatch):
    """``--quantize none`` runs the fp32 text tower (the published baselines' setting) and the report says so."""
    monkeypatch.setenv("RAG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("RAG_QUANTIZE", raising=False)
    report_path = tmp_path / "r.json"
    assert evaluate.main(["--collection", str(shapes[0]), "--tasks", "t2i", "--sample", "12", "--quantize", "none",
                          "--out", str(report_path), "--no-progress"]) == 0
    settings = json.loads(report_path.read_text())["settings"]
    assert (settings["quantize_requested"], settings["quantize"], settings["quantize_engine"]) == ("none", "none", None)
    assert settings["generation"] is None


def test_sampled_retrieval_numbers_are_above_chance(cli_run):
    results = cli_run[0]["results"]
    # label-level text -> image: the 12 label names, each with 8 relevant rows (12 <= --sample: all kept)
    queries = results["queries"]
    assert queries["queries"] == CLASSES
    assert queries["R@1"] >= 0.4 and queries["R@5"] >= 0.75, queries  # chance 8/96 = 0.08 and ~0.36
    assert queries["mAP@10"] >= 0.3, queries  # chance ~0.08
    # image -> image by label on 12 sampled queries, each excluded from its own results
    i2i = results["i2i"]
    assert i2i["queries"] == 12 and i2i["classes"] == CLASSES
    assert i2i["chance_top1"] == pytest.approx(7 / 95)
    assert i2i["top5"] >= 0.5, i2i  # chance 1 - C(88,5)/C(95,5) = 0.32
    # exact-image text -> image: 12 sampled rows x 2 captions, half of them non-visual "picture number i"
    t2i = results["t2i"]
    assert t2i["queries"] == 24 and t2i["images"] == 12 and t2i["gallery"] == N
    assert t2i["depth"] == N and t2i["not_found_within_depth"] == 0  # depth covers the collection: exact ranks
    assert t2i["R@10"] >= 2 * 10 / N, t2i  # chance R@10 = 10/96
    assert 1 <= t2i["median_rank"] <= N and 0 < t2i["MRR"] <= 1
    # image -> text against all 192 captions (two relevant each: chance R@10 = 1 - C(190,10)/C(192,10) = 0.10)
    i2t = results["i2t"]
    assert i2t["queries"] == 12 and i2t["gallery_captions"] == 2 * N
    assert i2t["R@10"] >= 0.2, i2t


def test_label_retrieval_is_far_above_chance_on_every_row(shapes, tmp_path, monkeypatch):
    """No sampling: all 96 images query image -> image, all 192 captions query text -> image."""
    out, _ = shapes
    monkeypatch.setenv("RAG_CACHE_DIR", str(tmp_path / "cache"))
    code = evaluate.main(["--collection", str(out), "--tasks", "i2i,t2i", "--out", str(tmp_path / "r.json"),
                          "--no-progress"])
    assert code == 0
    results = json.loads((tmp_path / "r.json").read_text())["results"]
    i2i = results["i2i"]
    assert i2i["queries"] == N
    # chance: top-1 7/95 = 0.074, top-5 0.32, mAP@10 ~0.07; 96 queries make these margins many sigmas
    assert i2i["top1"] >= 0.3 and i2i["top5"] >= 0.7 and i2i["mAP@10"] >= 0.25, i2i
    t2i = results["t2i"]
    assert t2i["queries"] == 2 * N
    assert t2i["R@10"] >= 2 * 10 / N and t2i["MRR"] >= 2 * t2i["chance_MRR"], t2i


def test_describe_with_and_without_rag(cli_run):
    describe = cli_run[0]["results"]["describe"]
    assert describe["rows"] == 12 and describe["rows_with_captions"] == 12 and describe["rows_with_labels"] == 12
    assert len(describe["sample"]) == 12 and describe["bleu_signature"].startswith("nrefs:2|case:lc")
    assert set(describe["by_k"]) == {"0", "1", "5"}
    for k, row in describe["by_k"].items():
        assert 0 <= row["bleu4"] <= 100 and 0 <= row["rougeL_f"] <= 1 and 0 <= row["label_inclusion"] <= 1
        assert row["words"] > 0 and row["seconds"] > 0
        assert (row["from_context"] is None) == (k == "0")
    example = describe["examples"][0]
    assert example["row"] in describe["sample"] and len(example["references"]) == 2
    for k in ("1", "5"):  # the query row never appears in its own context
        assert all(example["row"] not in ex["outputs"][k]["context"] for ex in describe["examples"])
        assert len(example["outputs"][k]["context"]) == int(k)


def test_collection_without_captions_or_labels_skips_with_reasons(
    tiny_clip_dir, tiny_git_dir, tmp_path, monkeypatch, capsys
):
    folder = write_shape_folder(tmp_path / "src", n=16)
    (folder / "captions.csv").unlink()
    out = tmp_path / "bare"
    build_collection(FolderSource(folder), out, Encoder(tiny_clip_dir), BuildOptions(progress=False))
    monkeypatch.setenv("RAG_CACHE_DIR", str(tmp_path / "cache"))
    report_path = tmp_path / "r.json"
    code = evaluate.main(["--collection", str(out), "--captioner", "git", "--captioner-model", tiny_git_dir,
                          "--sample", "2", "--k", "0,2", "--out", str(report_path), "--no-progress"])
    assert code == 0
    report = json.loads(report_path.read_text())
    assert report["skipped"]["t2i"] == report["skipped"]["i2t"] == "the collection has no captions"
    assert report["skipped"]["i2i"] == "the collection has no labels"
    assert "queries" in report["skipped"]
    by_k = report["results"]["describe"]["by_k"]
    assert set(by_k) == {"0", "2"} and "bleu4" not in by_k["0"] and "label_inclusion" not in by_k["2"]
    assert by_k["2"]["words"] > 0
    assert "- skipped i2i (image → image (label)): the collection has no labels" in capsys.readouterr().out
    # asking for a task by name that the collection cannot support is a reported skip, not a crash
    assert evaluate.main(["--collection", str(out), "--tasks", "t2i", "--out", str(report_path), "--no-progress"]) == 0
    assert json.loads(report_path.read_text())["skipped"] == {"t2i": "the collection has no captions"}


class _StubCaptioner:
    model_id = "stub-captioner"

    def caption(self, images):
        return ["a red circle"] * len(images)


def test_model_written_captions_are_not_ground_truth(tiny_clip_dir, tmp_path):
    folder = write_shape_folder(tmp_path / "src", n=8)
    (folder / "captions.csv").unlink()
    out = tmp_path / "auto"
    build_collection(FolderSource(folder), out, Encoder(tiny_clip_dir), BuildOptions(progress=False, caption_missing=True),
                     captioner=_StubCaptioner())
    truth = evaluate.GroundTruth.of(Collection.open(out))
    assert truth.generated_caption_rows == 8 and len(truth.caption_rows) == 0
    assert "written by a model" in truth.skip_reason("t2i", have_queries=False)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--k", "0,99"], "outside 0..20"),
        (["--k", "one"], "whole numbers"),
        (["--tasks", "t2i,foo"], "unknown task(s) foo"),
        (["--sample", "0"], "must be at least 1"),
        (["--depth", "5"], "--depth must be at least 10"),
        (["--tasks", "queries"], "needs --queries FILE"),
        (["--queries", "does-not-exist.jsonl"], "no file at"),
        (["--captioner", "blip"], "invalid choice"),
    ],
)
def test_bad_flags_exit_2_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(["--collection", "somewhere", *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_bad_query_files_and_missing_collection(shapes, tmp_path, monkeypatch, capsys):
    out, _ = shapes
    monkeypatch.setenv("RAG_CACHE_DIR", str(tmp_path / "cache"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "red circle", "relevant": [1]}\n{"query": "x", "relevant": "3"}\n')
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(["--collection", str(out), "--queries", str(bad)])
    assert exit_info.value.code == 2 and "line 2: 'relevant' must be a non-empty list" in capsys.readouterr().err
    bad.write_text('{"query": "red circle", "relevant": [1, 500]}\n')
    assert evaluate.main(["--collection", str(out), "--tasks", "queries", "--queries", str(bad), "--no-progress"]) == 2
    assert "row id 500 is outside the collection (0..95)" in capsys.readouterr().err
    monkeypatch.delenv("RAG_COLLECTION", raising=False)
    assert evaluate.main(["--tasks", "i2i"]) == 2
    assert "give --collection" in capsys.readouterr().err
    assert evaluate.main(["--collection", str(tmp_path / "nowhere"), "--tasks", "i2i"]) == 1
    assert "neither a local collection folder" in capsys.readouterr().err
