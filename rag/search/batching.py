"""Concurrent single queries served as batches: while one batch runs, the calls that arrive wait and then run
together as the next one (group commit). A burst of visitors thus costs one encoder forward and one FAISS call
per batch instead of one each, while a lone call runs at once, alone, exactly as before.

* ``Coalescer``: the mechanism, with a result or an error per call (one visitor's failure is only theirs);
* ``BatchingSearcher``: a searcher whose single-query searches from concurrent threads become one ``search`` call
  per batch and k (the exact scans answer every query of a batch exactly as alone: rag.search.flat);
* ``batch_encoder``: the same for text encoding, where batching leaves each text's vector as it is alone. That is
  measured once on probe texts: in fp32 a batch moves a vector by ~5e-7 (padding, BLAS shapes), but an int8
  encoder quantises the activations of the whole batch together and moves each text's vector by up to ~0.025,
  so its texts are encoded one at a time (still in one job).
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Generic, TypeVar

import numpy as np

MAX_BATCH = 16  # calls served together at most: bounds the wait of the last one in a batch
EXACT_ENCODING = 1e-5  # largest change of a vector component that batching may make for texts to be batched
PROBE_TEXTS = ("a photo", "dog", "a red circle on a blue square", "two people walking along a beach at sunset")

Item = TypeVar("Item")
Result = TypeVar("Result")


class _Call(Generic[Item]):
    __slots__ = ("item", "done", "result")

    def __init__(self, item: Item) -> None:
        self.item, self.done, self.result = item, False, None


class Coalescer(Generic[Item, Result]):
    """Runs ``work(items) -> results`` (one result, or an exception instance, per item) over the items of concurrent
    callers: a caller that finds no batch running runs up to ``max_size`` waiting items, oldest first, and hands
    each caller its own result; callers arriving meanwhile wait for the next batch."""

    def __init__(self, work: Callable[[list[Item]], list[Any]], max_size: int = MAX_BATCH) -> None:
        self._work, self._max = work, max_size
        self._ready = threading.Condition()
        self._pending: list[_Call] = []
        self._running = False
        self.batches: list[int] = []  # sizes of the recent batches (for tests and benchmarks)

    def __call__(self, item: Item) -> Result:
        call = _Call(item)
        with self._ready:
            self._pending.append(call)
            self._ready.notify_all()  # for wait_for_waiting
        while True:
            with self._ready:
                while self._running and not call.done:
                    self._ready.wait()
                if call.done:
                    break
                self._running = True
                batch, self._pending = self._pending[: self._max], self._pending[self._max :]
            self._run(batch)
        if isinstance(call.result, BaseException):
            raise call.result
        return call.result

    def wait_for_waiting(self, count: int, timeout: float) -> bool:
        """Block until ``count`` calls wait for a batch (or ``timeout`` seconds pass): lets a test or a benchmark
        line a burst up behind a running batch."""
        with self._ready:
            return self._ready.wait_for(lambda: len(self._pending) >= count, timeout)

    def _run(self, batch: list[_Call]) -> None:
        try:
            results = self._work([call.item for call in batch])
        except BaseException as exc:  # noqa: BLE001 - handed to every caller of this batch, raised in their threads
            results = [exc] * len(batch)
        with self._ready:
            for call, result in zip(batch, results):
                call.result, call.done = result, True
            self.batches = [*self.batches[-99:], len(batch)]
            self._running = False
            self._ready.notify_all()


class BatchingSearcher:
    """A searcher whose single-query searches from concurrent threads are run as one batch (per k)."""

    def __init__(self, searcher: Any, max_size: int = MAX_BATCH) -> None:
        self.inner = searcher
        self.coalescer: Coalescer = Coalescer(self._search_batch, max_size)

    @property
    def ntotal(self) -> int:
        """Rows searched."""
        return int(self.inner.ntotal)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) per query; one query waits to join concurrent ones, a batch goes straight through."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim == 1:
            queries = queries[None, :]
        if len(queries) != 1:
            return self.inner.search(queries, k)
        return self.coalescer((queries, int(k)))

    def _search_batch(self, items: list[tuple[np.ndarray, int]]) -> list[Any]:
        results: list[Any] = [None] * len(items)
        for k in sorted({k for _, k in items}):
            rows = [i for i, (_, wanted) in enumerate(items) if wanted == k]
            try:
                scores, ids = self.inner.search(np.concatenate([items[i][0] for i in rows]), k)
            except Exception as exc:  # noqa: BLE001 - only the calls of this k fail
                scores, ids = None, exc
            for j, i in enumerate(rows):
                results[i] = ids if scores is None else (scores[j : j + 1], ids[j : j + 1])
        return results


def batch_encoder(encode: Callable[[list[str]], np.ndarray], max_size: int = MAX_BATCH) -> Callable[[str], np.ndarray]:
    """A function of one text returning its (1, d) vector, encoding the texts of concurrent calls in one forward
    pass when that leaves each vector as it is alone (checked on PROBE_TEXTS at the first batch), else one by one."""
    exact: list[bool] = []

    def work(texts: list[str]) -> list[np.ndarray]:
        if len(texts) > 1 and not exact:
            alone = np.concatenate([encode([text]) for text in PROBE_TEXTS])
            exact.append(bool(np.abs(alone - encode(list(PROBE_TEXTS))).max() <= EXACT_ENCODING))
        if len(texts) == 1 or not exact[0]:
            return [encode([text]) for text in texts]
        vectors = encode(texts)
        return [vectors[i : i + 1] for i in range(len(texts))]

    return Coalescer(work, max_size)
