"""Safe extraction of .zip / .tar / .tar.gz archives of images into a build folder.

Every entry is judged before a byte is written: absolute paths, ``..``, symlinks, hard links, device files,
nested archives, ``__MACOSX/``, hidden files and non-images are skipped and reported, never written. The
uncompressed total and the compression ratio are checked against caps before extraction starts, and each
file is copied with a byte budget so an archive that lies about its sizes is stopped as well.
"""

from __future__ import annotations

import logging
import shutil
import stat
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path, PurePosixPath
from typing import IO, Any, Iterator

from rag.errors import InvalidInput
from rag.images.decode import IMAGE_EXTENSIONS
from rag.ingest.sources import FolderSource

log = logging.getLogger(__name__)

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")
NESTED_SUFFIXES = (*ARCHIVE_SUFFIXES, ".gz", ".bz2", ".xz", ".7z", ".rar", ".tar.bz2", ".tar.xz")
CAPTION_FILES = ("captions.csv", "captions.jsonl")
COPY_CHUNK = 1 << 20


@dataclass(frozen=True)
class ArchiveLimits:
    """Caps checked before extraction: uncompressed bytes, compression ratio and number of entries."""

    max_total_bytes: int | None = None
    max_ratio: float = 100.0
    max_entries: int = 100_000


@dataclass
class Entry:
    """One archive member, reduced to what the checks need."""

    name: str
    size: int
    kind: str  # "file", "dir", "symlink", "hardlink", "device", "other"
    handle: Any = None


@dataclass
class Extracted:
    """What extraction produced: the folder, the root captions file (if any) and the skipped entries."""

    folder: Path
    files: int = 0
    captions_file: Path | None = None
    skipped: list[dict[str, str]] = field(default_factory=list)


def is_archive(path: str | Path) -> bool:
    """True when the file name ends like an archive this module reads (.zip, .tar, .tar.gz, .tgz)."""
    return str(path).lower().endswith(ARCHIVE_SUFFIXES)


def _zip_entries(archive: zipfile.ZipFile) -> Iterator[Entry]:
    for info in archive.infolist():
        mode = info.external_attr >> 16
        if info.is_dir():
            kind = "dir"
        elif stat.S_ISLNK(mode):
            kind = "symlink"
        elif stat.S_IFMT(mode) and not stat.S_ISREG(mode):  # no type bits: a plain file
            kind = "device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) else "other"
        else:
            kind = "file"
        yield Entry(info.filename, info.file_size, kind, info)


def _tar_entries(archive: tarfile.TarFile) -> Iterator[Entry]:
    for member in archive:  # streams headers; member data is not read here
        if member.isdir():
            kind = "dir"
        elif member.issym():
            kind = "symlink"
        elif member.islnk():
            kind = "hardlink"
        elif member.ischr() or member.isblk() or member.isfifo():
            kind = "device"
        elif member.isfile():
            kind = "file"
        else:
            kind = "other"
        yield Entry(member.name, member.size, kind, member)


def _safe_relative(name: str) -> PurePosixPath | None:
    """The entry's path relative to the build folder, or None if it is absolute or climbs out with ``..``."""
    name = name.replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return None
    path = PurePosixPath(name)
    if any(part == ".." for part in path.parts):
        return None
    parts = [p for p in path.parts if p not in ("", ".")]
    return PurePosixPath(*parts) if parts else None


def skip_reason(entry: Entry) -> str | None:
    """Why an entry is not extracted (None: it is an image or the root captions file to extract)."""
    if entry.kind == "dir":
        return ""
    if entry.kind == "symlink":
        return "symbolic link (never extracted)"
    if entry.kind == "hardlink":
        return "hard link (never extracted)"
    if entry.kind == "device":
        return "device or pipe file (never extracted)"
    if entry.kind != "file":
        return "not a regular file"
    relative = _safe_relative(entry.name)
    if relative is None:
        return "absolute path or '..' in the path (never extracted)"
    if relative.parts[0] == "__MACOSX" or any(p.startswith(".") for p in relative.parts):
        return "hidden or macOS metadata file"
    lower = relative.name.lower()
    if lower.endswith(NESTED_SUFFIXES):
        return "nested archive (not opened)"
    if str(relative).lower() in CAPTION_FILES:
        return None
    if relative.suffix.lower() not in IMAGE_EXTENSIONS:
        return "not an image file"
    return None


def _check_caps(wanted: list[Entry], entries: list[Entry], archive_bytes: int, limits: ArchiveLimits,
                name: str) -> None:
    """Refuse the archive before anything is written when it would unpack past the caps."""
    total = sum(max(0, e.size) for e in wanted)
    if limits.max_total_bytes is not None and total > limits.max_total_bytes:
        raise InvalidInput(
            f"{name} would unpack to {total / 1e6:,.1f} MB of images; the limit is "
            f"{limits.max_total_bytes / 1e6:,.0f} MB. Send fewer or smaller images."
        )
    all_bytes = sum(max(0, e.size) for e in entries if e.kind == "file")
    if archive_bytes > 0 and all_bytes / archive_bytes > limits.max_ratio:
        raise InvalidInput(
            f"{name} expands {all_bytes / archive_bytes:,.0f} times its size (the limit is "
            f"{limits.max_ratio:,.0f}×); it looks like a compression bomb and was not opened."
        )


