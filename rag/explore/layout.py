"""A 2-D layout ("map") of a collection's vectors: PCA to 50 dimensions, then openTSNE or UMAP (cosine), seeded.

openTSNE is the default: measured by ``benchmarks/map_layout.py`` against UMAP (README, *Explore*). It is a
small wheel on top of scikit-learn (which sentence-transformers already brings), so the Space can build its
default collection with a map; UMAP (``requirements-build.txt``) also needs numba, whose compilation alone
takes ~25 s per process. Same vectors + same seed + same method give the same map, so two builds agree.
The layout libraries are imported here only, on demand.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import numpy as np
from tqdm.auto import tqdm

from rag.errors import RagError

log = logging.getLogger(__name__)

METHODS = ("tsne", "umap")
DEFAULT_METHOD = "tsne"
DEFAULT_SEED = 42
PCA_DIMS = 50
# early exaggeration, then normal optimisation: openTSNE's defaults are (250, 500); 250 more iterations cost
# 35% of the time at 100k rows and changed neither 10-NN label agreement nor trustworthiness (benchmarks/map_layout.py)
TSNE_ITERS = (250, 250)
CALLBACK_EVERY = 25


class LayoutUnavailable(RagError):
    """The optional map libraries are not installed."""


def reduce_dims(vectors: np.ndarray, dims: int = PCA_DIMS, seed: int = DEFAULT_SEED) -> np.ndarray:
    """PCA of L2-normalised vectors to ``dims`` components (fewer when the data has fewer), float32."""
    from sklearn.decomposition import PCA

    data = np.asarray(vectors, dtype=np.float32)
    data = data / np.maximum(np.linalg.norm(data, axis=1, keepdims=True), 1e-12)
    components = min(dims, data.shape[0], data.shape[1])
    if components >= data.shape[1]:
        return data
    return PCA(n_components=components, random_state=seed).fit_transform(data).astype(np.float32)


def cosine_neighbours(data: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours of every row by cosine (FAISS inner product on normalised rows): ids and
    1 - cosine distances, the row itself left out. Exact search is deterministic and, on 2 vCPU, took 13 s
    for 100k rows in 50-d where openTSNE's own approximate (Annoy) search took 48 s."""
    import faiss

    unit = np.ascontiguousarray(data / np.maximum(np.linalg.norm(data, axis=1, keepdims=True), 1e-12), dtype=np.float32)
    index = faiss.IndexFlatIP(unit.shape[1])
    index.add(unit)
    scores, ids = index.search(unit, k + 1)
    keep = ids != np.arange(len(unit))[:, None]  # drop each row itself (wherever ties put it)
    keep[keep.sum(axis=1) > k, -1] = False
    ids, scores = ids[keep].reshape(len(unit), k), scores[keep].reshape(len(unit), k)
    return ids.astype(np.int64), np.maximum(0.0, 1.0 - scores).astype(np.float64)


def _tsne(data: np.ndarray, seed: int, progress: bool, threads: int,
          should_stop: Callable[[], bool] | None = None) -> np.ndarray:
    from openTSNE import TSNE
    from openTSNE.affinity import PerplexityBasedNN
    from openTSNE.nearest_neighbors import PrecomputedNeighbors

    bar = tqdm(total=sum(TSNE_ITERS), desc="map (t-SNE)", unit="it", disable=not progress, dynamic_ncols=True)

    def tick(iteration: int, error: float, embedding: Any) -> bool:
        bar.update(CALLBACK_EVERY)
        return bool(should_stop and should_stop())  # True ends the optimisation early (a cancelled build)

    perplexity = float(min(30.0, max(1.0, (len(data) - 1) / 3)))
    neighbours = min(len(data) - 1, int(3 * perplexity))  # openTSNE's own choice of k for a perplexity
    try:
        affinities = PerplexityBasedNN(perplexity=perplexity, knn_index=PrecomputedNeighbors(
            *cosine_neighbours(data, neighbours)), n_jobs=threads, random_state=seed)
        tsne = TSNE(n_jobs=threads, random_state=seed, early_exaggeration_iter=TSNE_ITERS[0], n_iter=TSNE_ITERS[1],
                    callbacks=tick, callbacks_every_iters=CALLBACK_EVERY)
        return np.asarray(tsne.fit(data, affinities=affinities), dtype=np.float32)
    finally:
        bar.close()


def _umap(data: np.ndarray, seed: int, progress: bool, threads: int) -> np.ndarray:
    """UMAP on the same exact cosine neighbours as t-SNE gets (UMAP counts each row as its own first neighbour).
    Seeded UMAP runs single-threaded whatever ``threads`` says (umap-learn overrides n_jobs when seeded)."""
    import warnings

    import umap

    neighbours = int(min(15, len(data) - 1))
    ids, distances = cosine_neighbours(data, neighbours - 1)
    own = np.arange(len(data))[:, None]
    knn = (np.hstack([own, ids]), np.hstack([np.zeros((len(data), 1)), distances]).astype(np.float32))
    model = umap.UMAP(n_neighbors=neighbours, min_dist=0.1, metric="cosine", random_state=seed, n_jobs=1,
                      precomputed_knn=knn, tqdm_kwds={"disable": not progress, "desc": "map (UMAP epochs)"})
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*knn_search_index.*")
        return np.asarray(model.fit_transform(data), dtype=np.float32)


def compute_layout(
    vectors: np.ndarray, method: str = DEFAULT_METHOD, seed: int = DEFAULT_SEED, progress: bool = True,
    threads: int = 2, should_stop: Callable[[], bool] | None = None,
) -> np.ndarray:
    """An (n, 2) float32 layout of ``vectors``, centred and scaled to [-1, 1]; deterministic for a given seed.
    ``should_stop`` is polled every few t-SNE iterations: True ends the layout early (the caller then cancels)."""
    if method not in METHODS:
        raise RagError(f"Unknown map method {method!r}; choose one of {', '.join(METHODS)}.")
    vectors = np.asarray(vectors, dtype=np.float32)
    n = len(vectors)
    if n < 4:  # too few points for a neighbourhood embedding: spread them on a line
        return np.column_stack([np.linspace(-1, 1, n) if n > 1 else np.zeros(n), np.zeros(n)]).astype(np.float32)
    try:
        data = reduce_dims(vectors, seed=seed)
        log.info("map: %s layout of %d rows (PCA to %d dims, seed %d)", method, n, data.shape[1], seed)
        xy = _tsne(data, seed, progress, threads, should_stop) if method == "tsne" else _umap(data, seed, progress, threads)
    except ImportError as exc:
        raise LayoutUnavailable(
            f"Computing a map needs {exc.name}, which is not installed: pip install -r requirements.txt "
            "(openTSNE) or -r requirements-build.txt (umap-learn)"
        ) from exc
    return normalise(xy)


def normalise(xy: np.ndarray) -> np.ndarray:
    """Centre a layout and scale its larger half-extent to 1 (so maps of any method share one scale)."""
    xy = np.asarray(xy, dtype=np.float64)
    xy = xy - (xy.max(axis=0) + xy.min(axis=0)) / 2
    extent = float(np.abs(xy).max()) or 1.0
    return (xy / extent).astype(np.float32)
