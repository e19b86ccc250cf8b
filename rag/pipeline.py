"""The RAG flow in one place: search_text, search_image, similar_to, describe, score and info.

The app, the evaluation and the benchmarks all call this; none re-implements search or prompting.
Every user-facing failure is an InvalidInput (bad request) or RagError (service problem) with a readable message.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from rag.models.captioner import Candidate, Captioner, captioner_label
from rag.collection.reader import Collection
from rag.search.duplicates import MAX_DUPLICATE_ROWS, MAX_GROUPS, Duplicates, check_max_groups, find_duplicates
from rag.search.duplicates import MIN_THRESHOLD as MIN_DUPLICATE_THRESHOLD
from rag.models.adapter import adapt_encoder
from rag.models.encoder import MAX_QUERY_CHARS, Encoder
from rag.errors import CaptionerError, InvalidInput, ServiceError
from rag.search.filtered import search_page
from rag.search.batching import BatchingSearcher, batch_encoder
from rag.search.flat import Searcher, make_searcher
from rag.search.filters import FilterCache
from rag.search.power import SearchResult, check_offset, check_terms, check_threshold, check_weight, query_vector
from rag.images.decode import ImageInput, load_image
from rag.search.query import Term, parse_query

if TYPE_CHECKING:
    from rag.config import Settings
    from rag.explore.map_api import MapPoints

log = logging.getLogger(__name__)

MAX_K = 50
MAX_CONTEXT_K = 20
MAX_QUESTION_CHARS = 500
QUERY_CACHE_SIZE = 256  # text query vectors kept (the examples are clicked again and again)
MAX_SCORE_TEXTS = 100  # texts scored against one image per call (one batch through the text tower)


@dataclass
class Hit:
    """One retrieved row: id, cosine score, captions, label, passed-through metadata and a thumbnail file."""

    id: int
    score: float
    captions: list[str]
    label: str | None
    metadata: dict[str, Any]
    thumbnail: str
    source: str = ""
    captions_generated: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (what the API returns)."""
        return asdict(self)


