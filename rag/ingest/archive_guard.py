"""What an archive may cost before it is refused: caps, a decompressed-byte budget and the Cancel check.

A compression bomb costs CPU (and memory) while it is being decompressed, before any cap on the result can
run. So the caps are not checked once at the end: every byte that comes out of a decompressor passes through
a ``Guard``, which refuses the archive the moment the budget is spent and asks ``should_stop`` (the build's
Cancel) every ``CHECK_EVERY`` bytes and at every entry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import IO, Callable

from rag.errors import InvalidInput
from rag.ingest.builder import BuildCancelled

CHECK_EVERY = 1 << 20  # ask should_stop at least once per MiB of decompressed data
READ_CHUNK = 1 << 20


@dataclass(frozen=True)
class ArchiveLimits:
    """Caps on an archive: bytes of the images it extracts, compression ratio, entries, bytes it unpacks to.

    ``max_unpacked_bytes`` bounds every member together (skipped files too: a compressed .tar must be
    decompressed to get past them); None means twice ``max_total_bytes``, or no cap when that is None.
    """

    max_total_bytes: int | None = None
    max_ratio: float = 100.0
    max_entries: int = 100_000
    max_unpacked_bytes: int | None = None

    def unpacked_cap(self) -> float:
        """Bytes all members together may unpack to (math.inf: no cap)."""
        if self.max_unpacked_bytes is not None:
            return float(self.max_unpacked_bytes)
        return 2.0 * self.max_total_bytes if self.max_total_bytes is not None else math.inf


def refuse_declared(name: str, declared: int, archive_bytes: int, limits: ArchiveLimits) -> None:
    """Refuse when the members' declared sizes so far pass the ratio cap or the unpacked cap."""
    if archive_bytes > 0 and declared / archive_bytes > limits.max_ratio:
        raise InvalidInput(
            f"{name} expands {declared / archive_bytes:,.0f} times its size (the limit is "
            f"{limits.max_ratio:,.0f}×); it looks like a compression bomb and was not opened."
        )
    if declared > limits.unpacked_cap():
        raise InvalidInput(
            f"{name} would unpack to more than {declared / 1e6:,.1f} MB (every file in it counts); the limit is "
            f"{limits.unpacked_cap() / 1e6:,.1f} MB. Send fewer or smaller images."
        )


class Guard:
    """Counts decompressed bytes against ``limit`` and polls ``should_stop`` while an archive is read."""

    def __init__(self, name: str, limit: float, should_stop: Callable[[], bool] | None = None) -> None:
        self.name, self.limit, self.should_stop = name, limit, should_stop
        self.used = 0
        self._next_check = CHECK_EVERY

    def check(self) -> None:
        """Raise BuildCancelled when Cancel was asked for."""
        if self.should_stop is not None and self.should_stop():
            raise BuildCancelled("The build was cancelled while the archive was read; nothing was kept.")

    def room(self) -> float:
        """Bytes that may still come out before the budget is spent."""
        return self.limit - self.used

    def spend(self, count: int) -> None:
        """Count ``count`` decompressed bytes: refuse past the budget, poll Cancel every CHECK_EVERY bytes."""
        self.used += count
        if self.used > self.limit:
            raise InvalidInput(
                f"{self.name} unpacks to more than its {self.limit / 1e6:,.1f} MB budget (its size times the "
                "ratio limit, or the size limit); it looks like a compression bomb and was not opened."
            )
        if self.used >= self._next_check:
            self._next_check = self.used + CHECK_EVERY
            self.check()


class GuardedStream:
    """A read-only stream over a decompressor that makes every byte it hands out pass through a Guard.

    It never asks the decompressor for more than the budget has room for (plus one byte, to notice the
    overrun), so a bomb is stopped within one chunk of the limit, not after it has been inflated.
    """

    def __init__(self, raw: IO[bytes], guard: Guard) -> None:
        self.raw, self.guard = raw, guard

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes (all that is left when negative), each one counted by the guard."""
        if size is None or size < 0:
            parts = []
            while chunk := self.read(READ_CHUNK):
                parts.append(chunk)
            return b"".join(parts)
        room = self.guard.room()
        size = int(min(size, max(room, 0) + 1, READ_CHUNK))
        data = self.raw.read(size)
        self.guard.spend(len(data))
        return data

    def close(self) -> None:
        """Close the underlying stream."""
        self.raw.close()
