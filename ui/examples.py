"""Example queries drawn from the served collection (its labels and short captions), not a fixed list.

Indonesian examples are offered only when the text encoder reads more than English (a multilingual model).
"""

from __future__ import annotations

import logging

import pyarrow.compute as pc

from rag.pipeline import Pipeline

log = logging.getLogger("ui")

MAX_CAPTION_CHARS = 48
MAX_LABEL_CHOICES = 200
INDONESIAN_EXAMPLES = ["anjing bermain di pantai", "kucing mesir"]


def frequent_labels(pipeline: Pipeline, limit: int = MAX_LABEL_CHOICES) -> list[str]:
    """The collection's labels, most frequent first (the label filter's choices)."""
    counts = pc.value_counts(pipeline.collection.column("label")).to_pylist()
    ranked = sorted((c for c in counts if c["values"]), key=lambda c: (-c["counts"], c["values"]))
    return [c["values"] for c in ranked[:limit]]


def short_captions(pipeline: Pipeline, count: int) -> list[str]:
    """A few short captions spread over the collection."""
    rows = len(pipeline.collection)
    picked = sorted({i * rows // (4 * count) for i in range(4 * count)}) if rows else []
    found: list[str] = []
    for row in pipeline.collection.rows(picked):
        caption = next((c for c in row["captions"] if 3 <= len(c) <= MAX_CAPTION_CHARS), None)
        if caption and caption.lower() not in {f.lower() for f in found}:
            found.append(caption)
        if len(found) == count:
            break
    return found


def is_multilingual(pipeline: Pipeline) -> bool:
    """Whether the text encoder reads more than English (e.g. clip-ViT-B-32-multilingual-v1)."""
    return "multilingual" in (pipeline.text_model or pipeline.collection.manifest.model_id or "").lower()


def text_examples(pipeline: Pipeline | None, count: int = 5) -> list[str]:
    """Labels and short captions of the collection (+ Indonesian ones when the text model is multilingual)."""
    if pipeline is None:
        return []
    try:
        labels = frequent_labels(pipeline, 3)
        examples = labels + short_captions(pipeline, count - len(labels))
    except Exception:  # examples are a nicety; never block start-up on them
        log.warning("could not draw example queries from the collection", exc_info=True)
        return []
    examples = list(dict.fromkeys(examples))[:count]
    return examples + (INDONESIAN_EXAMPLES if is_multilingual(pipeline) else [])


def search_examples(pipeline: Pipeline | None) -> list[str]:
    """Examples of the query language built from the collection: a minus, a weight, a row."""
    if pipeline is None or not len(pipeline.collection):
        return []
    words = text_examples(pipeline, 3)
    out = []
    if len(words) >= 2:
        out.append(f'"{words[0]}" - "{words[1]}"')
        out.append(f'2*"{words[1]}" + {words[0]}')
    out.append(f"#{len(pipeline.collection) // 2}")
    if words:
        out.append(f'#0 + 0.5*"{words[0]}"')
    return out

