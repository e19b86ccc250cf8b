"""Exact search of an ``IndexFlatIP`` reading one byte a dimension: an int8 scan with a per-row error bound picks
the candidates, exact fp32 rescoring (``rag.search.scan.rescore``) ranks them.

The scan copy. Dimension j of the collection spans [vmin_j, vmax_j]; a row x is stored as integers s in
-127..127 with x̂ = mid + step * s (mid = the span's centre, step = span / 254), as FAISS ``QT_8bit_direct_signed``
codes. A query q is folded and rounded to integers too: q' = q * step, t = round(q' / a) in -127..127 with
a = max|q'| / 127. FAISS then computes t · s per row in integer arithmetic (exact: |t · s| < 2^24 for d <= 1024),
and est = q · mid + a (t · s). Since q · x = q · mid + q' · s + q · (x - x̂),

    |q · x - est| <= |q| |x - x̂| + |q' - a t| |s|        (Cauchy-Schwarz, twice)

where |x - x̂| and |s| are measured for every row when the copy is built. With a small slack for the fp32
rounding of the rescoring kernel, every row's exact score lies within est ± err. So:

* L, the k-th largest lower bound (est - err) among the rows the scan returned, is <= the exact k-th score;
* a row whose upper bound est + err is below L cannot be in the top k, not even tied;
* the scan keeps the k + extra best estimates (extra grows with the rows, up to MAX_EXTRA); while the last of them
  still reaches L - max err, the scan is repeated keeping WIDEN times more (past 1/8 of the rows, all are rescored);
* every row whose upper bound reaches L is rescored exactly, and the rows are ranked by score, then id.

The answer is that of exact search, ties included; the bound only decides how many rows are rescored.
"""

from __future__ import annotations

import faiss
import numpy as np

from rag.search.index import search as index_search
from rag.search.scan import ShardPool, flat_vectors, merge_shards, rescore, shard_bounds

MAX_DIM = 1024  # |t . s| <= d * 127 * 127 stays an exact float32 integer (< 2^24) up to here
# estimates kept past k: n / EXTRA_SHARE, within [MIN_EXTRA, MAX_EXTRA]. FAISS's heap makes a thousand almost free
# at 250k rows and it spares nearly every widening; on small collections a re-scan costs less than the big heap.
MIN_EXTRA, MAX_EXTRA, EXTRA_SHARE = 512, 1024, 256
WIDEN = 8  # each widening keeps this many times more estimates
EXHAUSTIVE_SHARE = 8  # once the scan would keep over 1/8 of the rows, every row is rescored instead
ENCODE_CHUNK = 16_384  # rows encoded at a time when building (float32 work arrays of ~32 MB at d = 512)
UNIT = 2.0**-24  # unit roundoff of float32


def _round_up(values: np.ndarray) -> np.ndarray:
    """float32 values at least as large as ``values`` (float64)."""
    return np.nextafter(values.astype(np.float32), np.float32(np.inf))


