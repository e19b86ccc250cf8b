"""Held-out retrieval before and after tuning: cross-modal and unimodal ranks on the rows training never saw.

Among the held-out rows only (their captions x their images, like the Flickr30k 1k test split), with a row's
*group* deciding what matches (same label, else the row's own image / captions; see rag.finetune.data):

* ``text_to_image`` each held-out caption ranks the held-out images;
* ``image_to_text`` each held-out image ranks the held-out captions (the best of its matches counts);
* ``image_to_image`` the image-only baseline: each image ranks the other held-out images (needs a peer);
* ``text_to_text`` the text-only baseline: each caption ranks the other held-out captions (needs a peer).

Recall@1/5/10, MRR and median rank come from rag.metrics (ties counted pessimistically). The scores are computed
in blocks of queries, so a 6 000-row held-out split of Flickr30k never holds a full score matrix.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rag import metrics

TASKS = {
    "text_to_image": "text → image",
    "image_to_text": "image → text",
    "image_to_image": "image → image (image-only baseline)",
    "text_to_text": "text → text (text-only baseline)",
}
BLOCK = 2048
BELOW_ANY_COSINE = -3.0  # a query's own entry scores below every real cosine


def _ranks(queries: np.ndarray, items: np.ndarray, query_groups: np.ndarray, item_groups: np.ndarray,
           exclude_self: bool = False) -> np.ndarray:
    """Rank of each query's best match among ``items`` (``exclude_self``: query i is item i and is left out)."""
    out = []
    for start in range(0, len(queries), BLOCK):
        scores = queries[start : start + BLOCK] @ items.T
        relevant = query_groups[start : start + BLOCK, None] == item_groups[None, :]
        if exclude_self:
            own = np.arange(start, start + len(scores))
            scores[own - start, own] = BELOW_ANY_COSINE
            relevant[own - start, own] = False
        out.append(metrics.ranks_from_scores(scores, relevant))
    return np.concatenate(out) if out else np.zeros(0)


def _summary(ranks: np.ndarray) -> dict[str, Any] | None:
    if len(ranks) == 0:
        return None
    out: dict[str, Any] = metrics.rank_summary(ranks)
    out["queries"] = int(len(ranks))
    return out


def heldout_metrics(text_vectors: np.ndarray, image_vectors: np.ndarray, owners: np.ndarray, groups: np.ndarray,
                    heldout: np.ndarray) -> dict[str, dict[str, Any] | None]:
    """The four retrieval tasks among the held-out rows (None for a baseline no query has a peer for)."""
    heldout = np.asarray(heldout, dtype=np.int64)
    captions = np.flatnonzero(np.isin(owners, heldout))
    texts, images = text_vectors[captions], image_vectors[heldout]
    text_groups, image_groups = groups[owners[captions]], groups[heldout]
    results = {
        "text_to_image": _summary(_ranks(texts, images, text_groups, image_groups)),
        "image_to_text": _summary(_ranks(images, texts, image_groups, text_groups)),
    }
    for name, vectors, own_groups in (("image_to_image", images, image_groups), ("text_to_text", texts, text_groups)):
        peers = (own_groups[:, None] == own_groups[None, :]).sum(axis=1) > 1
        results[name] = _summary(_ranks(vectors, vectors, own_groups, own_groups, exclude_self=True)[peers])
    return results


def cross_modal_mrr(result: dict[str, dict[str, Any] | None]) -> float:
    """The figure tuning is judged by: the mean MRR of text -> image and image -> text."""
    return float(np.mean([result[name]["MRR"] for name in ("text_to_image", "image_to_text")]))


def _cell(before: dict[str, Any] | None, after: dict[str, Any] | None, key: str) -> str:
    if before is None or after is None:
        return "n/a"
    if key == "median_rank":
        show = lambda v: "inf" if v is None else f"{v:g}"  # noqa: E731
    else:
        show = lambda v: f"{v:.3f}"  # noqa: E731
    return f"{show(before[key])} → {show(after[key])}"


def render_table(before: dict[str, Any], after: dict[str, Any]) -> str:
    """A Markdown table with "before → after" in every cell."""
    keys = ("R@1", "R@5", "R@10", "MRR", "median_rank")
    lines = ["| task | queries | " + " | ".join(k.replace("_", " ") for k in keys) + " |",
             "| --- | ---: | " + " | ".join("---:" for _ in keys) + " |"]
    for name, title in TASKS.items():
        queries = (after.get(name) or {}).get("queries", 0)
        cells = " | ".join(_cell(before.get(name), after.get(name), key) for key in keys)
        lines.append(f"| {title} | {queries} | {cells} |")
    return "\n".join(lines)
