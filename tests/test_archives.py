"""Archives of images: hostile entries are skipped and reported, never written; bombs are refused up front."""

from __future__ import annotations

import csv
import io
import json
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest
from testkit.tiny_models import make_shape_images

import index_build
from rag.ingest.archives import ArchiveLimits, ArchiveSource, extract_archive, is_archive
from rag.collection.reader import Collection
from rag.errors import InvalidInput


def jpeg(i: int = 0) -> bytes:
    image, _, _ = make_shape_images(i + 1, seed=3)[i]
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    return buffer.getvalue()


def write_zip(path: Path, members: dict[str, bytes], symlinks: dict[str, str] = {}, devices: list[str] = []) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        for name, target in symlinks.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, target)
        for name in devices:
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFCHR | 0o600) << 16
            archive.writestr(info, b"")
    return path


def write_tar(path: Path, members: dict[str, bytes], mode: str = "w:gz", links: dict[str, tuple[bytes, str]] = {},
              devices: list[str] = []) -> Path:
    with tarfile.open(path, mode) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, (kind, target) in links.items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            archive.addfile(info)
        for name in devices:
            info = tarfile.TarInfo(name)
            info.type = tarfile.CHRTYPE
            archive.addfile(info)
    return path


def written_files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() or p.is_symlink()}


HOSTILE = {
    "good/a.jpg": jpeg(0),
    "../escape.jpg": jpeg(1),
    "/etc/absolute.jpg": jpeg(1),
    "good/../../up.jpg": jpeg(1),
    "__MACOSX/good/._a.jpg": b"junk",
    ".hidden.jpg": jpeg(1),
    "good/notes.txt": b"hello",
    "inner.zip": b"PK\x05\x06" + b"\0" * 18,
    "good/b.png": jpeg(2),
}


def test_hostile_zip_entries_are_reported_and_never_written(tmp_path):
    archive = write_zip(tmp_path / "up.zip", HOSTILE, symlinks={"good/link.jpg": "/etc/passwd"},
                        devices=["good/dev.jpg"])
    out = tmp_path / "build" / "x"
    result = extract_archive(archive, out)
    assert written_files(out) == {"good/a.jpg", "good/b.png"}
    reasons = {s["source"]: s["reason"] for s in result.skipped}
    assert "'..'" in reasons["../escape.jpg"] and "'..'" in reasons["/etc/absolute.jpg"]
    assert "'..'" in reasons["good/../../up.jpg"]
    assert "symbolic link" in reasons["good/link.jpg"] and "device" in reasons["good/dev.jpg"]
    assert "nested archive" in reasons["inner.zip"] and "not an image" in reasons["good/notes.txt"]
    assert "hidden" in reasons[".hidden.jpg"] and "hidden" in reasons["__MACOSX/good/._a.jpg"]
    assert not (tmp_path / "build" / "escape.jpg").exists() and not (tmp_path / "up.jpg").exists()
    assert result.files == 2


def test_hostile_tar_links_and_devices_are_skipped(tmp_path):
    archive = write_tar(
        tmp_path / "up.tar.gz", {"cats/a.jpg": jpeg(0), "../../evil.jpg": jpeg(1)},
        links={"cats/sym.jpg": (tarfile.SYMTYPE, "../../../etc/passwd"), "cats/hard.jpg": (tarfile.LNKTYPE, "cats/a.jpg")},
        devices=["cats/null.jpg"],
    )
    out = tmp_path / "out"
    result = extract_archive(archive, out)
    assert written_files(out) == {"cats/a.jpg"}
    reasons = {s["source"]: s["reason"] for s in result.skipped}
    assert "symbolic link" in reasons["cats/sym.jpg"] and "hard link" in reasons["cats/hard.jpg"]
    assert "device" in reasons["cats/null.jpg"] and "'..'" in reasons["../../evil.jpg"]


def test_zip_bomb_is_refused_before_anything_is_written(tmp_path):
    archive = write_zip(tmp_path / "bomb.zip", {"a.bmp": b"\0" * 30_000_000})
    out = tmp_path / "out"
    with pytest.raises(InvalidInput, match="compression bomb"):
        extract_archive(archive, out, ArchiveLimits(max_ratio=100))
    assert not out.exists()


def test_uncompressed_total_over_the_cap_is_refused_up_front(tmp_path):
    archive = write_tar(tmp_path / "big.tar", {f"{i}.jpg": jpeg(i % 3) for i in range(6)}, mode="w")
    out = tmp_path / "out"
    with pytest.raises(InvalidInput, match="would unpack to .* the limit is"):
        extract_archive(archive, out, ArchiveLimits(max_total_bytes=2 * len(jpeg(0))))
    assert not out.exists()


