"""Test data builders: a folder of generated shape images with a captions file, and collections from it."""

from __future__ import annotations

import csv
from pathlib import Path

from testkit.tiny_models import make_shape_images

from rag.ingest.builder import BuildOptions, build_collection
from rag.models.encoder import Encoder
from rag.ingest.sources import FolderSource

COLOURS = ("red", "green", "blue", "yellow")
RGB = {"red": (220, 30, 30), "green": (30, 170, 30), "blue": (30, 30, 220), "yellow": (230, 210, 20)}


def write_shape_folder(folder: Path, n: int = 96, seed: int = 7) -> Path:
    """JPEG/PNG shapes in two sub-folders plus ``captions.csv`` (two captions per file, label, photographer)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (image, caption, label) in enumerate(make_shape_images(n, seed=seed)):
        relative = f"{'set_a' if i % 2 else 'set_b'}/img_{i:03d}.{'png' if i % 5 == 0 else 'jpg'}"
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        image.save(folder / relative)
        rows.append({"file": relative, "caption": caption, "label": label, "photographer": f"p{i % 3}"})
        rows.append({"file": relative, "caption": f"picture number {i}", "label": label, "photographer": f"p{i % 3}"})
    with open(folder / "captions.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return folder


def build_shapes(folder: Path, out: Path, model_dir: str, **options) -> Path:
    """Build a collection from a shape folder with the tiny CLIP (no progress bar)."""
    source = FolderSource(folder, folder / "captions.csv")
    build_collection(source, out, Encoder(model_dir), BuildOptions(progress=False, **options))
    return out
