"""Near-duplicate groups: every pair at or above a cosine threshold (FAISS range search), joined into groups.

Two rows are in one group when a chain of such pairs connects them (connected components of the pair graph,
scipy.sparse.csgraph). Each group reports its rows and the weakest pair score that holds it together.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import faiss
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from rag.errors import InvalidInput

BLOCK_ROWS = 2048
MAX_PAIRS = 5_000_000
MAX_GROUPS = 500
# All pairs at 250k x 512-d is ~32 TFLOP: minutes on 2 vCPU. Beyond that the request would hold the Space for too long.
MAX_DUPLICATE_ROWS = 250_000
MIN_THRESHOLD = 0.5
FLOAT_SLACK = 1e-6  # identical vectors can score 0.99999994: "at or above" keeps them at threshold 1


@dataclass
class DuplicateGroup:
    """Rows joined by pairs at or above the threshold; ``min_score`` is the weakest of those pairs."""

    ids: list[int]
    min_score: float

    def to_dict(self) -> dict[str, Any]:
        return {"ids": self.ids, "min_score": round(self.min_score, 6)}


@dataclass
class Duplicates:
    """The groups found at a threshold (largest first), how many there were in all, and what it cost."""

    groups: list[DuplicateGroup]
    threshold: float
    total_groups: int
    pairs: int
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """What /duplicates returns: {"groups": [{"ids", "min_score"}], "threshold", "total_groups", "pairs", "seconds"}."""
        return {
            "groups": [g.to_dict() for g in self.groups],
            "threshold": self.threshold,
            "total_groups": self.total_groups,
            "pairs": self.pairs,
            "seconds": round(self.seconds, 3),
        }


def check_max_groups(max_groups: Any) -> int:
    """A whole number of groups to return, 1..MAX_GROUPS."""
    try:
        value = int(max_groups)
        if value != float(max_groups):
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        raise InvalidInput(f"max_groups must be a whole number between 1 and {MAX_GROUPS}, not {max_groups!r}.") from None
    if not 1 <= value <= MAX_GROUPS:
        raise InvalidInput(f"max_groups must be between 1 and {MAX_GROUPS}; got {value}.")
    return value


def similar_pairs(
    index: faiss.Index, vectors: Callable[[int, int], np.ndarray], threshold: float, max_pairs: int = MAX_PAIRS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs (i < j, score) with cosine >= threshold, by range search of each block of rows against the index."""
    firsts, seconds, scores = [], [], []
    found = 0
    for start in range(0, index.ntotal, BLOCK_ROWS):
        block = np.ascontiguousarray(vectors(start, min(index.ntotal, start + BLOCK_ROWS)), dtype=np.float32)
        lims, dist, ids = index.range_search(block, threshold - FLOAT_SLACK)
        queries = start + np.repeat(np.arange(len(block)), np.diff(lims).astype(np.int64))
        keep = ids > queries  # each pair once, never a row with itself
        firsts.append(queries[keep])
        seconds.append(ids[keep])
        scores.append(dist[keep])
        found += int(keep.sum())
        if found > max_pairs:
            raise InvalidInput(
                f"More than {max_pairs:,} pairs score {threshold:g} or more: that is not a set of near-duplicates. "
                "Raise the threshold."
            )
    cat = lambda parts, dtype: np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)  # noqa: E731
    return cat(firsts, np.int64), cat(seconds, np.int64), cat(scores, np.float32)


def group_pairs(
    rows: int, first: np.ndarray, second: np.ndarray, scores: np.ndarray
) -> list[DuplicateGroup]:
    """Connected components of the pair graph with two or more rows, largest first (then tightest)."""
    if len(first) == 0:
        return []
    graph = coo_matrix((np.ones(len(first), dtype=np.int8), (first, second)), shape=(rows, rows))
    _, labels = connected_components(graph, directed=False)
    weakest = np.full(labels.max() + 1, np.inf)
    np.minimum.at(weakest, labels[first], scores)
    members: dict[int, list[int]] = {}
    for row in np.unique(np.concatenate([first, second])):
        members.setdefault(int(labels[row]), []).append(int(row))
    groups = [DuplicateGroup(sorted(ids), min(float(weakest[label]), 1.0)) for label, ids in members.items()]
    groups.sort(key=lambda g: (-len(g.ids), -g.min_score, g.ids[0]))
    return groups


def find_duplicates(
    index: faiss.Index, vectors: Callable[[int, int], np.ndarray], threshold: float, max_groups: int
) -> Duplicates:
    """Groups of near-duplicate rows at a cosine threshold, at most ``max_groups`` of them."""
    started = time.perf_counter()
    first, second, scores = similar_pairs(index, vectors, threshold)
    groups = group_pairs(index.ntotal, first, second, scores)
    return Duplicates(
        groups=groups[:max_groups], threshold=threshold, total_groups=len(groups), pairs=len(first),
        seconds=time.perf_counter() - started,
    )
