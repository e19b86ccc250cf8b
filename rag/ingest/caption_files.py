"""A captions file (CSV, or JSON Lines) read as a stream of rows, with a cap on its bytes and on its rows.

Read whole, a 40 MB ``captions.csv`` became its text, a list of lines and a list of dicts at once (several
hundred MB; the report: a 486 KB zip took the app from 1.3 to 2.9 GB). Read here one row at a time, a reader
keeps only the rows that name one of its images; the caps bound the time spent and what can be kept. The
bytes are counted as they are read (not only the size on disk), so the cap holds for any file.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterator

from rag.errors import CollectionError, InvalidInput

CAPTION_KEYS = ("caption", "captions", "text", "description", "sentences", "raw")
JSON_LINES_SUFFIXES = (".jsonl", ".ndjson", ".json")
MAX_CAPTION_FILE_BYTES = 16_000_000  # an in-Space build holds at most 2,000 images: ~8 KB of captions each
MAX_CAPTION_FILE_ROWS = 100_000  # 50 rows per image at 2,000 images


@dataclass(frozen=True)
class CaptionLimits:
    """Caps on a captions file: its bytes and its data rows (None: no cap, for the owner's own folders)."""

    max_bytes: int | None = MAX_CAPTION_FILE_BYTES
    max_rows: int | None = MAX_CAPTION_FILE_ROWS


NO_CAPTION_LIMITS = CaptionLimits(max_bytes=None, max_rows=None)


class _CappedReader(io.RawIOBase):
    """A binary file that raises InvalidInput once more than ``cap`` bytes have been read from it."""

    def __init__(self, raw: IO[bytes], cap: int | None, name: str) -> None:
        super().__init__()
        self.raw, self.cap, self.name, self.read_bytes = raw, cap, name, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = self.raw.readinto(buffer)
        self.read_bytes += count or 0
        if self.cap is not None and self.read_bytes > self.cap:
            raise InvalidInput(_too_big(self.name, self.read_bytes, self.cap))
        return count


def _too_big(name: str, size: int, cap: int) -> str:
    return (f"{name} is over {size / 1e6:,.1f} MB; a captions file may hold at most {cap / 1e6:,.0f} MB. "
            "Keep one row per image (or a few) and send it again.")


def caption_rows(path: Path, limits: CaptionLimits = CaptionLimits()) -> Iterator[dict[str, Any]]:
    """The rows of a captions file as dicts, one at a time; InvalidInput when it passes ``limits``.

    CSV files are read with their header row as keys; ``.jsonl`` / ``.ndjson`` / ``.json`` files hold one
    JSON object per line. Nothing is kept here: a caller that keeps a row decides what to keep.
    """
    path = Path(path)
    if not path.is_file():
        raise CollectionError(f"Captions file {path.name} does not exist.")
    size = path.stat().st_size
    if limits.max_bytes is not None and size > limits.max_bytes:
        raise InvalidInput(_too_big(path.name, size, limits.max_bytes))
    with open(path, "rb") as raw:
        text = io.TextIOWrapper(io.BufferedReader(_CappedReader(raw, limits.max_bytes, path.name)),
                                encoding="utf-8-sig", newline="")
        rows = _json_lines(text, path.name) if path.suffix.lower() in JSON_LINES_SUFFIXES else _csv_rows(text, path.name)
        for count, row in enumerate(rows, 1):
            if limits.max_rows is not None and count > limits.max_rows:
                raise InvalidInput(f"{path.name} has more than {limits.max_rows:,} rows, the most a captions file "
                                   "may hold; keep one row per image (or a few) and send it again.")
            yield row


def _csv_rows(text: IO[str], name: str) -> Iterator[dict[str, Any]]:
    reader = csv.DictReader(text)
    try:
        yield from reader
    except (csv.Error, UnicodeDecodeError) as exc:
        raise CollectionError(f"{name} line {reader.line_num} is not valid UTF-8 CSV ({exc}).") from None


def _json_lines(text: IO[str], name: str) -> Iterator[dict[str, Any]]:
    number = 0
    try:
        for number, line in enumerate(text, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise CollectionError(f"{name} line {number} is not JSON: {exc}") from None
            if not isinstance(row, dict):
                raise CollectionError(f"{name} line {number} is not a JSON object with named fields.")
            yield row
    except UnicodeDecodeError:
        raise CollectionError(f"{name} line {number + 1} is not valid UTF-8.") from None
