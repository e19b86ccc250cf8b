"""The ``map`` evaluation task: how well the collection's 2-D map keeps the neighbourhoods of the embedding space.

On a seeded sample of rows (``--sample``, default 2000): the share of each row's 10 nearest neighbours
that carry its label, on the map (euclidean) and in the embedding space (cosine), and scikit-learn's
``trustworthiness`` (1 = no point on the map has neighbours that are far apart in the embedding space).
Neighbours are looked up within the sample in both spaces, so the two agreements compare like with like.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rag import metrics
from rag.explore.map_file import read_map
from .run import EvalRun
from .tasks import register
from .truth import sample_rows

DEFAULT_MAP_ROWS = 2000
MAP_K = 10


@register("map", "map (2-D layout)")
def task_map(ctx: EvalRun) -> dict[str, Any]:
    """k-NN label agreement on the map vs in the embedding space, and trustworthiness, on a row sample."""
    xy = read_map(ctx.pipeline.collection)
    rows = sample_rows(np.arange(ctx.truth.rows), ctx.args.sample or DEFAULT_MAP_ROWS, ctx.args.seed, "map")
    labels = [ctx.truth.labels[r] for r in rows]
    result = metrics.map_quality(ctx.images.get(rows), xy[rows], labels, k=MAP_K, sample=len(rows))
    record = ctx.pipeline.collection.manifest.build.get("map", {})
    result.update(method=record.get("method"), seed=record.get("seed"), query_vectors=ctx.images.source)
    if "label_agreement_map" not in result:
        result["note"] = "too few labelled rows for the label agreement"
    return result
