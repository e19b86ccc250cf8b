"""Reading .zip, .tar and .tar.gz archives by their name only, within the caps of an ArchiveLimits.

The file name decides the format (no sniffing via tarfile's ``r:*``): a ``.tar`` that is really bzip2, xz or
gzip is refused, so a few KB of bzip2 cannot hold a core for minutes. A zip is judged by its end-of-central-
directory record and a walk over the central directory's fixed-size headers before zipfile builds an object
per entry. A tar is read as a stream twice (list, then extract) through a Guard that budgets the
decompressed bytes, checks each member's declared size as its header arrives and polls Cancel.
"""

from __future__ import annotations

import gzip
import os
import stat
import struct
import tarfile
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator

from rag.errors import InvalidInput
from rag.ingest.archive_guard import ArchiveLimits, Guard, GuardedStream, refuse_declared

READ_ERRORS = (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError, zlib.error)
CD_HEADER = 46  # fixed part of a zip central-directory entry
CD_BYTES_PER_ENTRY = 1024  # a central directory larger than this per allowed entry is refused unread
STREAM_SLACK = 1 << 20  # end-of-archive blocks and read-ahead, on top of the members' declared sizes
TAR_ENTRY_ALLOWANCE = 4096  # headers, long-name / pax records and padding of one tar member
ZIP_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED}  # zipfile inflates bzip2/LZMA without an output bound
COMPRESSED = ((b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"), (b"\x28\xb5\x2f\xfd", "zstd"))

Writer = Callable[["Entry", IO[bytes]], None]


@dataclass
class Entry:
    """One archive member, reduced to what the checks need (``problem``: why it cannot be read, if so)."""

    name: str
    size: int
    kind: str  # "file", "dir", "symlink", "hardlink", "device", "other"
    index: int = 0
    handle: Any = None
    problem: str | None = None


def archive_format(name: str) -> str | None:
    """"zip", "tar" or "tar.gz" from the file name alone; None for any other name."""
    lower = name.lower()
    if lower.endswith(".zip"):
        return "zip"
    if lower.endswith((".tar.gz", ".tgz")):
        return "tar.gz"
    return "tar" if lower.endswith(".tar") else None


def _reason(exc: BaseException) -> str:
    """A short cause for a read error that never echoes a server path."""
    if isinstance(exc, OSError) and getattr(exc, "filename", None):
        return exc.strerror or type(exc).__name__
    return (str(exc) or type(exc).__name__)[:120]


def unreadable(name: str, exc: BaseException) -> InvalidInput:
    """The one message for an archive that cannot be read as the format its name says."""
    return InvalidInput(f"{name} is not a readable .zip, .tar or .tar.gz archive ({_reason(exc)}).")


def _too_many(name: str, limits: ArchiveLimits) -> InvalidInput:
    return InvalidInput(f"{name} has more than {limits.max_entries:,} entries; it was not opened.")


def _stream_cap(archive_bytes: int, limits: ArchiveLimits) -> float:
    return min(limits.max_ratio * max(archive_bytes, 1), limits.unpacked_cap())


def check_zip_directory(path: Path, limits: ArchiveLimits, guard: Guard) -> None:
    """Refuse a zip by its end-of-central-directory record (entry count, directory size) and by counting the
    central directory's headers, before zipfile reads the directory whole and builds an object per entry."""
    with open(path, "rb") as handle:
        endrec = zipfile._EndRecData(handle)  # the record ZipFile itself will use (zip64 included)
        if not endrec:
            raise zipfile.BadZipFile("File is not a zip file")
        count, size = endrec[zipfile._ECD_ENTRIES_TOTAL], endrec[zipfile._ECD_SIZE]
        if count > limits.max_entries or size > limits.max_entries * CD_BYTES_PER_ENTRY:
            raise _too_many(path.name, limits)
        start = endrec[zipfile._ECD_LOCATION] - size  # where ZipFile will start reading it
        if endrec[zipfile._ECD_SIGNATURE] == zipfile.stringEndArchive64:
            start -= zipfile.sizeEndCentDir64 + zipfile.sizeEndCentDir64Locator
        handle.seek(max(start, 0))
        walked = seen = 0
        while walked < size:  # the count in the record may lie: count the headers themselves
            header = handle.read(CD_HEADER)
            if len(header) < CD_HEADER or header[:4] != zipfile.stringCentralDir:
                return  # damaged: ZipFile reports it
            seen += 1
            if seen > limits.max_entries:
                raise _too_many(path.name, limits)
            variable = sum(struct.unpack_from("<3H", header, 28))  # name, extra field, comment
            handle.seek(variable, os.SEEK_CUR)
            walked += CD_HEADER + variable
            if seen % 4096 == 0:
                guard.check()


def _zip_entry(info: zipfile.ZipInfo, index: int) -> Entry:
    mode = info.external_attr >> 16
    if info.is_dir():
        kind = "dir"
    elif stat.S_ISLNK(mode):
        kind = "symlink"
    elif stat.S_IFMT(mode) and not stat.S_ISREG(mode):  # no type bits: a plain file
        kind = "device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) else "other"
    else:
        kind = "file"
    problem = None
    if info.flag_bits & 0x1:
        problem = "encrypted (password-protected) entry"
    elif info.compress_type not in ZIP_METHODS:
        problem = "compressed with a method other than deflate (re-zip it with the usual settings)"
    return Entry(info.filename, info.file_size, kind, index, info, problem)


class ZipReader:
    """A zip whose directory passed the caps; ``extract`` inflates only the wanted entries, guarded."""

    def __init__(self, path: Path, limits: ArchiveLimits, should_stop: Callable[[], bool] | None) -> None:
        self.name = path.name
        self.guard = Guard(path.name, _stream_cap(path.stat().st_size, limits) + STREAM_SLACK, should_stop)
        check_zip_directory(path, limits, self.guard)
        self.archive = zipfile.ZipFile(path)
        self.entries = [_zip_entry(info, i) for i, info in enumerate(self.archive.infolist())]
        declared = sum(max(0, e.size) for e in self.entries if e.kind == "file")
        try:
            refuse_declared(path.name, declared, path.stat().st_size, limits)
        except InvalidInput:
            self.archive.close()
            raise

    def extract(self, indices: Iterable[int], write: Writer) -> None:
        """Call ``write`` with each wanted entry and its inflating stream, in archive order."""
        for index in sorted(indices):
            self.guard.check()
            entry = self.entries[index]
            with self.archive.open(entry.handle) as stream:
                write(entry, GuardedStream(stream, self.guard))  # type: ignore[arg-type]

    def close(self) -> None:
        """Close the zip file."""
        self.archive.close()


def _tar_kind(member: tarfile.TarInfo) -> str:
    if member.isdir():
        return "dir"
    if member.issym():
        return "symlink"
    if member.islnk():
        return "hardlink"
    if member.ischr() or member.isblk() or member.isfifo():
        return "device"
    return "file" if member.isfile() and not member.issparse() else "other"


def _raw_tar(path: Path, fmt: str) -> IO[bytes]:
    """The tar bytes: gunzipped for .tar.gz; a .tar that starts like a compressed stream is refused."""
    if fmt == "tar.gz":
        return gzip.GzipFile(path, "rb")  # type: ignore[return-value]
    handle = open(path, "rb")
    head = handle.read(8)
    handle.seek(0)
    for magic, kind in COMPRESSED:
        if head.startswith(magic):
            handle.close()
            raise InvalidInput(f"{path.name} is {kind}-compressed but named .tar; only .zip, plain .tar and "
                               ".tar.gz (gzip) archives are read. It was not opened.")
    return handle  # type: ignore[return-value]


class TarReader:
    """A tar or tar.gz read as a guarded stream: listed once (caps checked per header), then read again
    up to the last wanted member to extract it."""

    def __init__(self, path: Path, fmt: str, limits: ArchiveLimits, should_stop: Callable[[], bool] | None) -> None:
        self.path, self.fmt, self.should_stop = path, fmt, should_stop
        size = path.stat().st_size
        guard = Guard(path.name, _stream_cap(size, limits) + STREAM_SLACK, should_stop)
        self.entries: list[Entry] = []
        declared = 0
        with self._opened(guard) as tar:
            for index, member in enumerate(tar):  # tarfile keeps each member: stop at the cap
                guard.check()
                if index >= limits.max_entries:
                    raise _too_many(path.name, limits)
                guard.limit += TAR_ENTRY_ALLOWANCE
                entry = Entry(member.name, member.size, _tar_kind(member), index)
                if entry.kind == "file":
                    declared += max(0, member.size)
                    refuse_declared(path.name, declared, size, limits)  # before its data is inflated
                self.entries.append(entry)
        self.stream_bytes = guard.used

    @contextmanager
    def _opened(self, guard: Guard) -> Iterator[tarfile.TarFile]:
        raw = _raw_tar(self.path, self.fmt)
        try:
            with tarfile.open(fileobj=GuardedStream(raw, guard), mode="r|") as tar:  # type: ignore[call-overload]
                yield tar
        finally:
            raw.close()

    def extract(self, indices: Iterable[int], write: Writer) -> None:
        """Read the stream again, calling ``write`` for each wanted member; stop after the last one."""
        wanted = set(indices)
        if not wanted:
            return
        last = max(wanted)
        guard = Guard(self.path.name, self.stream_bytes + STREAM_SLACK, self.should_stop)
        with self._opened(guard) as tar:
            for index, member in enumerate(tar):
                guard.check()
                if index in wanted:
                    entry = self.entries[index]
                    if member.name != entry.name:
                        raise InvalidInput(f"{self.path.name} changed while it was read; it was refused.")
                    with tar.extractfile(member) as stream:  # type: ignore[union-attr]
                        write(entry, stream)
                if index >= last:
                    break

    def close(self) -> None:
        """Nothing stays open between the passes."""


def open_archive(path: Path, limits: ArchiveLimits, should_stop: Callable[[], bool] | None = None) -> ZipReader | TarReader:
    """The archive listed within the caps, read as the format its name says; InvalidInput otherwise."""
    fmt = archive_format(path.name)
    if fmt is None:
        raise InvalidInput(f"{path.name} is not a .zip, .tar or .tar.gz archive (by its name).")
    try:
        return ZipReader(path, limits, should_stop) if fmt == "zip" else TarReader(path, fmt, limits, should_stop)
    except READ_ERRORS as exc:
        raise unreadable(path.name, exc) from None
