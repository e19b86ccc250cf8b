"""The general search's inputs and result: parameter checks, the combined query vector, SearchResult.

The query vector is ``normalise(sum(weight * normalise(term vector)))`` over the parsed terms (text, rows,
and the uploaded image as one more term). ``Pipeline.search`` ties this to the encoder and the index.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from rag.errors import InvalidInput
from rag.search.query import Term

MAX_OFFSET = 10_000
CANCEL_NORM = 1e-6


def check_offset(offset: Any) -> int:
    """A whole number >= 0 (ranks to skip, for "Load more")."""
    try:
        value = int(offset)
        if value != float(offset):
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        raise InvalidInput(f"offset must be a whole number of results to skip (0 or more), not {offset!r}.") from None
    if not 0 <= value <= MAX_OFFSET:
        raise InvalidInput(f"offset must be between 0 and {MAX_OFFSET:,}; got {value:,}.")
    return value


def check_threshold(threshold: Any, low: float = -1.0, what: str = "threshold") -> float | None:
    """A cosine similarity in [low, 1]; None or 0 means no threshold."""
    if threshold is None or threshold == "":
        return None
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise InvalidInput(f"{what} must be a cosine similarity between {low:g} and 1, not {threshold!r}.") from None
    if not math.isfinite(value) or not low <= value <= 1.0:
        raise InvalidInput(f"{what} must be a cosine similarity between {low:g} and 1; got {threshold!r}.")
    return value or None


def check_weight(weight: Any) -> float:
    """The uploaded image's weight: a finite number (negative pushes results away from the image)."""
    try:
        value = float(1.0 if weight is None or weight == "" else weight)
    except (TypeError, ValueError):
        raise InvalidInput(f"image_weight must be a number, not {weight!r}.") from None
    if not math.isfinite(value):
        raise InvalidInput(f"image_weight must be a finite number; got {weight!r}.")
    return value


def check_terms(terms: Sequence[Term], rows: int) -> None:
    """At least one positive term, and every #row inside the collection."""
    if not terms:
        raise InvalidInput("Type a query (e.g. beach - people, #42 + 2*\"red car\") or add an image.")
    for term in terms:
        if term.kind == "row" and not 0 <= term.value < rows:
            raise InvalidInput(f"Row #{term.value} is not in the collection: rows are #0 to #{rows - 1}.")
    if not any(term.weight > 0 for term in terms):
        raise InvalidInput(
            "The query has no positive term: a search needs something to look for, not only things to avoid "
            "(e.g. beach - people)."
        )


def query_vector(
    terms: Sequence[Term],
    encode_texts: Callable[[list[str]], np.ndarray],
    row_vectors: Callable[[list[int]], np.ndarray],
    image_vector: np.ndarray | None = None,
) -> np.ndarray:
    """normalise(sum(weight * normalise(vector))) over the terms, as a (1, dim) float32 array."""
    texts = [t.value for t in terms if t.kind == "text"]
    rows = [t.value for t in terms if t.kind == "row"]
    vectors = {
        "text": iter(encode_texts(texts)) if texts else iter(()),
        "row": iter(row_vectors(rows)) if rows else iter(()),
        "image": iter(image_vector if image_vector is not None else ()),
    }
    total = None
    for term in terms:
        vector = np.asarray(next(vectors[term.kind]), dtype=np.float64)
        vector = vector / max(np.linalg.norm(vector), 1e-12)
        total = term.weight * vector if total is None else total + term.weight * vector
    norm = float(np.linalg.norm(total))
    if norm < CANCEL_NORM:
        raise InvalidInput("The terms cancel each other out (the combined query vector is zero); change a weight.")
    return (total / norm).astype(np.float32)[None, :]


@dataclass
class SearchResult:
    """One page of a general search: the hits, how the query was read, and the filter that applied."""

    hits: list[Any]
    k: int
    offset: int
    terms: list[Term]
    filters: dict[str, Any] = field(default_factory=dict)
    threshold: float | None = None
    matching_rows: int = 0

    def to_dict(self) -> dict[str, Any]:
        """What /search returns: {"hits", "k", "offset", "terms", "filters", "threshold", "matching_rows"}."""
        return {
            "hits": [hit.to_dict() for hit in self.hits],
            "k": self.k,
            "offset": self.offset,
            "terms": [term.to_dict() for term in self.terms],
            "filters": self.filters,
            "threshold": self.threshold,
            "matching_rows": self.matching_rows,
        }
