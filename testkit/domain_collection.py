"""A "domain vocabulary" collection: shape images whose captions call each class by a word the tiny CLIP never learned.

The tiny test CLIP (testkit.tiny_models) knows colour and shape words ("red circle"). Here each of its twelve
classes is named by a batik motif instead ("kawung", "parang", ...: the vocabulary of the Batik Nitik seed), and
no caption holds a colour or shape word, so zero-shot text->image search is near chance while the images
themselves are as easy as ever: what `rag.finetune` has to teach the search is the collection's own words.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

from testkit.tiny_models import LABELS, make_shape_images

# one motif name per tiny-CLIP class, in LABELS order (red circle, red square, ..., yellow triangle)
MOTIFS: tuple[str, ...] = (
    "kawung", "parang", "truntum", "ceplok", "sidomukti", "lereng",
    "tambal", "semen", "gringsing", "kemuning", "jlamprang", "sekar jagad",
)
MOTIF_OF: dict[str, str] = dict(zip(LABELS, MOTIFS))
TEMPLATES: tuple[str, ...] = (
    "{motif}",
    "a {motif} motif",
    "batik cloth with the {motif} pattern",
    "a piece of {motif} batik",
    "the {motif} design, hand drawn",
    "traditional {motif} nitik",
)


def domain_captions(motif: str, rng: random.Random, count: int = 2) -> list[str]:
    """``count`` different captions naming ``motif`` (never a colour or shape word)."""
    return [template.format(motif=motif) for template in rng.sample(TEMPLATES, count)]


def write_domain_folder(folder: Path, n: int = 240, seed: int = 11, captions_per_image: int = 2) -> Path:
    """``n`` shape images (classes in turn) plus ``captions.csv``: motif captions, the motif as label."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    rows = []
    for i, (image, _caption, label) in enumerate(make_shape_images(n, seed=seed)):
        relative = f"img_{i:04d}.png"
        image.save(folder / relative)
        motif = MOTIF_OF[label]
        for caption in domain_captions(motif, rng, captions_per_image):
            rows.append({"file": relative, "caption": caption, "label": motif})
    with open(folder / "captions.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["file", "caption", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return folder


def build_domain_collection(folder: Path, out: Path, model_dir: str, n: int = 240, seed: int = 11,
                            map: bool = False) -> Path:
    """Write the images and captions to ``folder`` and build a collection of them at ``out`` with ``model_dir``
    (without the 2-D map unless asked: t-SNE is most of a small build's time)."""
    from rag.ingest.builder import BuildOptions, build_collection
    from rag.ingest.sources import FolderSource
    from rag.models.encoder import Encoder

    write_domain_folder(folder, n=n, seed=seed)
    source = FolderSource(folder, folder / "captions.csv")
    build_collection(source, out, Encoder(model_dir), BuildOptions(progress=False, map=map))
    return out


def domain_archive(path: Path, n: int = 240, seed: int = 11) -> Path:
    """The same images and captions as a .zip a visitor uploads to the Build tab: one folder per motif (the labels,
    with "Folder names are labels") and ``captions.csv`` at the root."""
    import io
    import zipfile

    rng = random.Random(seed)
    lines = io.StringIO()
    writer = csv.writer(lines)
    writer.writerow(["file", "caption"])
    with zipfile.ZipFile(path, "w") as archive:
        for i, (image, _caption, label) in enumerate(make_shape_images(n, seed=seed)):
            motif = MOTIF_OF[label]
            name = f"{motif}/{i:04d}.png"
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            archive.writestr(name, buffer.getvalue())
            for caption in domain_captions(motif, rng):
                writer.writerow([name, caption])
        archive.writestr("captions.csv", lines.getvalue())
    return path
