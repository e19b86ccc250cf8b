"""Archives built to burn CPU or memory are refused before the damage, and Cancel stops a long extraction.

Decompressed bytes are counted by wrapping the real decompressors (zlib, bz2), so "refused before it was
inflated" is measured, not assumed; each spy is shown to count a normal archive so it cannot pass vacuously.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import struct
import tarfile
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import pytest
from test_archives import jpeg, write_tar, write_zip

from rag.errors import InvalidInput
from rag.ingest.archives import ArchiveLimits, extract_archive
from rag.ingest.builder import BuildCancelled

MB = 1 << 20


class _Counting:
    """A decompressor that adds the size of everything it inflates to ``counter``."""

    def __init__(self, inner, counter: list[int]) -> None:
        self._inner, self._counter = inner, counter

    def decompress(self, *args, **kwargs):
        out = self._inner.decompress(*args, **kwargs)
        self._counter[0] += len(out)
        return out

    def __getattr__(self, name):
        return getattr(self._inner, name)


@pytest.fixture
def inflated(monkeypatch) -> list[int]:
    """Bytes inflated by zlib (gzip, zip deflate) and bz2 decompressors during the test: ``inflated[0]``."""
    counter = [0]
    for module, name in ((zlib, "decompressobj"), (zlib, "_ZlibDecompressor"), (bz2, "BZ2Decompressor")):
        real = getattr(module, name, None)
        if real is not None:
            monkeypatch.setattr(module, name, lambda *a, _real=real, **k: _Counting(_real(*a, **k), counter))
    return counter


def tar_header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def zeros_stream(compress, header: bytes, megabytes: int) -> bytes:
    """A tar of one member of ``megabytes`` MiB of zeros, compressed as concatenated streams (cheap to make)."""
    block = compress(b"\0" * MB)
    return compress(header) + block * megabytes


def test_a_bzip2_stream_named_tar_is_refused_without_inflating_a_byte(tmp_path, inflated):
    bomb = tmp_path / "photos.tar"  # the case: a few KB of bzip2 that held a core for 41 s
    bomb.write_bytes(zeros_stream(bz2.compress, tar_header("a.bmp", 64 * MB), 64))
    assert bomb.stat().st_size < 8_000
    with pytest.raises(InvalidInput, match="bzip2-compressed but named .tar"):
        extract_archive(bomb, tmp_path / "out", ArchiveLimits(max_ratio=100))
    assert inflated[0] == 0 and not (tmp_path / "out").exists()
    with bz2.open(io.BytesIO(bz2.compress(b"spy")), "rb") as check:  # the spy does count bzip2
        check.read()
    assert inflated[0] == 3


@pytest.mark.parametrize("compress", [gzip.compress, lzma.compress], ids=["gzip", "xz"])
def test_a_tar_that_is_really_compressed_is_refused_by_its_name(tmp_path, compress):
    fake = tmp_path / "set.tar"
    fake.write_bytes(compress(write_tar(tmp_path / "x.tar", {"a.jpg": jpeg(0)}, mode="w").read_bytes()))
    with pytest.raises(InvalidInput, match="-compressed but named .tar"):
        extract_archive(fake, tmp_path / "out")


def test_a_gzip_bomb_in_a_tar_gz_is_refused_at_its_header_before_it_is_inflated(tmp_path, inflated):
    bomb = tmp_path / "bomb.tar.gz"
    bomb.write_bytes(zeros_stream(gzip.compress, tar_header("a.bmp", 200 * MB), 200))  # ~200 KB -> 200 MB
    with pytest.raises(InvalidInput, match="compression bomb"):
        extract_archive(bomb, tmp_path / "out", ArchiveLimits(max_ratio=100))
    assert inflated[0] < 2 * MB, f"{inflated[0] / MB:.0f} MiB inflated before the refusal"
    assert not (tmp_path / "out").exists()
    before = inflated[0]
    extract_archive(write_tar(tmp_path / "ok.tar.gz", {"a.jpg": jpeg(0)}), tmp_path / "ok")
    assert inflated[0] > before + len(jpeg(0))  # the spy counts a normal archive: it is not blind


def test_skipped_members_count_against_the_unpacked_budget_while_listing(tmp_path, inflated):
    # Under the ratio cap, images under the size cap, but a 40 MB text file that must be inflated to list it.
    image = jpeg(0)
    padded = image + b"\0" * (-len(image) % 512)
    archive = tmp_path / "mixed.tar.gz"
    archive.write_bytes(zeros_stream(gzip.compress, tar_header("notes.txt", 40 * MB), 40)
                        + gzip.compress(tar_header("a.jpg", len(image)) + padded + b"\0" * 1024))
    assert [m.name for m in tarfile.open(archive)] == ["notes.txt", "a.jpg"]  # a real, readable tar.gz
    inflated[0] = 0
    limits = ArchiveLimits(max_total_bytes=5 * MB, max_ratio=1e9)
    with pytest.raises(InvalidInput, match=r"would unpack to more than .*every file in it counts"):
        extract_archive(archive, tmp_path / "out", limits)
    assert inflated[0] < 2 * MB and not (tmp_path / "out").exists()


def test_zip_entries_inflated_without_an_output_bound_are_skipped(tmp_path):
    archive = tmp_path / "methods.zip"
    with zipfile.ZipFile(archive, "w") as out:
        out.writestr("a.jpg", jpeg(0), compress_type=zipfile.ZIP_BZIP2)
        out.writestr("b.jpg", jpeg(1), compress_type=zipfile.ZIP_LZMA)
        out.writestr("c.jpg", jpeg(2), compress_type=zipfile.ZIP_DEFLATED)
    result = extract_archive(archive, tmp_path / "out")
    assert result.files == 1 and (tmp_path / "out" / "c.jpg").is_file()
    reasons = {s["source"]: s["reason"] for s in result.skipped}
    assert "other than deflate" in reasons["a.jpg"] and "other than deflate" in reasons["b.jpg"]


def _cancel_when_started(target: Path, seen: list[int]):
    """A Cancel button pressed as soon as ``target`` has started to be written (its size then -> ``seen``)."""

    def should_stop() -> bool:
        if target.exists():
            seen.append(target.stat().st_size)
            return True
        return False

    return should_stop


@pytest.mark.parametrize("suffix", ["zip", "tar.gz", "tar"])
def test_cancel_stops_a_long_extraction_in_the_middle_of_an_entry(tmp_path, suffix):
    big = {"a.jpg": jpeg(0), "big.bmp": b"\0" * (24 * MB), "z.jpg": jpeg(1)}
    archive = (write_zip(tmp_path / "big.zip", big) if suffix == "zip"
               else write_tar(tmp_path / f"big.{suffix}", big, mode="w:gz" if suffix == "tar.gz" else "w"))
    out, seen = tmp_path / "out", []
    with pytest.raises(BuildCancelled, match="cancelled"):
        extract_archive(archive, out, ArchiveLimits(max_ratio=1e9), should_stop=_cancel_when_started(out / "big.bmp", seen))
    assert seen and seen[0] <= 2 * MB  # asked within the first MiBs of the 24 MiB entry, not after it
    assert not out.exists()  # what was extracted is removed


def test_cancel_stops_the_listing_of_a_long_tar_gz(tmp_path):
    archive = write_tar(tmp_path / "long.tar.gz", {"video.mp4": b"\0" * (24 * MB), "a.jpg": jpeg(0)})
    calls: list[int] = []
    with pytest.raises(BuildCancelled):
        extract_archive(archive, tmp_path / "out", ArchiveLimits(max_ratio=1e9),
                        should_stop=lambda: calls.append(1) or len(calls) >= 3)
    assert len(calls) == 3 and not (tmp_path / "out").exists()  # stopped inside the 24 MB member


def many_entry_zip(path: Path, entries: int, claimed: int | None = None) -> Path:
    """A zip whose central directory holds ``entries`` empty files (its end record says ``claimed``), written
    directly so that 70 000 entries take a fraction of a second; zip64 records when a count passes 65 535."""
    local = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 0, 0, 0, 0, 0, 0, 5, 0) + b"a.jpg"
    central = b"".join(struct.pack("<4s4B4HL2L5H2L", b"PK\x01\x02", 20, 3, 20, 0, 0, 0, 0, 0, 0, 0, 0, 11, 0, 0, 0,
                                   0, 0, 0) + b"%07d.jpg" % i for i in range(entries))
    claimed = entries if claimed is None else claimed
    offset, size = len(local), len(central)
    tail = b""
    if claimed > 0xFFFF:
        zip64_at = offset + size
        tail = (struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, claimed, claimed, size, offset)
                + struct.pack("<4sLQL", b"PK\x06\x07", 0, zip64_at, 1))
        claimed, size_field, offset_field = 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF
    else:
        size_field, offset_field = size, offset
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, claimed, claimed, size_field, offset_field, 0)
    path.write_bytes(local + central + tail + end)
    return path


@pytest.mark.parametrize(("entries", "claimed"), [(70_000, None), (70_000, 1), (15_000, 1)],
                         ids=["zip64-honest-count", "count-says-1", "small-directory-count-says-1"])
def test_a_zip_with_too_many_entries_is_refused_before_its_directory_is_parsed(tmp_path, entries, claimed):
    archive = many_entry_zip(tmp_path / "many.zip", entries, claimed)
    assert len(zipfile.ZipFile(archive).infolist()) == entries  # a real zip: zipfile would build an object each
    tracemalloc.start()
    try:
        with pytest.raises(InvalidInput, match="more than 1,000 entries"):
            extract_archive(archive, tmp_path / "out", ArchiveLimits(max_entries=1000))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * MB, f"peak {peak / MB:.1f} MiB while refusing"


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_an_entry_name_over_255_bytes_is_skipped_and_the_rest_extracted(tmp_path, kind):
    long_name = "é" * 130 + ".jpg"  # 264 bytes in UTF-8
    members = {"a.jpg": jpeg(0), f"cats/{long_name}": jpeg(1), "b.jpg": jpeg(2)}
    archive = write_zip(tmp_path / "x.zip", members) if kind == "zip" else write_tar(tmp_path / "x.tar", members, mode="w")
    result = extract_archive(archive, tmp_path / "out")
    assert result.files == 2 and (tmp_path / "out" / "b.jpg").is_file()
    assert result.skipped == [{"source": f"cats/{long_name}", "reason": "a file or folder name longer than 255 bytes"}]
