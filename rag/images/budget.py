"""A process-wide memory budget shared by concurrent image decodes: large ones wait their turn or are refused."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Iterator

from rag.errors import InvalidInput


class ByteBudget:
    """A counting semaphore in bytes: ``reserve(n)`` blocks until ``n`` bytes are free, at most ``wait`` seconds."""

    def __init__(self, total: int) -> None:
        self.total = int(total)
        self.used = 0
        self.peak = 0
        self._free = threading.Condition()

    @contextmanager
    def reserve(self, amount: int, wait: float) -> Iterator[None]:
        """Hold ``amount`` bytes for the ``with`` body; InvalidInput when they do not come free within ``wait`` s."""
        amount = max(0, int(amount))
        deadline = time.monotonic() + wait
        with self._free:
            while self.used + amount > self.total and self.used > 0:
                left = deadline - time.monotonic()
                if left <= 0 or not self._free.wait(left):
                    if self.used + amount > self.total and self.used > 0:
                        raise InvalidInput(
                            "The server is busy decoding other large images; try again in a moment "
                            "or send a smaller image."
                        )
            self.used += amount
            self.peak = max(self.peak, self.used)
        try:
            yield
        finally:
            with self._free:
                self.used -= amount
                self._free.notify_all()
