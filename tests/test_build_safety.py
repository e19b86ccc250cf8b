"""index_build never destroys what it did not make, replaces a collection without a gap, survives corrupt state."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from testkit.shapes import write_shape_folder

import index_build
from rag.ingest import paths as build_paths
from rag.ingest.builder import BuildOptions, build_collection
from rag.ingest.partial import Chunks, check_complete
from rag.collection.reader import Collection
from rag.models.encoder import Encoder
from rag.errors import CollectionError
from rag.ingest.sources import FolderSource


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_shape_folder(tmp_path_factory.mktemp("src") / "shapes", n=16)


def _cli(images: Path, out: Path, clip: str, *extra: str) -> int:
    return index_build.main(["--images", str(images), "--captions", str(images / "captions.csv"), "--model", clip,
                             "--out", str(out), "--no-progress", *extra])


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _refused(capsys, code: int) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("refused: ") and err[0].endswith("."), err
    return err[0]


def test_out_holding_user_files_is_refused_and_untouched(images, tiny_clip_dir, tmp_path, capsys):
    out = tmp_path / "mydir"
    out.mkdir()
    (out / "thesis.docx").write_bytes(b"years of work")
    line = _refused(capsys, _cli(images, out, tiny_clip_dir))
    assert "not a collection" in line
    assert _tree(out) == {"thesis.docx": b"years of work"}
    assert not (tmp_path / "mydir.partial").exists()


@pytest.mark.parametrize("where", ["equal", "inside", "above"])
def test_out_equal_inside_or_above_the_images_is_refused(images, tiny_clip_dir, tmp_path, capsys, where):
    before = _tree(images)
    out = {"equal": images, "inside": images / "collection", "above": images.parent}[where]
    line = _refused(capsys, _cli(images, out, tiny_clip_dir, "--overwrite"))
    assert "source folder" in line
    assert _tree(images) == before and not (images / "collection").exists()


@pytest.mark.parametrize("side", [".partial", ".old"])
def test_side_folder_not_made_by_the_builder_is_refused(images, tiny_clip_dir, tmp_path, capsys, side):
    foreign = tmp_path / f"col{side}"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    line = _refused(capsys, _cli(images, tmp_path / "col", tiny_clip_dir))
    assert f"col{side}" in line
    assert _tree(foreign) == {"keep.txt": b"mine"} and not (tmp_path / "col").exists()


def test_replacing_a_collection_needs_overwrite_and_keeps_out_present(images, tiny_clip_dir, tmp_path, capsys,
                                                                      monkeypatch):
    out = tmp_path / "col"
    assert _cli(images, out, tiny_clip_dir, "--limit", "8") == 0
    first = _tree(out)
    capsys.readouterr()
    _refused(capsys, _cli(images, out, tiny_clip_dir))
    assert _tree(out) == first
    seen = []
    real_replace, real_exchange = os.replace, build_paths._exchange

    def replace(a, b):
        real_replace(a, b)
        seen.append(out.exists())

    def exchange(a, b):
        done = real_exchange(a, b)
        seen.append(out.exists())
        return done

    monkeypatch.setattr(build_paths.os, "replace", replace)
    monkeypatch.setattr(build_paths, "_exchange", exchange)
    assert _cli(images, out, tiny_clip_dir, "--overwrite") == 0
    assert seen and all(seen), "--out was missing at some point of the swap"
    assert Collection.open(out).manifest.rows == 16
    assert sorted(p.name for p in tmp_path.iterdir()) == ["col"]


def test_a_crash_between_the_fallback_renames_is_recovered(images, tiny_clip_dir, tmp_path, monkeypatch):
    out = tmp_path / "col"
    assert _cli(images, out, tiny_clip_dir, "--limit", "8") == 0
    monkeypatch.setattr(build_paths, "_exchange", lambda a, b: False)  # an OS without atomic exchange
    real_replace = os.replace

    def crash_on_second(a, b):
        if Path(a).name == "col.partial":
            raise KeyboardInterrupt  # killed after `col` -> `col.old`, before `col.partial` -> `col`
        real_replace(a, b)

    monkeypatch.setattr(build_paths.os, "replace", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        build_collection(FolderSource(images, images / "captions.csv"), out, Encoder(tiny_clip_dir),
                         BuildOptions(progress=False), overwrite=True)
    assert not out.exists() and (tmp_path / "col.old").is_dir() and (tmp_path / "col.partial").is_dir()
    monkeypatch.setattr(build_paths.os, "replace", real_replace)
    build_paths.recover(out)  # what the next build does first
    assert Collection.open(out).manifest.rows == 16  # the finished new collection, not the old one


class _Interrupting(FolderSource):
    def __init__(self, *args, stop_after: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.stop_after = stop_after

    def items(self, start=0):
        for count, item in enumerate(super().items(start)):
            if start + count >= self.stop_after:
                raise KeyboardInterrupt
            yield item


def _interrupted(images: Path, out: Path, clip: str) -> Path:
    options = BuildOptions(batch_size=4, chunk_rows=4, workers=1, progress=False)
    with pytest.raises(KeyboardInterrupt):
        build_collection(_Interrupting(images, images / "captions.csv", stop_after=14), out, Encoder(clip), options)
    return out.with_name(out.name + ".partial")


@pytest.mark.parametrize("damage", ["build.json", "chunk", "vectors", "shard"])
def test_corrupt_partial_build_is_set_aside_and_the_build_starts_over(images, tiny_clip_dir, tmp_path, caplog, damage):
    out = tmp_path / "col"
    partial = _interrupted(images, out, tiny_clip_dir)
    target = {"build.json": partial / "build.json", "chunk": partial / "chunks" / "00000.json",
              "vectors": partial / "chunks" / "00000.npy", "shard": partial / "data" / "metadata-00000.parquet"}[damage]
    target.write_bytes(target.read_bytes()[:7])  # truncated, as after a crash mid-write
    with caplog.at_level(logging.WARNING):
        code = _cli(images, out, tiny_clip_dir, "--resume", "--batch-size", "4", "--chunk-rows", "4")
    assert code == 0
    assert Collection.open(out).manifest.rows == 16
    assert "set aside" in caplog.text
    assert len(list(tmp_path.glob("col.corrupt-*"))) == 1


def test_stray_shard_is_not_included(images, tiny_clip_dir, tmp_path):
    out = tmp_path / "col"
    partial = _interrupted(images, out, tiny_clip_dir)
    shard = next((partial / "data").glob("*.parquet"))
    (partial / "data" / "metadata-00042.parquet").write_bytes(shard.read_bytes())
    build_collection(FolderSource(images, images / "captions.csv"), out, Encoder(tiny_clip_dir),
                     BuildOptions(batch_size=4, chunk_rows=4, workers=1, progress=False), resume=True)
    collection = Collection.open(out)
    assert len(collection) == 16 and not (out / "data" / "metadata-00042.parquet").exists()
    assert [r["id"] for r in collection.rows(range(16))] == list(range(16))


def test_counts_that_disagree_stop_the_final_rename(images, tiny_clip_dir, tmp_path):
    partial = _interrupted(images, tmp_path / "col", tiny_clip_dir)
    chunks = Chunks(partial)
    vectors = chunks.vectors(8)
    with pytest.raises(CollectionError, match="inconsistent"):
        check_complete(chunks, vectors[:-1])
    (partial / "data" / "metadata-00077.parquet").write_bytes(b"stray")
    with pytest.raises(CollectionError, match="metadata-00077"):
        check_complete(chunks, vectors)


def test_state_is_written_atomically(tmp_path, monkeypatch):
    path = tmp_path / "build.json"
    build_paths.write_json_atomic(path, {"old": 1})
    monkeypatch.setattr(build_paths.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        build_paths.write_json_atomic(path, {"new": 2})
    assert json.loads(path.read_text()) == {"old": 1}


def test_published_source_names_hold_no_builder_paths(images, tiny_clip_dir, tmp_path):
    out = tmp_path / "col"
    assert _cli(images, out, tiny_clip_dir, "--limit", "4") == 0
    text = (out / "manifest.json").read_text() + (out / "README.md").read_text()
    source = json.loads((out / "manifest.json").read_text())["source"]
    assert source["name"] == "shapes" and source["captions_file"] == "captions.csv"
    assert str(images.parent) not in text and str(tmp_path) not in text


def test_index_factory_defaults_to_auto(capsys):
    args = index_build.parse_args(["--images", "x", "--out", "y"])
    assert args.index_factory == "auto" and BuildOptions().index_factory == "auto"
    with pytest.raises(SystemExit):
        index_build.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "IVF-SQ8 beyond (default: auto)" in text and "IVF-PQ" not in text
