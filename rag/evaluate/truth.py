"""Ground truth of a collection (human captions, labels) and the seeded row samples of each task."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class GroundTruth:
    """Per-row ground truth: human captions (model-written ones removed) and labels."""

    rows: int
    captions: list[list[str]]
    labels: list[str | None]
    generated_caption_rows: int = 0
    label_codes: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    label_counts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    has_map: bool = False
    query_rows: np.ndarray | None = None  # when set (a tuned collection's held-out rows), queries come from these only

    @classmethod
    def of(cls, collection: Any) -> GroundTruth:
        """Read captions and labels of every row; model-written captions are not ground truth."""
        n = len(collection)
        captions = [[c.strip() for c in caps if c and c.strip()] for caps in collection.all_captions()]
        labels = [
            label.strip() if isinstance(label, str) and label.strip() else None for label in collection.all_labels()
        ]
        generated = 0
        if collection.manifest.generated_captions:
            for start in range(0, n, 10_000):
                for row in collection.rows(range(start, min(n, start + 10_000))):
                    if row["captions_generated"]:
                        captions[row["id"]] = []
                        generated += 1
        names = sorted({label for label in labels if label is not None})
        lookup = {name: i for i, name in enumerate(names)}
        codes = np.array([lookup[l] if l is not None else -1 for l in labels], dtype=np.int64)
        counts = np.bincount(codes[codes >= 0], minlength=len(names)) if names else np.zeros(0, dtype=np.int64)
        has_map = "map.parquet" in collection.manifest.files
        return cls(n, captions, labels, generated, codes, counts, has_map)

    @property
    def caption_rows(self) -> np.ndarray:
        return self._queried(np.array([i for i, caps in enumerate(self.captions) if caps], dtype=np.int64))

    @property
    def labelled_rows(self) -> np.ndarray:
        return self._queried(np.flatnonzero(self.label_codes >= 0))

    def _queried(self, rows: np.ndarray) -> np.ndarray:
        return rows if self.query_rows is None else rows[np.isin(rows, self.query_rows)]

    def label_peers(self, rows: np.ndarray) -> np.ndarray:
        """How many *other* rows share each row's label (0 for unlabelled rows)."""
        codes = self.label_codes[rows]
        return np.where(codes >= 0, self.label_counts[np.maximum(codes, 0)] - 1, 0)

    def skip_reason(self, task: str, have_queries: bool) -> str | None:
        """Why ``task`` cannot run on this collection, or None."""
        if task in ("t2i", "i2t", "create") and not len(self.caption_rows):
            if self.generated_caption_rows:
                return (f"the collection's only captions were written by a model at build time "
                        f"({self.generated_caption_rows} rows); they are not ground truth")
            return "the collection has no captions"
        if task == "i2i":
            if not len(self.labelled_rows):
                return "the collection has no labels"
            if not (self.label_counts > 1).any():
                return "no label occurs on more than one row, so no image has a relevant neighbour"
        if task == "map" and not self.has_map:
            return "the collection has no map (add one with index_build.py --add-map DIR_OR_REPO)"
        if task == "queries" and not have_queries:
            return "no --queries file given"
        return None


# Each task draws its sample from its own random stream, so adding a task never changes another's sample.
SAMPLE_STREAMS = {"t2i": 0, "i2t": 1, "i2i": 2, "queries": 3, "describe": 4, "map": 5, "create": 6}


def sample_rows(rows: np.ndarray, cap: int | None, seed: int, task: str) -> np.ndarray:
    """A sorted, seeded sample of at most ``cap`` rows (each task draws from its own stream)."""
    rows = np.asarray(rows, dtype=np.int64)
    if cap is None or len(rows) <= cap:
        return rows
    rng = np.random.default_rng([seed, SAMPLE_STREAMS.get(task, sum(map(ord, task)))])
    return np.sort(rng.choice(rows, size=cap, replace=False))
