"""Safe extraction of .zip / .tar / .tar.gz archives of images into a build folder.

Every entry is judged before a byte is written: absolute paths, ``..``, symlinks, hard links, device files,
nested archives, ``__MACOSX/``, hidden files, names too long for the disk and non-images are skipped and
reported, never written. The archive is read as the format its name says, within caps on entries, ratio and
decompressed bytes that are enforced while it is read (rag.ingest.archive_formats / archive_guard); each
file is copied with a byte budget so an archive that lies about its sizes is stopped as well, and Cancel
(``should_stop``) is polled throughout.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any, Callable

from rag.errors import InvalidInput
from rag.images.decode import IMAGE_EXTENSIONS
from rag.ingest.archive_formats import READ_ERRORS, Entry, archive_format, open_archive
from rag.ingest.archive_guard import ArchiveLimits
from rag.ingest.builder import BuildCancelled
from rag.ingest.sources import FolderSource

__all__ = ["ArchiveLimits", "ArchiveSource", "Entry", "Extracted", "extract_archive", "is_archive", "skip_reason"]

log = logging.getLogger(__name__)

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")
NESTED_SUFFIXES = (*ARCHIVE_SUFFIXES, ".gz", ".bz2", ".xz", ".7z", ".rar", ".tar.bz2", ".tar.xz")
CAPTION_FILES = ("captions.csv", "captions.jsonl")
COPY_CHUNK = 1 << 20
MAX_NAME_BYTES = 255  # one file or folder name (NAME_MAX on Linux and macOS)
MAX_PATH_BYTES = 1024  # the whole relative path, leaving room for the build folder under PATH_MAX


@dataclass
class Extracted:
    """What extraction produced: the folder, the root captions file (if any) and the skipped entries."""

    folder: Path
    files: int = 0
    captions_file: Path | None = None
    skipped: list[dict[str, str]] = field(default_factory=list)


def is_archive(path: str | Path) -> bool:
    """True when the file name ends like an archive this module reads (.zip, .tar, .tar.gz, .tgz)."""
    return archive_format(str(path)) is not None


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


def _kind_reason(entry: Entry) -> str | None:
    """Why an entry that is not a plain, readable file is skipped ("" for a folder, None for a file)."""
    if entry.kind == "dir":
        return ""
    reasons = {"symlink": "symbolic link (never extracted)", "hardlink": "hard link (never extracted)",
               "device": "device or pipe file (never extracted)"}
    if entry.kind != "file":
        return reasons.get(entry.kind, "not a regular file")
    return entry.problem


def skip_reason(entry: Entry) -> str | None:
    """Why an entry is not extracted (None: it is an image or the root captions file to extract)."""
    reason = _kind_reason(entry)
    if reason is not None:
        return reason
    relative = _safe_relative(entry.name)
    if relative is None:
        return "absolute path or '..' in the path (never extracted)"
    if relative.parts[0] == "__MACOSX" or any(p.startswith(".") for p in relative.parts):
        return "hidden or macOS metadata file"
    if any(len(os.fsencode(p)) > MAX_NAME_BYTES for p in relative.parts):
        return f"a file or folder name longer than {MAX_NAME_BYTES} bytes"
    if len(os.fsencode(str(relative))) > MAX_PATH_BYTES:
        return f"path longer than {MAX_PATH_BYTES:,} bytes"
    lower = relative.name.lower()
    if lower.endswith(NESTED_SUFFIXES):
        return "nested archive (not opened)"
    if str(relative).lower() in CAPTION_FILES:
        return None
    if relative.suffix.lower() not in IMAGE_EXTENSIONS:
        return "not an image file"
    return None


def _check_total(wanted: list[Entry], limits: ArchiveLimits, name: str) -> None:
    """Refuse the archive before anything is written when the images to extract pass the size cap."""
    total = sum(max(0, e.size) for e in wanted)
    if limits.max_total_bytes is not None and total > limits.max_total_bytes:
        raise InvalidInput(
            f"{name} would unpack to {total / 1e6:,.1f} MB of images; the limit is "
            f"{limits.max_total_bytes / 1e6:,.0f} MB. Send fewer or smaller images."
        )


def _copy(stream: IO[bytes], target: Path, budget: float, name: str) -> int:
    """Copy at most ``budget`` bytes; a file longer than its declared size stops the extraction."""
    written = 0
    with open(target, "xb") as out:
        while chunk := stream.read(COPY_CHUNK):
            written += len(chunk)
            if written > budget:
                raise InvalidInput(f"{name} holds more data than its entries declare; it was refused.")
            out.write(chunk)
    return written


def _first_images(entries: list[Entry], max_images: int | None) -> tuple[list[Entry], int]:
    """The entries to extract (the first ``max_images`` images by path, plus the captions file) and how
    many images were left out."""
    wanted = [e for e in entries if skip_reason(e) is None]
    captions = [e for e in wanted if str(_safe_relative(e.name)).lower() in CAPTION_FILES]
    images = sorted((e for e in wanted if e not in captions), key=lambda e: str(_safe_relative(e.name)))
    kept = images[:max_images] if max_images else images
    return sorted(kept + captions, key=lambda e: e.index), len(images) - len(kept)


def _plan(entries: list[Entry], keep: list[Entry], dest: Path, result: Extracted) -> dict[int, Path]:
    """Where each kept entry goes (by entry index); every other entry is reported in ``result.skipped``."""
    kept, seen, targets, root = {e.index for e in keep}, set(), {}, dest.resolve()
    for entry in entries:
        reason = skip_reason(entry)
        if reason == "" or (reason is None and entry.index not in kept):
            continue  # a folder, or an image over max_images (counted by the caller)
        relative = _safe_relative(entry.name)
        if reason is None and str(relative).lower() in seen:
            reason = "duplicate entry name"
        elif reason is None and not (root / str(relative)).resolve().is_relative_to(root):
            reason = "outside the build folder"  # belt and braces
        if reason:
            result.skipped.append({"source": entry.name, "reason": reason})
            continue
        seen.add(str(relative).lower())
        targets[entry.index] = dest / str(relative)
    return targets


def _write_all(reader: Any, targets: dict[int, Path], limits: ArchiveLimits, name: str, result: Extracted) -> None:
    """Extract the planned entries, counting their bytes against ``max_total_bytes``."""
    budget = [limits.max_total_bytes if limits.max_total_bytes is not None else float("inf")]

    def write(entry: Entry, stream: IO[bytes]) -> None:
        target = targets[entry.index]
        target.parent.mkdir(parents=True, exist_ok=True)
        budget[0] -= _copy(stream, target, min(entry.size, budget[0]), name)
        if target.relative_to(result.folder).as_posix().lower() in CAPTION_FILES:
            result.captions_file = target
        else:
            result.files += 1

    reader.extract(targets, write)


def extract_archive(
    path: str | Path, dest: str | Path, limits: ArchiveLimits = ArchiveLimits(), max_images: int | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Extracted:
    """Check the whole archive, then extract its images (the first ``max_images`` by path) and root
    captions file into ``dest``; everything else is listed in ``skipped``. ``should_stop`` (e.g. the build's
    Cancel) is polled at every entry and every MiB of decompressed data: True raises BuildCancelled."""
    path, dest = Path(path), Path(dest)
    reader = open_archive(path, limits, should_stop)
    try:
        keep, over = _first_images(reader.entries, max_images)
        _check_total(keep, limits, path.name)
        result = Extracted(folder=dest)
        if over:
            result.skipped.append({"source": f"{over} more image(s)", "reason": f"over the limit of {max_images} images"})
        dest.mkdir(parents=True, exist_ok=True)
        try:
            _write_all(reader, _plan(reader.entries, keep, dest, result), limits, path.name, result)
        except READ_ERRORS as exc:
            shutil.rmtree(dest, ignore_errors=True)
            raise InvalidInput(f"{path.name} could not be read to the end ({type(exc).__name__}).") from None
        except (InvalidInput, BuildCancelled):
            shutil.rmtree(dest, ignore_errors=True)
            raise
    finally:
        reader.close()
    log.info("extracted %d image(s) from %s, %d entr(ies) skipped", result.files, path.name, len(result.skipped))
    return result


class ArchiveSource(FolderSource):
    """The images of an archive, extracted safely into ``work_dir`` (a temporary folder when None).

    ``should_stop`` (the build's Cancel, e.g. ``threading.Event().is_set``) is polled while the archive is
    listed and extracted; True raises rag.ingest.builder.BuildCancelled and removes what was extracted.
    """

    def __init__(
        self,
        archive: str | Path,
        work_dir: str | Path | None = None,
        label_from_folder: bool = False,
        limit: int | None = None,
        limits: ArchiveLimits = ArchiveLimits(),
        captions_file: str | Path | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        self.archive = Path(archive)
        if not self.archive.is_file():
            raise InvalidInput(f"Archive {self.archive.name} does not exist.")
        self._tmp = None if work_dir else tempfile.TemporaryDirectory(prefix="rag-archive-")
        folder = Path(work_dir) if work_dir else Path(self._tmp.name)
        self.extracted = extract_archive(self.archive, folder, limits, max_images=limit, should_stop=should_stop)
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
