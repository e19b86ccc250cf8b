"""Restarts that do not redo work: an ``--quantize int8`` collection ships its int8 ONNX text tower (checksummed,
pushed and pulled with it) and a start-up uses it instead of exporting, unless it is corrupt or was made by other
library versions; the scan copy is built in the background while exact answers are served. Timings are in
benchmarks/restart.py."""

from __future__ import annotations

import base64
import json
import logging
import shutil
import threading
from pathlib import Path

import faiss
import numpy as np
import pytest
from testkit.shapes import write_shape_folder

import index_build
from rag.collection import hub
from rag.collection.reader import TEXT_EXPORT_FILE, TEXT_EXPORT_KEY, Collection, sha256_file
from rag.config import Settings
from rag.errors import CollectionError
from rag.models import onnx_text, quantize
from rag.search.deferred import DeferredSearcher, start_searcher
from rag.search.flat import make_searcher
from rag.startup import open_pipeline


@pytest.fixture(scope="module")
def int8_collection(tiny_clip_dir, tmp_path_factory) -> Path:
    """A collection built by ``index_build.py --quantize int8`` (its build cache then thrown away, as on a Space)."""
    root = tmp_path_factory.mktemp("int8-build")
    folder = write_shape_folder(root / "src", n=12)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAG_CACHE_DIR", str(root / "build-cache"))
        code = index_build.main(["--images", str(folder), "--captions", str(folder / "captions.csv"), "--model",
                                 tiny_clip_dir, "--out", str(root / "col"), "--no-progress", "--quantize", "int8"])
    assert code == 0
    shutil.rmtree(root / "build-cache")
    return root / "col"


@pytest.fixture()
def exports(monkeypatch) -> list[Path]:
    """The folders the text tower is exported into during the test (the export counter)."""
    done: list[Path] = []
    real = onnx_text.export_int8

    def counted(owner, sample, folder):
        done.append(folder)
        return real(owner, sample, folder)

    monkeypatch.setattr(onnx_text, "export_int8", counted)
    return done


def _start(collection: Path, cache: Path, caplog):
    with caplog.at_level(logging.INFO):
        return open_pipeline(Settings(cache_dir=cache, quantize="auto"), collection_dir=collection, with_captioner=False)


def _copy(collection: Path, to: Path) -> Path:
    return Path(shutil.copytree(collection, to))


def test_an_int8_build_ships_its_text_export_with_a_checksum_and_its_key(int8_collection, tiny_clip_dir, tmp_path):
    manifest = json.loads((int8_collection / "manifest.json").read_text())
    assert manifest["files"][TEXT_EXPORT_FILE] == sha256_file(int8_collection / TEXT_EXPORT_FILE)
    key = manifest["build"][TEXT_EXPORT_KEY]
    assert key["tower"] == "text" and key["torch"] and key["onnxruntime"] and len(key["weights"]) == 24
    assert key["probe"]["shape"][0] == len(quantize.PROBE_TEXTS)
    folder = write_shape_folder(tmp_path / "src", n=4)
    assert index_build.main(["--images", str(folder), "--model", tiny_clip_dir, "--out", str(tmp_path / "fp32"),
                             "--no-progress"]) == 0
    plain = json.loads((tmp_path / "fp32" / "manifest.json").read_text())
    assert TEXT_EXPORT_FILE not in plain["files"] and not (tmp_path / "fp32" / TEXT_EXPORT_FILE).exists()


