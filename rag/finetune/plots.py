"""The seed's similarity-matrix plot, before and after tuning: held-out captions (rows) x held-out images (columns).

Drawn with Pillow (no plotting library is needed offline or on CPU basic): two heat maps side by side, rows and
columns in the same group order, so a model that has learned the collection's words shows a bright diagonal of
blocks. The matrices themselves are written as .npy next to the PNG, with the row ids and captions of the axes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

MAX_ROWS = 24
CELL = 12
MARGIN = 28
# viridis at 0, .25, .5, .75, 1
RAMP = np.array([(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)], dtype=np.float64)


def pick_rows(heldout: np.ndarray, groups: np.ndarray, limit: int = MAX_ROWS) -> np.ndarray:
    """Up to ``limit`` held-out rows taken round-robin over their groups, then sorted by group."""
    by_group: dict[int, list[int]] = {}
    for row in np.asarray(heldout, dtype=np.int64):
        by_group.setdefault(int(groups[row]), []).append(int(row))
    picked: list[int] = []
    while len(picked) < limit and any(by_group.values()):
        for members in by_group.values():
            if members and len(picked) < limit:
                picked.append(members.pop(0))
    return np.array(sorted(picked, key=lambda r: (int(groups[r]), r)), dtype=np.int64)


def colour(values: np.ndarray) -> np.ndarray:
    """Map values in 0..1 to viridis RGB (uint8)."""
    position = np.clip(values, 0.0, 1.0) * (len(RAMP) - 1)
    low = np.minimum(position.astype(int), len(RAMP) - 2)
    weight = (position - low)[..., None]
    return (RAMP[low] * (1 - weight) + RAMP[low + 1] * weight).round().astype(np.uint8)


def _panel(matrix: np.ndarray, title: str) -> Image.Image:
    low, high = float(matrix.min()), float(matrix.max())
    scaled = (matrix - low) / max(high - low, 1e-9)
    heat = Image.fromarray(colour(scaled), "RGB").resize((matrix.shape[1] * CELL, matrix.shape[0] * CELL),
                                                          Image.Resampling.NEAREST)
    panel = Image.new("RGB", (heat.width + 8, heat.height + MARGIN + 6), "white")
    draw = ImageDraw.Draw(panel)
    draw.text((4, 2), title, fill="black")
    draw.text((4, 14), f"cosine {low:.2f} .. {high:.2f}", fill=(80, 80, 80))
    panel.paste(heat, (4, MARGIN))
    return panel


def similarity_png(before: np.ndarray, after: np.ndarray, path: Path) -> Path:
    """Write the before/after heat maps side by side as one PNG."""
    left, right = _panel(before, "before: zero-shot"), _panel(after, "after: tuned")
    image = Image.new("RGB", (left.width + right.width + 12, max(left.height, right.height)), "white")
    image.paste(left, (0, 0))
    image.paste(right, (left.width + 12, 0))
    image.save(path, format="PNG")
    return path


def write_similarity(folder: Path, rows: np.ndarray, captions: list[str], before: tuple[np.ndarray, np.ndarray],
                     after: tuple[np.ndarray, np.ndarray]) -> dict[str, Any]:
    """Write similarity.png, similarity_before.npy, similarity_after.npy and similarity_axes.json into ``folder``.

    ``before`` / ``after`` are (caption vectors, image vectors) of ``rows``, one caption per row, in order.
    """
    folder.mkdir(parents=True, exist_ok=True)
    matrices = {name: texts @ images.T for name, (texts, images) in (("before", before), ("after", after))}
    for name, matrix in matrices.items():
        np.save(folder / f"similarity_{name}.npy", matrix.astype(np.float32))
    (folder / "similarity_axes.json").write_text(
        json.dumps({"rows": [int(r) for r in rows], "captions": captions}, ensure_ascii=False, indent=1), encoding="utf-8")
    similarity_png(matrices["before"], matrices["after"], folder / "similarity.png")
    return {"png": "similarity.png", "rows": len(rows)}