def _copy(stream: IO[bytes], target: Path, budget: int, name: str) -> int:
    """Copy at most ``budget`` bytes; a file longer than its declared size stops the extraction."""
    written = 0
    with open(target, "xb") as out:
        while chunk := stream.read(COPY_CHUNK):
            written += len(chunk)
            if written > budget:
                raise InvalidInput(f"{name} holds more data than its entries declare; it was refused.")
            out.write(chunk)
    return written


def _open(path: Path, max_entries: int) -> tuple[Any, list[Entry], Any]:
    """The open archive, its entries (listing stops one past ``max_entries``) and a function opening one entry."""
    try:
        if zipfile.is_zipfile(path):
            archive: Any = zipfile.ZipFile(path)
            entries = list(islice(_zip_entries(archive), max_entries + 1))
            return archive, entries, lambda e: archive.open(e.handle)
        archive = tarfile.open(path, mode="r:*")
        entries = list(islice(_tar_entries(archive), max_entries + 1))
        return archive, entries, lambda e: archive.extractfile(e.handle)
    except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError) as exc:
        raise InvalidInput(f"{path.name} is not a readable .zip, .tar or .tar.gz archive ({exc}).") from None


def _first_images(entries: list[Entry], max_images: int | None) -> tuple[set[int], int]:
    """Ids of the entries to extract (the first ``max_images`` images by path, plus the captions file)."""
    wanted = [e for e in entries if skip_reason(e) is None]
    captions = [e for e in wanted if str(_safe_relative(e.name)).lower() in CAPTION_FILES]
    images = sorted((e for e in wanted if e not in captions), key=lambda e: str(_safe_relative(e.name)))
    kept = images[:max_images] if max_images else images
    return {id(e) for e in kept + captions}, len(images) - len(kept)


def extract_archive(
    path: str | Path, dest: str | Path, limits: ArchiveLimits = ArchiveLimits(), max_images: int | None = None
) -> Extracted:
    """Check the whole archive, then extract its images (the first ``max_images`` by path) and root
    captions file into ``dest``; everything else is listed in ``skipped``."""
    path, dest = Path(path), Path(dest)
    archive, entries, open_entry = _open(path, limits.max_entries)
    with archive:
        if len(entries) > limits.max_entries:
            raise InvalidInput(f"{path.name} has more than {limits.max_entries:,} entries; it was not opened.")
        keep, over = _first_images(entries, max_images)
        _check_caps([e for e in entries if id(e) in keep], entries, path.stat().st_size, limits, path.name)
        result = Extracted(folder=dest)
        if over:
            result.skipped.append({"source": f"{over} more image(s)", "reason": f"over the limit of {max_images} images"})
        dest.mkdir(parents=True, exist_ok=True)
        budget = limits.max_total_bytes if limits.max_total_bytes is not None else float("inf")
        seen: set[str] = set()
        try:
            for entry in entries:
                reason = skip_reason(entry)
                if reason == "" or (reason is None and id(entry) not in keep):
                    continue  # a folder, or an image over max_images (counted above)
                relative = _safe_relative(entry.name)
                if reason is None and str(relative).lower() in seen:
                    reason = "duplicate entry name"
                if reason:
                    result.skipped.append({"source": entry.name, "reason": reason})
                    continue
                seen.add(str(relative).lower())
                target = dest / relative
                if not target.resolve().is_relative_to(dest.resolve()):  # belt and braces
                    result.skipped.append({"source": entry.name, "reason": "outside the build folder"})
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with open_entry(entry) as stream:
                    budget -= _copy(stream, target, min(entry.size, budget), path.name)
                if str(relative).lower() in CAPTION_FILES:
                    result.captions_file = target
                else:
                    result.files += 1
        except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError) as exc:
            shutil.rmtree(dest, ignore_errors=True)
            raise InvalidInput(f"{path.name} could not be read to the end ({type(exc).__name__}).") from None
        except InvalidInput:
            shutil.rmtree(dest, ignore_errors=True)
            raise
    log.info("extracted %d image(s) from %s, %d entr(ies) skipped", result.files, path.name, len(result.skipped))
    return result


class ArchiveSource(FolderSource):
    """The images of an archive, extracted safely into ``work_dir`` (a temporary folder when None)."""

    def __init__(
        self,
        archive: str | Path,
        work_dir: str | Path | None = None,
        label_from_folder: bool = False,
        limit: int | None = None,
        limits: ArchiveLimits = ArchiveLimits(),
        captions_file: str | Path | None = None,
    ) -> None:
        self.archive = Path(archive)
        if not self.archive.is_file():
            raise InvalidInput(f"Archive {self.archive.name} does not exist.")
        self._tmp = None if work_dir else tempfile.TemporaryDirectory(prefix="rag-archive-")
        folder = Path(work_dir) if work_dir else Path(self._tmp.name)
        self.extracted = extract_archive(self.archive, folder, limits, max_images=limit)
        super().__init__(folder, captions_file or self.extracted.captions_file, label_from_folder, limit)
        self.archive_skipped = self.extracted.skipped

    def manifest_entry(self) -> dict[str, Any]:
        """The archive's name (not the extraction folder), so a resumed build sees the same source."""
        return {**super().manifest_entry(), "kind": "archive", "name": self.archive.name,
                "captions_file": self.captions_file.name if self.captions_file else None,
                "archive_skipped": len(self.archive_skipped)}

    def cleanup(self) -> None:
        """Delete the extracted files (only the folder this source created)."""
        if self._tmp is not None:
            self._tmp.cleanup()
        else:
            shutil.rmtree(self.folder, ignore_errors=True)
