"""FAISS index over L2-normalised vectors: build from a factory string, search, save, memory-mapped load."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import faiss
import numpy as np

from rag.errors import CollectionError

# Exact search stays fast enough up to here on 2 vCPU (~40 ms per query at 250k x 512-d).
AUTO_FLAT_MAX_ROWS = 250_000
# HNSW32 costs ~2.3 KB per 512-d vector: 3M rows ~ 7 GB, within a 16 GB CPU-basic Space.
AUTO_HNSW_MAX_ROWS = 3_000_000
TRAIN_SAMPLE_MAX = 100_000
DEFAULT_SEARCH_PARAMS = {"HNSW": "efSearch=128", "IVF": "nprobe=32"}
# Bounds for search parameters read from a manifest: beyond these a query only burns CPU.
SEARCH_PARAM_BOUNDS = {"efSearch": (1, 1024), "nprobe": (1, 1024)}

log = logging.getLogger(__name__)


def auto_factory(rows: int, dim: int) -> str:
    """Pick an index for a collection size: exact Flat, then HNSW32, then IVF with 8-bit scalar codes.

    Beyond HNSW's memory budget we compress with SQ8 (4x) rather than PQ: on clustered 512-d vectors
    (benchmarks/search.py) IVF-SQ8 keeps recall@10 ~0.97 where IVF-PQ64 drops below 0.4.
    """
    if rows <= AUTO_FLAT_MAX_ROWS:
        return "Flat"
    if rows <= AUTO_HNSW_MAX_ROWS:
        return "HNSW32,Flat"
    nlist = 1 << int(math.log2(4 * math.sqrt(rows)))
    return f"IVF{nlist},SQ8"


def default_search_params(factory: str) -> str:
    """Search-time parameters (FAISS ParameterSpace syntax) that keep approximate indexes near exact recall."""
    for key, params in DEFAULT_SEARCH_PARAMS.items():
        if key in factory:
            return params
    return ""


def build_index(vectors: np.ndarray, factory: str = "Flat", seed: int = 0) -> faiss.Index:
    """Build an inner-product index (cosine on normalised vectors); trained indexes train on a sample."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) == 0:
        raise CollectionError("Cannot build an index from no vectors.")
    try:
        index = faiss.index_factory(vectors.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise CollectionError(f"FAISS does not understand the index factory {factory!r}: {exc}") from exc
    if not index.is_trained:
        rng = np.random.default_rng(seed)
        sample_size = min(len(vectors), TRAIN_SAMPLE_MAX)
        sample = vectors[np.sort(rng.choice(len(vectors), size=sample_size, replace=False))]
        index.train(sample)
    index.add(vectors)
    apply_search_params(index, default_search_params(factory))
    return index


def clamp_search_params(index: faiss.Index, params: str) -> str:
    """Keep only known search parameters, within sane bounds (a manifest from a stranger's repo is untrusted)."""
    kept = []
    for item in filter(None, (p.strip() for p in str(params or "").split(","))):
        name, _, value = item.partition("=")
        if name not in SEARCH_PARAM_BOUNDS:
            raise CollectionError(f"The manifest sets an unknown search parameter {name!r}.")
        try:
            number = int(value)
        except ValueError:
            raise CollectionError(f"The manifest's search parameter {name} is not a whole number: {value!r}.") from None
        low, high = SEARCH_PARAM_BOUNDS[name]
        if not low <= number <= high:
            log.warning("search parameter %s=%s from the manifest clamped to [%d, %d]", name, number, low, high)
            number = min(max(number, low), high)
        ivf = faiss.try_extract_index_ivf(index)
        if name == "nprobe" and ivf is not None:
            number = min(number, ivf.nlist)  # probing more lists than exist changes nothing
        kept.append(f"{name}={number}")
    return ",".join(kept)


def apply_search_params(index: faiss.Index, params: str) -> None:
    """Set efSearch / nprobe style parameters, if any (clamped, see clamp_search_params)."""
    params = clamp_search_params(index, params)
    if params:
        faiss.ParameterSpace().set_index_parameters(index, params)


def make_direct_map(index: faiss.Index) -> None:
    """Give an IVF index its id -> list map so ``reconstruct`` works (stored vectors for "more like this")."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None and ivf.direct_map.type == faiss.DirectMap.NoMap:
        ivf.make_direct_map()


def can_reconstruct(index: faiss.Index) -> bool:
    """Whether the index gives back stored vectors: IVF with a direct map, or a probe of row 0 for the others."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        return ivf.direct_map.type != faiss.DirectMap.NoMap
    if index.ntotal == 0:
        return False
    try:
        index.reconstruct(0)
    except RuntimeError:  # FAISS says "reconstruct not implemented" for this index type
        return False
    return True


def save_index(index: faiss.Index, path: Path) -> None:
    """Write the index to ``path``."""
    faiss.write_index(index, str(path))


def load_index(path: Path, params: str = "") -> faiss.Index:
    """Read an index memory-mapped where FAISS allows it, so start-up does not copy it into RAM."""
    flags = [getattr(faiss, "IO_FLAG_MMAP_IFC", None), getattr(faiss, "IO_FLAG_MMAP", None), 0]
    last_error: Exception | None = None
    for flag in flags:
        if flag is None:
            continue
        try:
            index = faiss.read_index(str(path), flag)
            break
        except RuntimeError as exc:
            last_error = exc
    else:
        raise CollectionError(f"{path.name} is not a readable FAISS index: {last_error}")
    apply_search_params(index, params)
    make_direct_map(index)
    return index


def search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, row ids) per query; rows FAISS could not fill (id -1) are left for the caller to drop."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if queries.ndim == 1:
        queries = queries[None, :]
    k = max(1, min(int(k), index.ntotal))
    return index.search(queries, k)


def index_type_name(index: faiss.Index) -> str:
    """A short human name for the index type (``IndexFlatIP``, ``IndexHNSWFlat``...)."""
    return type(faiss.downcast_index(index)).__name__
