"""What tuning learns from and is judged on: a collection's human caption/image pairs, the held-out split (by row,
never by caption) and the base model's vectors of both sides.

Captions a model wrote at build time (``--caption-missing``) are not ground truth: they are neither trained on nor
used as held-out queries. Each row's *group* is its label when it has one, else the row alone: rows of a group are
each other's matches (a caption of a "kawung" image matches every "kawung" image), for training and for scoring.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from rag.errors import UsageError

MIN_ROWS = 10  # rows with captions needed to split off held-out rows and still train on something
TEXT_BATCH = 256
IMAGE_BATCH = 64

Progress = Callable[[str, float], None]


@dataclass
class Pairs:
    """Caption/image pairs of a collection with the base model's vectors; captions index ``texts``/``owners``."""

    texts: list[str]
    owners: np.ndarray  # caption -> its row
    groups: np.ndarray  # row -> group code (label code, or a code of the row's own when unlabelled)
    labelled: bool  # every row with captions has a label (relevance is "same label", else "same image")
    text_vectors: np.ndarray  # base text vector of each caption
    image_vectors: np.ndarray  # base image vector of every row of the collection

    @property
    def caption_rows(self) -> np.ndarray:
        """The rows that have at least one human caption, ascending."""
        return np.unique(self.owners)

    def captions_of(self, rows: np.ndarray) -> np.ndarray:
        """Indices of the captions that belong to ``rows``."""
        return np.flatnonzero(np.isin(self.owners, rows))


def human_captions(collection: Any) -> tuple[list[str], np.ndarray]:
    """(captions, owner row of each): every non-empty caption of every row not captioned by a model."""
    generated = collection.column("captions_generated").to_pylist()
    texts, owners = [], []
    for row, captions in enumerate(collection.all_captions()):
        if generated[row]:
            continue
        for caption in captions:
            if caption and caption.strip():
                texts.append(" ".join(caption.split()))
                owners.append(row)
    return texts, np.asarray(owners, dtype=np.int64)


def row_groups(labels: list[str | None]) -> np.ndarray:
    """Per row: the index of its label among the sorted labels, or a code no other row has when it has none."""
    names = sorted({label.strip() for label in labels if isinstance(label, str) and label.strip()})
    lookup = {name: i for i, name in enumerate(names)}
    return np.array([lookup[label.strip()] if isinstance(label, str) and label.strip() else len(names) + row
                     for row, label in enumerate(labels)], dtype=np.int64)


def split_rows(rows: np.ndarray, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, held-out rows), both ascending: a seeded random ``holdout`` fraction of the rows is held out."""
    rows = np.unique(np.asarray(rows, dtype=np.int64))
    if not 0.0 < holdout < 1.0:
        raise UsageError(f"--holdout must be a fraction between 0 and 1 (e.g. 0.2), not {holdout}.")
    if len(rows) < MIN_ROWS:
        raise UsageError(f"Tuning needs at least {MIN_ROWS} images with captions; this collection has {len(rows)}.")
    held_count = min(len(rows) - 2, max(2, int(round(holdout * len(rows)))))
    shuffled = np.random.default_rng(seed).permutation(rows)
    return np.sort(shuffled[held_count:]), np.sort(shuffled[:held_count])


def base_image_vectors(collection: Any, encoder: Any, progress: Progress | None = None) -> np.ndarray:
    """Every row's image vector from the base model: read back from the index, else re-encoded from thumbnails."""
    stored = collection.stored_vectors(np.arange(len(collection), dtype=np.int64))
    if stored is not None:
        return stored
    from io import BytesIO

    from PIL import Image

    parts = []
    for start in range(0, len(collection), IMAGE_BATCH):
        rows = range(start, min(len(collection), start + IMAGE_BATCH))
        images = [Image.open(BytesIO(collection.thumbnail(row))).convert("RGB") for row in rows]
        parts.append(encoder.encode_images(images))
        if progress:
            progress("encoding images", rows.stop / len(collection))
    return np.concatenate(parts)


def encode_captions(encoder: Any, texts: list[str], progress: Progress | None = None) -> np.ndarray:
    """The base text vector of each caption, in batches (progress reported per batch)."""
    parts = []
    for start in range(0, len(texts), TEXT_BATCH):
        parts.append(encoder.encode_texts(texts[start : start + TEXT_BATCH]))
        if progress:
            progress("encoding captions", min(1.0, (start + TEXT_BATCH) / len(texts)))
    return np.concatenate(parts) if parts else np.zeros((0, encoder.dim), dtype=np.float32)


def load_pairs(collection: Any, encoder: Any, progress: Progress | None = None) -> Pairs:
    """The collection's human caption/image pairs with base vectors; refused when it has too few captioned rows."""
    texts, owners = human_captions(collection)
    if len(np.unique(owners)) < MIN_ROWS:
        raise UsageError(
            f"Tuning needs at least {MIN_ROWS} images with captions written by people; this collection has "
            f"{len(np.unique(owners))}. Build it with a captions file or a dataset caption column."
        )
    labels = collection.all_labels()
    groups = row_groups(labels)
    labelled = all(isinstance(labels[row], str) and labels[row].strip() for row in np.unique(owners))
    text_vectors = encode_captions(encoder, texts, progress)
    image_vectors = base_image_vectors(collection, encoder, progress)
    return Pairs(texts, owners, groups, labelled, text_vectors, image_vectors)