def test_entry_longer_than_declared_is_stopped_and_the_folder_removed(tmp_path):
    archive = write_zip(tmp_path / "liar.zip", {"a.jpg": jpeg(0)})
    data = bytearray(archive.read_bytes())
    info = zipfile.ZipFile(archive).getinfo("a.jpg")
    for offset in (info.header_offset + 22, data.rfind(b"PK\x01\x02") + 24):  # local + central "file size"
        data[offset:offset + 4] = (10).to_bytes(4, "little")
    archive.write_bytes(bytes(data))
    out = tmp_path / "out"
    with pytest.raises(InvalidInput):
        extract_archive(archive, out)
    assert not out.exists()


def test_not_an_archive_is_a_clear_error(tmp_path):
    fake = tmp_path / "photos.zip"
    fake.write_text("not really")
    with pytest.raises(InvalidInput, match="not a readable .zip, .tar or .tar.gz"):
        extract_archive(fake, tmp_path / "out")
    assert is_archive("x.TAR.GZ") and is_archive("x.tgz") and not is_archive("x.jpg")


def test_root_captions_file_and_folder_labels_feed_the_source(tmp_path):
    rows = [{"file": "dogs/a.jpg", "caption": "a red thing"}, {"file": "cats/b.jpg", "caption": "a green thing"}]
    captions = "\n".join(json.dumps(r) for r in rows).encode()
    archive = write_zip(tmp_path / "pets.zip", {"dogs/a.jpg": jpeg(0), "cats/b.jpg": jpeg(1), "cats/c.jpg": jpeg(2),
                                                "captions.jsonl": captions})
    source = ArchiveSource(archive, tmp_path / "work", label_from_folder=True)
    items = {i.source: i for i in source.items()}
    assert set(items) == {"dogs/a.jpg", "cats/b.jpg", "cats/c.jpg"}
    assert items["dogs/a.jpg"].captions == ["a red thing"] and items["dogs/a.jpg"].label == "dogs"
    assert items["cats/c.jpg"].captions == [] and items["cats/c.jpg"].label == "cats"
    assert source.manifest_entry()["name"] == "pets.zip" and source.caption_source == "captions file captions.jsonl"
    source.cleanup()
    assert not (tmp_path / "work").exists() and archive.exists()


def test_limit_extracts_only_the_first_images_and_says_so(tmp_path):
    archive = write_zip(tmp_path / "many.zip", {f"{i:02d}.jpg": jpeg(i % 3) for i in range(7)})
    source = ArchiveSource(archive, tmp_path / "work", limit=3)
    assert [i.source for i in source.items()] == ["00.jpg", "01.jpg", "02.jpg"]
    assert written_files(tmp_path / "work") == {"00.jpg", "01.jpg", "02.jpg"}
    assert source.archive_skipped == [{"source": "4 more image(s)", "reason": "over the limit of 3 images"}]


def test_index_build_accepts_an_archive_through_the_same_code(tiny_clip_dir, tmp_path, capsys):
    with open(tmp_path / "captions.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["file", "caption"], ["x/a.jpg", "first"], ["y/b.jpg", "second"]])
    archive = write_tar(tmp_path / "set.tar.gz", {"x/a.jpg": jpeg(0), "y/b.jpg": jpeg(1), "../bad.jpg": jpeg(2),
                                                   "captions.csv": (tmp_path / "captions.csv").read_bytes()})
    out = tmp_path / "collection"
    code = index_build.main(["--images", str(archive), "--label-from-folder", "--out", str(out),
                             "--model", tiny_clip_dir, "--no-progress"])
    assert code == 0
    collection = Collection.open(out)
    assert sorted(collection.all_labels()) == ["x", "y"]
    assert sorted(c for cs in collection.all_captions() for c in cs) == ["first", "second"]
    assert collection.manifest.source["name"] == "set.tar.gz"
    assert "../bad.jpg" in capsys.readouterr().err


def test_too_many_entries_is_refused_before_extraction(tmp_path):
    archive = write_tar(tmp_path / "many.tar", {f"{i}.jpg": b"x" for i in range(30)}, mode="w")
    with pytest.raises(InvalidInput, match="more than 20 entries"):
        extract_archive(archive, tmp_path / "out", ArchiveLimits(max_entries=20))
    assert not (tmp_path / "out").exists()