def _spans(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension minimum and maximum of the rows."""
    low = np.full(vectors.shape[1], np.inf, dtype=np.float32)
    high = np.full(vectors.shape[1], -np.inf, dtype=np.float32)
    for start in range(0, len(vectors), ENCODE_CHUNK * 4):
        chunk = vectors[start : start + ENCODE_CHUNK * 4]
        low, high = np.minimum(low, chunk.min(axis=0)), np.maximum(high, chunk.max(axis=0))
    return low, high


class Int8FlatSearcher:
    """Exact inner-product search of an ``IndexFlatIP``: int8 candidate scan with error bounds, exact rescoring.

    The scan copy takes one byte a dimension plus 8 bytes a row (about a quarter of the fp32 vectors), cut into
    one shard per core for big collections and scanned side by side (``rag.search.scan.ShardPool``).
    """

    def __init__(self, index: faiss.Index, shards: int | None = None) -> None:
        self.index = index
        self.vectors = flat_vectors(index)
        total, dim = self.vectors.shape
        low, high = _spans(self.vectors) if total else (np.zeros(dim, np.float32), np.zeros(dim, np.float32))
        self.mid = (low.astype(np.float64) + high) / 2
        self.step = np.maximum(high.astype(np.float64) - low, 1e-30) / 254
        self._mid32, self._inverse32 = self.mid.astype(np.float32), (1 / self.step).astype(np.float32)
        # encoding in float32 misses the exact x̂ by a few roundings of |x|, |mid| and 127 step per component
        reach = np.maximum(np.abs(low), np.abs(high)).astype(np.float64) + 127 * self.step
        self._decode_error = float(np.linalg.norm(8 * UNIT * reach))
        self._gamma = (dim + 8) * UNIT
        self.residual = np.zeros(total, dtype=np.float32)  # |x - x̂|, rounded up
        self.code_norm = np.zeros(total, dtype=np.float32)  # |s|, rounded up
        self.max_norm = 0.0
        self.shards = [(lo, self._encode(lo, hi)) for lo, hi in shard_bounds(total, shards)]
        self.max_residual = float(self.residual.max()) if total else 0.0
        self.max_code_norm = float(self.code_norm.max()) if total else 0.0
        self._pool = ShardPool(len(self.shards))

    @property
    def ntotal(self) -> int:
        """Rows searched (so ``rag.search.filtered.search_page`` can page through this searcher)."""
        return int(self.index.ntotal)

    @property
    def nbytes(self) -> int:
        """RAM of the scan copy: the codes and the two per-row norms."""
        return sum(int(shard.codes.size()) for _, shard in self.shards) + self.residual.nbytes + self.code_norm.nbytes

    def _encode(self, lo: int, hi: int) -> faiss.IndexScalarQuantizer:
        """Codes of rows [lo, hi) written straight into a ``QT_8bit_direct_signed`` index, and their row norms."""
        dim = self.vectors.shape[1]
        shard = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_8bit_direct_signed, faiss.METRIC_INNER_PRODUCT)
        shard.codes.resize((hi - lo) * dim)
        codes = faiss.rev_swig_ptr(shard.codes.data(), (hi - lo) * dim).reshape(hi - lo, dim) if hi > lo else None
        for start in range(lo, hi, ENCODE_CHUNK):
            rows = self.vectors[start : min(start + ENCODE_CHUNK, hi)]
            done = slice(start, start + len(rows))
            self.max_norm = max(self.max_norm, float(np.sqrt(np.einsum("ij,ij->i", rows, rows).max())) * (1 + self._gamma))
            ints = np.clip(np.rint((rows - self._mid32) * self._inverse32), -127, 127)
            codes[start - lo : start - lo + len(rows)] = (ints + 128).astype(np.uint8)
            self.code_norm[done] = _round_up(np.sqrt(np.einsum("ij,ij->i", ints, ints, dtype=np.float64)))
            errors = rows - (self._mid32 + ints * self.step.astype(np.float32))
            norms = np.sqrt(np.einsum("ij,ij->i", errors, errors, dtype=np.float64)) * (1 + 2 * self._gamma)
            self.residual[done] = _round_up(norms + self._decode_error)
        shard.ntotal = hi - lo
        return shard

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) per query, equal to exact search; a batch is one FAISS call per shard."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim == 1:
            queries = queries[None, :]
        total = self.ntotal
        if total == 0 or len(queries) == 0:
            return index_search(self.index, queries, k)
        k = max(1, min(int(k), total))
        folded = queries.astype(np.float64) * self.step
        scale = np.abs(folded).max(axis=1) / 127
        scale[scale == 0] = 1.0
        ints = np.rint(folded / scale[:, None])
        bounds = {"scale": scale, "offset": queries.astype(np.float64) @ self.mid,
                  "norm": np.linalg.norm(queries.astype(np.float64), axis=1),
                  "rounding": np.linalg.norm(folded - scale[:, None] * ints, axis=1)}
        ints = ints.astype(np.float32)
        wanted = min(total, k + min(MAX_EXTRA, max(MIN_EXTRA, total // EXTRA_SHARE)))
        found = self._scan(ints, wanted)
        out_scores, out_ids = np.empty((len(queries), k), np.float32), np.empty((len(queries), k), np.int64)
        for q, query in enumerate(queries):
            row_bounds = {name: float(values[q]) for name, values in bounds.items()}
            candidates = self._candidates(ints[q], row_bounds, found[q], k, wanted)
            out_scores[q], out_ids[q] = (a[0] for a in rescore(self.vectors, query, candidates, k))
        return out_scores, out_ids

    def _scan(self, ints: np.ndarray, wanted: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per query, the ``wanted`` best (integer dot, row id), best first: one FAISS search per shard."""
        found = self._pool.map(lambda shard: shard.search(ints, min(wanted, shard.ntotal)), [s for _, s in self.shards])
        offsets = [lo for lo, _ in self.shards]
        return [merge_shards([(d[q], i[q]) for d, i in found], offsets, wanted) for q in range(len(ints))]

    def _candidates(self, ints: np.ndarray, bounds: dict[str, float], found: tuple[np.ndarray, np.ndarray], k: int,
                    wanted: int) -> np.ndarray:
        """Every row whose upper bound reaches the k-th best lower bound; the scan widens until that is known."""
        slack = 2 * self._gamma * bounds["norm"] * self.max_norm  # the rescoring kernel's fp32 rounding
        most = bounds["norm"] * self.max_residual + bounds["rounding"] * self.max_code_norm + slack
        while True:
            dots, ids = found
            estimates = bounds["offset"] + bounds["scale"] * dots.astype(np.float64)
            errors = (bounds["norm"] * self.residual[ids] + bounds["rounding"] * self.code_norm[ids]) + slack
            lower = estimates - errors
            floor = float(np.partition(lower, len(lower) - k)[len(lower) - k])  # the k-th largest lower bound
            if len(ids) == self.ntotal or estimates[-1] < floor - most:
                return ids[estimates + errors >= floor]  # every row left out has est < L - max err
            wanted *= WIDEN
            if wanted * EXHAUSTIVE_SHARE > self.ntotal:
                return np.arange(self.ntotal)
            found = self._scan(ints[None, :], wanted)[0]