def test_a_restart_with_an_empty_cache_uses_the_shipped_export_and_exports_nothing(int8_collection, tmp_path, exports,
                                                                                    caplog, monkeypatch):
    fp32_runs = []
    real = quantize.fp32_probe
    monkeypatch.setattr(quantize, "fp32_probe", lambda *args: fp32_runs.append(1) or real(*args))
    pipeline = _start(int8_collection, tmp_path / "empty-cache", caplog)
    assert (pipeline.quantize, pipeline.quantize_engine) == ("int8", "onnxruntime")
    assert exports == [] and not (tmp_path / "empty-cache" / "onnx").exists()
    assert fp32_runs == []  # checked against the fp32 probe vectors shipped with the export
    assert pipeline.encoder.text_runner.shipped and "the collection's export" in caplog.text
    assert pipeline.search_text("a red circle", k=3)  # and it answers
    assert '"text tower"' in caplog.text  # the stage timings are logged


def test_a_tampered_export_is_refused_with_a_log_line_and_exported_again(int8_collection, tmp_path, exports, caplog):
    collection = _copy(int8_collection, tmp_path / "col")
    data = bytearray((collection / TEXT_EXPORT_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (collection / TEXT_EXPORT_FILE).write_bytes(bytes(data))
    pipeline = _start(collection, tmp_path / "cache", caplog)
    assert f"{TEXT_EXPORT_FILE} does not match its checksum" in caplog.text  # the collection itself still loads
    assert len(exports) == 1 and not pipeline.encoder.text_runner.shipped
    assert pipeline.quantize_engine == "onnxruntime" and pipeline.search_text("a red circle", k=3)


def test_an_export_made_by_other_library_versions_is_refused_and_exported_again(int8_collection, tmp_path, exports,
                                                                                caplog):
    collection = _copy(int8_collection, tmp_path / "col")
    manifest = json.loads((collection / "manifest.json").read_text())
    manifest["build"][TEXT_EXPORT_KEY]["onnxruntime"] = "0.0.1"
    (collection / "manifest.json").write_text(json.dumps(manifest))
    pipeline = _start(collection, tmp_path / "cache", caplog)
    assert "the collection's export is not used (onnxruntime 0.0.1 (export) vs" in caplog.text
    assert len(exports) == 1 and not pipeline.encoder.text_runner.shipped and pipeline.quantize == "int8"


def test_shipped_probe_vectors_that_do_not_fit_the_export_leave_int8_to_the_torch_path(int8_collection, tmp_path,
                                                                                      caplog):
    collection = _copy(int8_collection, tmp_path / "col")
    manifest = json.loads((collection / "manifest.json").read_text())
    probe = manifest["build"][TEXT_EXPORT_KEY]["probe"]
    vectors = -np.frombuffer(base64.b64decode(probe["float32"]), dtype=np.float32)
    probe["float32"] = base64.b64encode(vectors.tobytes()).decode()
    (collection / "manifest.json").write_text(json.dumps(manifest))
    pipeline = _start(collection, tmp_path / "cache", caplog)
    assert "onnxruntime quantisation off" in caplog.text  # never served unchecked: fp32-checked torch int8 instead
    assert (pipeline.quantize, pipeline.quantize_engine) == ("int8", "torch")


def test_a_missing_export_only_costs_an_export_but_a_corrupt_index_still_fails_with_one_message(int8_collection,
                                                                                                tmp_path, exports):
    collection = _copy(int8_collection, tmp_path / "col")
    (collection / TEXT_EXPORT_FILE).unlink()
    assert Collection.open(collection).text_export is None
    with (collection / "index.faiss").open("r+b") as handle:
        handle.seek(-1, 2)
        last = handle.read(1)
        handle.seek(-1, 2)
        handle.write(bytes([last[0] ^ 0xFF]))
    with pytest.raises(CollectionError, match=r"^index.faiss does not match its checksum in manifest.json"):
        Collection.open(collection)


def test_push_and_pull_carry_the_export(int8_collection, fake_hub):
    token = fake_hub.add_user("me")
    commit = hub.push_collection(int8_collection, "me/shapes-int8", token=token)
    assert TEXT_EXPORT_FILE in fake_hub.repo("me/shapes-int8").files(commit)
    pulled = Collection.open(hub.pull_collection("me/shapes-int8", token=token))
    path, key = pulled.text_export
    assert path.read_bytes() == (int8_collection / TEXT_EXPORT_FILE).read_bytes()
    assert key == json.loads((int8_collection / "manifest.json").read_text())["build"][TEXT_EXPORT_KEY]


# -- the scan copy, built in the background ---------------------------------------------------------------


def _tied_index(rows: int = 3000, dim: int = 16) -> faiss.IndexFlatIP:
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((rows, dim)).astype(np.float32)
    vectors[1::3] = vectors[::3][: len(vectors[1::3])]  # every third row repeated: exact ties
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = faiss.IndexFlatIP(dim)
    index.add(vectors)
    return index


def test_searches_while_the_scan_copy_is_built_equal_the_scan_ties_included():
    index = _tied_index()
    release = threading.Event()
    searcher = DeferredSearcher(index, lambda: release.wait() and make_searcher(index))
    queries = np.ascontiguousarray(faiss.rev_swig_ptr(index.get_xb(), 40 * index.d).reshape(40, index.d)[::4] + 0.01)
    before = searcher.search(queries, 7)
    assert searcher.inner is None  # answered by full exact scoring
    release.set()
    assert searcher.wait(timeout=60) and searcher.inner is not None
    after = searcher.search(queries, 7)
    scanned = make_searcher(index).search(queries, 7)
    for got in (before, after):
        np.testing.assert_array_equal(got[1], scanned[1])
        np.testing.assert_array_equal(got[0], scanned[0])


def test_a_failed_scan_copy_build_leaves_exact_search_serving(caplog):
    index = _tied_index(300)

    def broken():
        raise MemoryError("no room for the scan copy (test)")

    with caplog.at_level(logging.WARNING, logger="rag.search.deferred"):
        searcher = DeferredSearcher(index, broken)
        assert searcher.wait(timeout=60)
    assert "no room for the scan copy (test)" in caplog.text
    queries = np.eye(index.d, dtype=np.float32)[:3]
    np.testing.assert_array_equal(searcher.search(queries, 5)[1], make_searcher(index).search(queries, 5)[1])


def test_only_big_flat_collections_build_their_scan_copy_in_the_background():
    big = faiss.IndexFlatIP(8)
    big.add(np.eye(8, dtype=np.float32)[np.arange(20_000) % 8])
    deferred = start_searcher(big)
    del big  # the searcher keeps the index it reads alive (a downcast view does not own it)
    assert isinstance(deferred, DeferredSearcher) and deferred.wait(timeout=60) and deferred.inner is not None
    assert deferred.search(np.eye(8, dtype=np.float32)[:1], 3)[1].shape == (1, 3)
    assert not isinstance(start_searcher(_tied_index(300)), DeferredSearcher)


def test_an_int8_collection_can_be_rebuilt_in_place_with_overwrite(int8_collection, tiny_clip_dir, tmp_path,
                                                                   monkeypatch):
    """The shipped export counts as a collection file: --overwrite replaces such a folder instead of refusing it."""
    out = _copy(int8_collection, tmp_path / "col")
    folder = write_shape_folder(tmp_path / "src", n=6)
    monkeypatch.setenv("RAG_CACHE_DIR", str(tmp_path / "cache"))
    code = index_build.main(["--images", str(folder), "--captions", str(folder / "captions.csv"), "--model",
                             tiny_clip_dir, "--out", str(out), "--no-progress", "--overwrite"])
    assert code == 0 and len(Collection.open(out)) == 6


def test_a_tuned_collection_keeps_the_shipped_export_with_its_checksum(int8_collection, tmp_path):
    from rag.finetune.write import _copy_rows

    source = Collection.open(int8_collection)
    names = _copy_rows(source, tmp_path)
    assert TEXT_EXPORT_FILE in names
    assert sha256_file(tmp_path / TEXT_EXPORT_FILE) == source.manifest.files[TEXT_EXPORT_FILE]