@dataclass
class Description:
    """What describe() returns: the text, the neighbours used as context, the exact prompt/context, the metadata
    columns given as context, and (GIT) the candidates it ranked, best first."""

    text: str
    context: list[Hit]
    prompt: str
    captioner: str
    seconds: float = 0.0
    context_columns: list[str] = field(default_factory=list)
    candidates: list[Candidate] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (what /describe returns, with the UI's additions)."""
        return {**asdict(self), "seconds": round(self.seconds, 3)}


def check_int(k: Any, low: int = 1, high: int = MAX_K, what: str = "k") -> int:
    """A whole number in [low, high], or InvalidInput with one message for every bad value (inf, NaN, bool, huge)."""
    message = f"{what} must be a whole number between {low} and {high}."
    if isinstance(k, bool) or not isinstance(k, (int, float, str, np.integer, np.floating)):
        raise InvalidInput(message)
    try:
        number = float(k)
    except (TypeError, ValueError, OverflowError):
        raise InvalidInput(message) from None
    if not math.isfinite(number) or not number.is_integer() or abs(number) >= 1e12:
        raise InvalidInput(message)
    if not low <= number <= high:
        raise InvalidInput(f"{what} must be between {low} and {high}; got {int(number)}.")
    return int(number)


def check_k(k: Any, low: int = 1, high: int = MAX_K) -> int:
    """The number of results: a whole number in [low, high]."""
    return check_int(k, low, high, "k")


def check_row_id(row_id: Any, rows: int) -> int:
    """A row id of a collection with ``rows`` rows."""
    return check_int(row_id, 0, rows - 1, "row id")


def check_query(query: Any) -> str:
    """A non-empty text query of reasonable length."""
    if not isinstance(query, str) or not query.strip():
        raise InvalidInput("Type a text query: it is empty.")
    query = " ".join(query.split())
    if len(query) > MAX_QUERY_CHARS:
        raise InvalidInput(
            f"The query is {len(query):,} characters long; the limit is {MAX_QUERY_CHARS:,} "
            "(CLIP reads only the first ~77 tokens anyway)."
        )
    return query


def check_texts(texts: Any) -> list[str]:
    """1 to MAX_SCORE_TEXTS non-empty texts (a single string is one text), whitespace collapsed as in search_text."""
    texts = [texts] if isinstance(texts, str) else texts
    if not isinstance(texts, (list, tuple)) or not texts:
        raise InvalidInput("Give at least one text to score the image against (a list of strings).")
    if len(texts) > MAX_SCORE_TEXTS:
        raise InvalidInput(f"{len(texts):,} texts were given; at most {MAX_SCORE_TEXTS} are scored at once.")
    checked = []
    for number, text in enumerate(texts, 1):
        if not isinstance(text, str) or not text.strip():
            problem = "empty" if isinstance(text, str) else "not a string"
            raise InvalidInput(f"Text {number} of {len(texts)} is {problem}.")
        text = " ".join(text.split())
        if len(text) > MAX_QUERY_CHARS:
            raise InvalidInput(f"Text {number} is {len(text):,} characters long; the limit is {MAX_QUERY_CHARS:,}.")
        checked.append(text)
    return checked


def image_text_scores(encoder: Encoder, image: ImageInput, texts: Any) -> list[float]:
    """CLIP cosine similarity of one image with each text (both vectors normalised): higher = a better description."""
    texts = check_texts(texts)
    if image is None:
        raise InvalidInput("Upload an image to score.")
    image_vector = encoder.encode_images([load_image(image)])[0]
    return [round(float(s), 6) for s in encoder.encode_texts(texts) @ image_vector]


@dataclass
class Pipeline:
    """A loaded collection, its encoder and (optionally) a captioner."""

    collection: Collection
    encoder: Encoder
    cache_dir: Path
    captioner: Captioner | None = None
    name: str = ""
    revision: str | None = None
    commit: str | None = None
    text_model: str | None = None
    load_seconds: float = 0.0
    _filters: FilterCache | None = field(default=None, repr=False)
    _duplicates: dict[float, Duplicates] = field(default_factory=dict, repr=False)
    _duplicates_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)  # one all-pairs search at once
    quantize: str = "none"  # the text encoder's conversion in effect (rag.models.quantize)
    quantize_engine: str = ""  # what runs it: "onnxruntime" or "torch" ("" when none)
    searcher: Searcher | None = field(default=None, repr=False)  # kept by with_captioner: built once per collection

    def __post_init__(self) -> None:
        # a tuned collection (rag.finetune) is searched through its adapter on top of the shared base encoder
        self.encoder = adapt_encoder(self.encoder, self.collection.adapter_path, self.collection.manifest.dim)
        if self.searcher is None:  # concurrent single queries are searched, and texts encoded, in batches
            self.searcher = BatchingSearcher(make_searcher(self.collection.index))
        self.query_encoder = batch_encoder(lambda texts: self.encoder.encode_texts(texts))
        self._query_vector = functools.lru_cache(maxsize=QUERY_CACHE_SIZE)(self._encode_query)

    def with_captioner(self, captioner: Captioner | None) -> "Pipeline":
        """The same collection and encoder served with another captioner (a new Pipeline; this one is unchanged)."""
        return replace(self, captioner=captioner)

    # -- retrieval -----------------------------------------------------------------------------------

    def search_ids(
        self, vectors: np.ndarray, k: int, exclude: Sequence[int] = (), exclude_each: Sequence[int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, row ids) per query vector, -1 padded; ``exclude`` drops ids for all queries,
        ``exclude_each[i]`` drops one id (e.g. the query's own row) for query i only. No rows are read."""
        excluded = {int(i) for i in exclude}
        extra = len(excluded) + (exclude_each is not None)
        scores, ids = self.searcher.search(vectors, k + extra)
        out_scores = np.full((len(ids), k), -np.inf, dtype=np.float32)
        out_ids = np.full((len(ids), k), -1, dtype=np.int64)
        for q, (row_scores, row_ids) in enumerate(zip(scores, ids)):
            own = int(exclude_each[q]) if exclude_each is not None else None
            keep = [j for j, i in enumerate(row_ids) if i >= 0 and int(i) not in excluded and int(i) != own][:k]
            out_scores[q, : len(keep)] = row_scores[keep]
            out_ids[q, : len(keep)] = row_ids[keep]
        return out_scores, out_ids

    def search_vectors(self, vectors: np.ndarray, k: int, exclude: Sequence[int] = ()) -> list[list[Hit]]:
        """Top-k hits (rows and thumbnails) per query vector, excluded row ids dropped."""
        scores, ids = self.search_ids(vectors, k, exclude)
        return [
            self._hits([(int(i), float(s)) for i, s in zip(row_ids, row_scores) if i >= 0])
            for row_scores, row_ids in zip(scores, ids)
        ]

    def _hits(self, pairs: list[tuple[int, float]]) -> list[Hit]:
        rows = self.collection.rows([i for i, _ in pairs])
        return [
            Hit(
                id=row["id"],
                score=round(score, 6),
                captions=row["captions"],
                label=row["label"],
                metadata=row["metadata"],
                thumbnail=str(self.collection.thumbnail_path(row["id"], self.cache_dir)),
                source=row["source"],
                captions_generated=row["captions_generated"],
            )
            for row, (_, score) in zip(rows, pairs)
        ]

    def search_text(self, query: str, k: int = 10) -> list[Hit]:
        """Images best matching a text query (any language the text encoder reads)."""
        query = check_query(query)
        k = check_k(k)
        return self.search_vectors(self._query_vector(query), k)[0]

    def _encode_query(self, query: str) -> np.ndarray:
        vector = self.query_encoder(query)
        vector.setflags(write=False)  # shared by every later call with the same query
        return vector

    def query_cache_info(self) -> Any:
        """Hits/misses/size of the text query vector cache (``functools.lru_cache`` statistics)."""
        return self._query_vector.cache_info()

    def search_image(self, image: ImageInput, k: int = 10) -> list[Hit]:
        """Images most similar to an uploaded image."""
        k = check_k(k)
        if image is None:
            raise InvalidInput("Upload an image first.")
        vector = self.encoder.encode_images([load_image(image)])
        return self.search_vectors(vector, k)[0]

    def thumbnail(self, row_id: int) -> Path:
        """A file holding one row's stored thumbnail (from the capped thumbnail cache)."""
        return self.collection.thumbnail_path(check_row_id(row_id, len(self.collection)), self.cache_dir)

    def similar_to(self, row_id: int, k: int = 10) -> list[Hit]:
        """"More like this": neighbours of a row already in the collection, itself excluded."""
        k = check_k(k)
        row_id = check_row_id(row_id, len(self.collection))
        return self.search_vectors(self.row_vectors([row_id]), k, exclude=[row_id])[0]

    def search(
        self, query: str = "", image: ImageInput | None = None, image_weight: float = 1.0, k: int = 10,
        offset: int = 0, threshold: float | None = None, filters: Any = None,
    ) -> SearchResult:
        """The general search: weighted +/- terms (text, #rows) plus an optional image, filtered, paged, cut."""
        if query is not None and not isinstance(query, str):
            raise InvalidInput("The query must be text.")
        if query and len(query) > MAX_QUERY_CHARS:
            raise InvalidInput(f"The query is {len(query):,} characters long; the limit is {MAX_QUERY_CHARS:,}.")
        k, offset, threshold = check_k(k), check_offset(offset), check_threshold(threshold)
        terms = parse_query(query or "")
        image = image or None
        if image is not None:
            terms.append(Term("image", "uploaded image", check_weight(image_weight)))
        check_terms(terms, len(self.collection))
        row_filter = self.filter_cache().compile(filters)
        image_vector = self.encoder.encode_images([load_image(image)]) if image is not None else None
        vector = query_vector(terms, self.encoder.encode_texts, self.row_vectors, image_vector)
        page = search_page(self.searcher if row_filter is None else self.collection.index, vector, k, offset, row_filter, threshold)
        return SearchResult(
            hits=self._hits(page), k=k, offset=offset, terms=terms, threshold=threshold,
            filters=row_filter.spec if row_filter else {},
            matching_rows=row_filter.count if row_filter else len(self.collection),
        )

    def filter_cache(self) -> FilterCache:
        """Compiled metadata filters over this collection (created on first use)."""
        if self._filters is None:
            self._filters = FilterCache(self.collection.column, len(self.collection), self.collection.filter_columns)
        return self._filters

    def duplicates(self, threshold: float = 0.95, max_groups: int = 50) -> Duplicates:
        """Groups of near-duplicate rows (cosine >= threshold over the whole collection), largest first."""
        threshold = check_threshold(0.95 if threshold is None else threshold, MIN_DUPLICATE_THRESHOLD, "threshold")
        max_groups = check_max_groups(max_groups)
        with self._duplicates_lock:  # identical first calls wait for the one search instead of repeating it
            if threshold not in self._duplicates:
                if len(self._duplicates) >= 4:
                    self._duplicates.pop(next(iter(self._duplicates)))
                if len(self.collection) > MAX_DUPLICATE_ROWS:
                    raise ServiceError(
                        f"Near-duplicates are searched over collections of up to {MAX_DUPLICATE_ROWS:,} rows on this hardware "
                        f"(an all-pairs search); this one has {len(self.collection):,}."
                    )
                if self.collection.stored_vectors([0]) is None:
                    raise ServiceError("This collection's index does not keep its vectors, so duplicates cannot be searched.")
                vectors = lambda start, end: self.collection.stored_vectors(np.arange(start, end))  # noqa: E731
                self._duplicates[threshold] = find_duplicates(self.collection.index, vectors, threshold, MAX_GROUPS)
            found = self._duplicates[threshold]
        return Duplicates(found.groups[:max_groups], threshold, found.total_groups, found.pairs, found.seconds)

    def row_vectors(self, rows: Sequence[int], batch_size: int = 32) -> np.ndarray:
        """Vectors of collection rows: the stored ones, else (IVF-PQ, no direct map) re-encoded thumbnails."""
        stored = self.collection.stored_vectors(rows)
        if stored is not None:
            return stored
        parts = [
            self.encoder.encode_images([load_image(self.collection.thumbnail(int(i))) for i in rows[s : s + batch_size]])
            for s in range(0, len(rows), batch_size)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, self.encoder.dim), dtype=np.float32)

    def score(self, image: ImageInput, texts: Sequence[str]) -> list[float]:
        """How well each text describes the image: CLIP cosine in this collection's embedding space, one per text."""
        return image_text_scores(self.encoder, image, texts)

    # -- generation ----------------------------------------------------------------------------------

    def describe(
        self, image: ImageInput, question: str | None = None, k: int = 5, exclude: Sequence[int] = (),
        columns: Sequence[str] = (),
    ) -> Description:
        """Describe an image with the captions of its k nearest neighbours as context (k=0: no retrieval), and
        their values in the metadata ``columns`` (RAG_CONTEXT_COLUMNS) that this collection has."""
        if self.captioner is None:
            raise CaptionerError("No captioner is loaded in this Space (see RAG_CAPTIONER).")
        k = check_int(k, 0, MAX_CONTEXT_K, "context size k")
        if image is None:
            raise InvalidInput("Upload an image to describe.")
        if question is not None and not isinstance(question, str):
            raise InvalidInput("The question must be text.")
        question = " ".join((question or "").split()) or None
        if question and len(question) > MAX_QUESTION_CHARS:
            raise InvalidInput(f"The question is {len(question):,} characters; the limit is {MAX_QUESTION_CHARS}.")
        picture = load_image(image)
        started = time.perf_counter()
        context: list[Hit] = []
        if k > 0:
            context = self.search_vectors(self.encoder.encode_images([picture]), k, exclude=exclude)[0]
        present = [c for c in columns if c in self.collection.extra_columns]
        result = self.captioner.write_description(picture, context, question, columns=present)
        return Description(
            text=result.text, context=context, prompt=result.prompt, captioner=captioner_label(self.captioner),
            seconds=time.perf_counter() - started, context_columns=present, candidates=list(result.candidates),
        )

    # -- map (Explore) -------------------------------------------------------------------------------

    def map_data(self) -> "MapPoints":
        """The collection's map and colour groups (MapMissing when it has none)."""
        from rag.explore.map_api import map_points

        return map_points(self.collection)

    def map_points(self, limit: Any = None) -> dict[str, Any]:
        """/map: compact parallel arrays {"ids", "x", "y", "label_ids", "labels"}, all rows or a sample."""
        from rag.explore.map_api import map_payload

        return map_payload(self.collection, limit)

    def map_rows(self, ids: Any) -> list[dict[str, Any]]:
        """/map_select: details (and thumbnail files) of the chosen rows, with their map position."""
        from rag.explore.map_api import map_details

        return map_details(self.collection, ids, self.cache_dir)

    def info(self) -> dict[str, Any]:
        """What the footer and /info show: collection, revision, rows, models, index, captioner."""
        manifest = self.collection.manifest
        return {
            "collection": self.name,
            "revision": self.commit,
            "requested_revision": (self.revision or "main") if self.commit else None,
            "rows": len(self.collection),
            "embedding_model": manifest.model_id,
            "text_model": self.text_model or manifest.model_id,
            "dim": manifest.dim,
            "index": f"{manifest.index_factory} ({self.collection.index_type})",
            "caption_source": manifest.caption_source,
            "captioner": captioner_label(self.captioner) if self.captioner else None,
            "device": self.encoder.device,
            "quantize": self.quantize,
            "quantize_engine": self.quantize_engine or None,
            "captioner_device": getattr(self.captioner, "device", None),
            "built": manifest.build.get("time"),
            "skipped_at_build": manifest.skipped.get("count", 0),
            "columns": self.collection.extra_columns,
            "load_seconds": round(self.load_seconds, 2),
        }
