"""Write a collection of N generated vectors and rows through rag.collection.reader, without encoding images.

Start-up and end-to-end benchmarks need 30k-1M row collections; encoding real images for them would take
hours on 2 vCPU, and the weights/pixels do not change load or search time.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from rag.collection.reader import DATA_DIR, Manifest
from rag.collection.writer import rows_to_table, seal_collection, write_table
from rag.search.index import build_index, default_search_params

SHARD_ROWS = 50_000


def _thumbnail(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(buffer, format="JPEG", quality=70)
    return buffer.getvalue()


def write_synthetic_collection(out: Path, vectors: np.ndarray, model_id: str, factory: str = "Flat") -> Path:
    """A valid format-1 collection whose row i holds vector i, two captions, a label and a ~5 KB thumbnail."""
    if out.exists():
        shutil.rmtree(out)
    (out / DATA_DIR).mkdir(parents=True)
    thumbs = [_thumbnail(i) for i in range(16)]
    for shard, start in enumerate(range(0, len(vectors), SHARD_ROWS)):
        stop = min(len(vectors), start + SHARD_ROWS)
        rows = [
            {"thumbnail": thumbs[i % 16], "captions": [f"synthetic image {i}", f"cluster member {i % 97}"],
             "label": f"class {i % 100}", "source": f"synthetic/{i}.jpg", "extra": {"split": "bench"}}
            for i in range(start, stop)
        ]
        write_table(rows_to_table(rows, start, ["split"]), out / DATA_DIR / f"metadata-{shard:05d}.parquet")
    index = build_index(vectors, factory)
    manifest = Manifest(model={"id": model_id, "revision": None}, dim=vectors.shape[1], rows=len(vectors),
                        index_factory=factory, search_params=default_search_params(factory),
                        source={"kind": "synthetic", "name": "benchmarks/synthetic.py"}, columns=["split"])
    seal_collection(out, index, manifest)
    return out
