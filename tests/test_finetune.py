"""`python -m rag.finetune`: a collection whose captions use words the model never learned is searched well after
tuning, judged on held-out rows it never trained on; the tuned collection verifies, round-trips through the Hub and
is served by the app with RAG_COLLECTION alone; a run that does not help writes nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import numpy as np
import pytest
from PIL import Image
from testkit.domain_collection import MOTIFS, build_domain_collection

from rag.collection import hub
from rag.collection.reader import ADAPTER_FILE, Collection
from rag.config import Settings
from rag.errors import CollectionError, InvalidInput, UsageError
from rag.evaluate import main as evaluate_main
from rag.finetune import FinetuneOptions, TrainSettings, finetune
from rag.finetune import train as finetune_train
from rag.finetune.cli import NOT_BETTER, main as finetune_main
from rag.ingest.cli import main as index_build_main
from rag.models.adapter import AdaptedEncoder
from rag.startup import load_pipeline, open_pipeline


def _hashes(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _record(collection_dir: Path) -> dict:
    return json.loads((collection_dir / "manifest.json").read_text())["build"]["finetune"]


@pytest.fixture(scope="module")
def domain(tiny_clip_dir, tmp_path_factory) -> Path:
    """240 shape images whose captions name each class by a batik motif the tiny CLIP never saw."""
    root = tmp_path_factory.mktemp("domain")
    return build_domain_collection(root / "images", root / "src", tiny_clip_dir)


@pytest.fixture(scope="module")
def tuned(domain, tmp_path_factory):
    """DST tuned by the command with its defaults; (DST, the report folder, SRC's file hashes before, stdout)."""
    root = tmp_path_factory.mktemp("tuned")
    before = _hashes(domain)
    dst, report = root / "dst", root / "report"
    code = finetune_main(["--collection", str(domain), "--out", str(dst), "--report-dir", str(report)])
    assert code == 0
    return dst, report, before


# -- the held-out numbers ---------------------------------------------------------------------------------------


def test_tuning_teaches_the_collections_words_on_held_out_rows(tuned, domain, capsys):
    dst, report, _ = tuned
    record = _record(dst)
    before, after = record["metrics"]["before"], record["metrics"]["after"]
    # zero-shot, a motif name finds its images barely above chance (1/12); tuned, nearly always
    assert before["text_to_image"]["R@1"] < 0.3 and after["text_to_image"]["R@1"] > 0.75
    assert after["text_to_image"]["R@1"] - before["text_to_image"]["R@1"] > 0.5
    assert after["image_to_text"]["MRR"] - before["image_to_text"]["MRR"] > 0.4
    # the image-only baseline does not move when only the text side is tuned
    assert after["image_to_image"] == before["image_to_image"]
    heldout = record["heldout"]
    assert len(heldout["rows"]) == 48 and heldout["relevance"] == "same label"  # 20% of 240 images
    assert record["method"] == "adapter" and record["base_model"]["id"] == Collection.open(domain).manifest.model_id
    assert record["hyperparameters"]["lr"] > 0 and record["train"]["steps"] > 0 and record["train"]["seconds"] > 0


def test_the_command_writes_the_table_and_the_similarity_plot(tuned):
    dst, report, _ = tuned
    saved = json.loads((report / "report.json").read_text())
    assert saved["written"] is True and "| text → image |" in saved["table"] and " → " in saved["table"]
    before, after = np.load(report / "similarity_before.npy"), np.load(report / "similarity_after.npy")
    axes = json.loads((report / "similarity_axes.json").read_text())
    assert before.shape == after.shape == (24, 24) and len(axes["captions"]) == 24
    groups = np.repeat(np.arange(12), 2)  # 24 held-out rows, two per motif, in motif order
    same = groups[:, None] == groups[None, :]
    # after tuning a caption is closer to its motif's images than to the others: a block diagonal
    assert after[same].mean() - after[~same].mean() > before[same].mean() - before[~same].mean() + 0.3
    with Image.open(report / "similarity.png") as png:
        assert png.format == "PNG" and png.width > 2 * 24 * 10


def test_src_is_never_changed_and_dst_is_a_complete_collection_that_verifies(tuned, domain, capsys):
    dst, _, before = tuned
    assert _hashes(domain) == before
    assert index_build_main(["--verify", str(dst)]) == 0 and "OK" in capsys.readouterr().out
    manifest = Collection.open(dst).manifest
    assert ADAPTER_FILE in manifest.files and manifest.model["adapter"]["sides"] == ["text"]
    # only the text side moved, so the images' index is SRC's, byte for byte
    assert (dst / "index.faiss").read_bytes() == (domain / "index.faiss").read_bytes()
    tampered = dst.parent / "tampered"
    tampered.mkdir()
    for path in dst.rglob("*"):
        if path.is_file():
            (tampered / path.relative_to(dst)).parent.mkdir(parents=True, exist_ok=True)
            (tampered / path.relative_to(dst)).write_bytes(path.read_bytes())
    data = bytearray((tampered / ADAPTER_FILE).read_bytes())
    data[-1] ^= 1
    (tampered / ADAPTER_FILE).write_bytes(bytes(data))
    with pytest.raises(CollectionError, match="adapter.safetensors does not match its checksum"):
        Collection.open(tampered)


def test_held_out_rows_are_never_in_a_training_batch(domain, tmp_path, monkeypatch):
    seen_rows, seen_captions = [], []
    real = finetune_train.training_batches

    def spy(rows, captions_by_row, batch_size, rng):
        for batch_rows, captions in real(rows, captions_by_row, batch_size, rng):
            seen_rows.append(batch_rows.copy())
            seen_captions.append(captions.copy())
            yield batch_rows, captions

    monkeypatch.setattr(finetune_train, "training_batches", spy)
    options = FinetuneOptions(train=TrainSettings(epochs=3), seed=5, quantize="int8")  # captions as the Space encodes
    result = finetune(domain, tmp_path / "dst", options, Settings(cache_dir=tmp_path / "cache"))
    heldout = set(result.record["heldout"]["rows"])
    trained = set(np.concatenate(seen_rows).tolist())
    assert seen_rows and not trained & heldout
    assert len(trained) + len(heldout) == 240  # every other captioned image was trained on
    texts = Collection.open(domain).all_captions()
    held_captions = {c for r in heldout for c in texts[r]}
    owners = [r for r, caps in enumerate(texts) for _ in caps]
    assert not {owners[c] for c in np.concatenate(seen_captions).tolist()} & heldout
    assert held_captions  # the held-out rows' captions exist but are queried only
    assert result.record["heldout"]["seed"] == 5 and result.record["caption_encoding"] == "int8 (onnxruntime)"


def test_a_run_that_does_not_improve_is_refused_and_writes_nothing(domain, tmp_path, capsys):
    dst = tmp_path / "dst"
    code = finetune_main(["--collection", str(domain), "--out", str(dst), "--lr", "0",
                          "--report-dir", str(tmp_path / "report")])
    out = capsys.readouterr().out
    assert code == NOT_BETTER != 0
    assert not dst.exists() and not (tmp_path / "dst.partial").exists()
    assert "Not better on the held-out rows" in out and "nothing was written" in out
    assert json.loads((tmp_path / "report" / "report.json").read_text())["written"] is False


def test_bad_requests_get_one_clear_sentence(tuned, domain, tmp_path, capsys):
    dst, _, _ = tuned
    with pytest.raises(UsageError, match="already tuned"):
        finetune(dst, tmp_path / "again", FinetuneOptions())
    with pytest.raises(UsageError, match="SRC is never changed"):
        finetune(domain, domain, FinetuneOptions())
    with pytest.raises(UsageError, match="--method must be one of"):
        finetune(domain, tmp_path / "x", FinetuneOptions(method="lora"))
    assert finetune_main(["--collection", str(domain), "--out", str(dst), "--report-dir", str(tmp_path / "r")]) == 2
    assert "pass --overwrite" in capsys.readouterr().err


# -- serving, evaluating and publishing the tuned collection ---------------------------------------------------


def test_the_app_serves_dst_with_rag_collection_alone(tuned, tiny_git_dir, tmp_path, monkeypatch):
    from test_app import launch_app, make_client
    from gradio_client import handle_file

    dst, _, _ = tuned
    for name in [n for n in os.environ if n.startswith("RAG_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("RAG_COLLECTION", str(dst))
    monkeypatch.setenv("RAG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("RAG_CAPTIONER_MODEL", tiny_git_dir)  # the tiny stand-in for microsoft/git-base-coco
    pipeline, captioner_error = load_pipeline()
    assert captioner_error is None and isinstance(pipeline.encoder, AdaptedEncoder)
    assert pipeline.quantize == "int8"  # the base text tower is still quantised and fidelity-checked
    demo, url = launch_app(pipeline)
    try:
        client = make_client(url, tmp_path / "downloads")
        hits_found = []
        for motif in MOTIFS:
            _, result = client.predict(f"a {motif} motif", 5, api_name="/search_text")
            hits_found.append(np.mean([h["label"] == motif for h in result["hits"]]))
        assert np.mean(hits_found) > 0.8, hits_found  # the collection's own words find their images
        image = Path(pipeline.collection.thumbnail_path(0, tmp_path / "thumbs"))
        _, result = client.predict(handle_file(str(image)), 3, api_name="/search_image")
        assert result["hits"][0]["id"] == 0 and result["hits"][0]["score"] > 0.99
        text, context, _prompt, described = client.predict(handle_file(str(image)), "", 3, api_name="/describe")
        assert text and len(context) == 3 and described["context"][0]["label"] == pipeline.collection.rows([0])[0]["label"]
    finally:
        demo.close()


def test_evaluate_on_dst_queries_the_held_out_rows_and_shows_before_and_after(tuned, tmp_path, monkeypatch, capsys):
    dst, _, _ = tuned
    monkeypatch.setenv("RAG_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "report.json"
    assert evaluate_main(["--collection", str(dst), "--tasks", "t2i,i2t", "--no-progress", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    heldout = _record(dst)["heldout"]["rows"]
    assert report["finetune"]["queried"] == "held-out rows" and report["finetune"]["method"] == "adapter"
    assert report["results"]["t2i"]["queries"] == 2 * len(heldout)  # two captions per held-out image
    printed = capsys.readouterr().out
    assert "Held-out rows before → after" in printed and "| text → image | 96 |" in printed
    assert evaluate_main(["--collection", str(dst), "--tasks", "t2i", "--no-progress", "--all-rows", "--out",
                          str(out)]) == 0
    assert json.loads(out.read_text())["results"]["t2i"]["queries"] == 480


def test_a_tuned_collection_round_trips_through_the_hub_with_its_adapter_checksummed(domain, fake_hub, tmp_path,
                                                                                     capsys):
    token = fake_hub.add_user("me")
    fake_hub.login("me")  # what `hf auth login` stores; the command finds it like huggingface_hub does
    dst = tmp_path / "dst"
    assert finetune_main(["--collection", str(domain), "--out", str(dst), "--push-to-hub", "me/batik-tuned",
                          "--private", "--report-dir", str(tmp_path / "report")]) == 0
    repo = fake_hub.repo("me/batik-tuned")
    commit = repo.branches["main"]
    assert f"Pushed to me/batik-tuned at commit {commit}" in capsys.readouterr().out and repo.private
    assert ADAPTER_FILE in repo.files(commit) and repo.files(commit)[ADAPTER_FILE] == (dst / ADAPTER_FILE).read_bytes()
    pulled = hub.pull_collection("me/batik-tuned", token=token)
    manifest = Collection.open(pulled).manifest
    assert manifest.files[ADAPTER_FILE] == hashlib.sha256((pulled / ADAPTER_FILE).read_bytes()).hexdigest()
    pipeline = open_pipeline(Settings(collection="me/batik-tuned", hf_token=token, cache_dir=tmp_path / "cache"),
                             with_captioner=False)
    assert isinstance(pipeline.encoder, AdaptedEncoder)
    assert [h.label for h in pipeline.search_text("a kawung motif", k=3)] == ["kawung"] * 3


def test_adapter_both_rebuilds_the_index_and_a_separate_text_model_is_loaded_by_default(domain, tiny_clip_dir,
                                                                                         tmp_path):
    settings = Settings(text_model=tiny_clip_dir, cache_dir=tmp_path / "cache")  # as the multilingual model would be
    result = finetune(domain, tmp_path / "dst", FinetuneOptions(method="adapter-both"), settings)
    assert result.written and result.after["text_to_image"]["R@1"] > result.before["text_to_image"]["R@1"] + 0.5
    assert result.after["image_to_image"] != result.before["image_to_image"]  # the images moved too
    dst = Collection.open(tmp_path / "dst")
    assert dst.manifest.model["adapter"]["sides"] == ["text", "image"]
    assert dst.manifest.model["text_model"] == tiny_clip_dir
    assert (tmp_path / "dst" / "index.faiss").read_bytes() != (domain / "index.faiss").read_bytes()
    pipeline = open_pipeline(Settings(cache_dir=tmp_path / "cache"), collection_dir=tmp_path / "dst",
                             with_captioner=False)
    base = pipeline.encoder.base
    assert base.text_model is not base.model  # the text model it was tuned on, with no RAG_TEXT_MODEL set
    # the stored vectors are the adapted ones, so an image finds itself through the image adapter
    image = Image.open(pipeline.collection.thumbnail_path(7, tmp_path / "thumbs")).convert("RGB")
    assert pipeline.search_image(image, k=1)[0].id == 7


# -- the Build tab: "Tune on my captions" ---------------------------------------------------------------------


def test_the_build_tab_tunes_a_session_collection_and_the_session_searches_it(domain, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError
    from test_app import launch_app
    from testkit.domain_collection import domain_archive

    space = open_pipeline(Settings(cache_dir=tmp_path / "cache"), collection_dir=domain, with_captioner=False)
    demo, url = launch_app(space)
    try:
        mine = Client(url, verbose=False, download_files=str(tmp_path / "downloads"), analytics_enabled=False)
        archive = domain_archive(tmp_path / "batik.zip")
        built = mine.predict(handle_file(str(archive)), "", "train", "", "", "", True, 0, api_name="/build")
        assert built["ok"] and built["rows"] == 240
        result, plot = mine.predict(None, None, None, None, api_name="/finetune")  # None = every default
        assert result["ok"] and result["tuned"] and result["heldout_rows"] == 48
        assert result["after"]["text_to_image"]["R@1"] > result["before"]["text_to_image"]["R@1"] + 0.5
        assert "| text → image |" in result["table"] and result["train"]["seconds"] <= 120 + 5
        with Image.open(plot) as png:
            assert png.format == "PNG"
        info = mine.predict(api_name="/info")
        assert info["collection"].endswith("tuned on its captions") and info["rows"] == 240
        _, found = mine.predict("a kawung motif", 5, api_name="/search_text")
        assert [h["label"] for h in found["hits"]].count("kawung") >= 4, found["hits"]
        with pytest.raises(AppError, match="already tuned"):  # one sentence, and the session keeps serving
            mine.predict("adapter", 0.2, 0, 0, api_name="/finetune")
        assert mine.predict(api_name="/info")["collection"].endswith("tuned on its captions")
    finally:
        demo.close()


def test_cancel_stops_a_session_tuning_and_the_session_keeps_its_collection(domain, tmp_path):
    import shutil
    from types import SimpleNamespace

    from rag.space.sessions import SessionRegistry
    from ui.finetune_handlers import FinetuneHandlers

    space = open_pipeline(Settings(cache_dir=tmp_path / "cache", quantize="none"), collection_dir=domain,
                          with_captioner=False)
    registry = SessionRegistry(space, tmp_path / "sessions")
    request = SimpleNamespace(headers={}, session_hash="visitor", client=None)
    _, work = registry.begin_build("visitor")
    shutil.copytree(domain, work / "collection")
    built = registry.finish_build("visitor", work / "collection", "your upload (batik.zip)")
    handlers = FinetuneHandlers(registry, Settings(cache_dir=tmp_path / "cache"))
    stages = []

    def progress(fraction, desc=None):
        stages.append(desc)
        handlers.cancel(request)  # the visitor presses Cancel while the captions are being encoded

    result, plot = handlers.finetune("", 0, 0, 0, request, progress=progress)
    assert result == {"ok": False, "cancelled": True, "error": result["error"]} and plot is None
    assert "cancelled" in result["error"] and stages == ["encoding captions"]
    assert registry.pipeline_for("visitor") is built and not registry.state("visitor").building
    assert sorted(p.name for p in (tmp_path / "sessions").glob("*/*")) == [work.name]  # the tuning's folder is gone
    with pytest.raises(InvalidInput, match="method must be one of"):
        handlers.finetune("lora", 0, 0, 0, request, progress=progress)
