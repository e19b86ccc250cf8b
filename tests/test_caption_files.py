"""A captions.csv / captions.jsonl is read as a stream, with a cap on its size and rows (issue 22, item 6).

A 40 MB captions.csv in a 486 KB zip used to take the app from 1.3 to 2.9 GB: the file was read whole, then
split, then turned into a list of dicts. What a user notices now: a captions file over the caps is refused
with one sentence saying which cap and what to do, before the build spends time on it; one under the caps is
read without holding it in memory; the owner's own folder is not capped.
"""

from __future__ import annotations

import csv
import io
import random
import tracemalloc
import zipfile
from pathlib import Path

import pytest
from testkit.tiny_models import make_shape_images

from rag.config import Settings
from rag.errors import InvalidInput
from rag.ingest.sources import FolderSource
from rag.space.session_build import BuildRequest, make_source

WORDS = [f"w{i:04d}" for i in range(4000)]


def _images(folder: Path, n: int = 4) -> list[str]:
    names = []
    for i, (image, _, _) in enumerate(make_shape_images(n, seed=2)):
        name = f"img_{i}.png"
        image.save(folder / name)
        names.append(name)
    return names


def _captions_csv(path: Path, names: list[str], rows: int, words: int = 3, seed: int = 0) -> Path:
    """``rows`` caption rows of ``words`` random words (hardly compressible), cycling over ``names``."""
    rng = random.Random(seed)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "caption"])
        for i in range(rows):
            writer.writerow([names[i % len(names)], " ".join(rng.choices(WORDS, k=words))])
    return path


def test_a_captions_file_over_the_row_cap_is_refused_but_the_owners_folder_is_not(tmp_path):
    names = _images(tmp_path)
    captions = _captions_csv(tmp_path / "captions.csv", [f"other/{i}.png" for i in range(9)] + names, 100_001,
                             words=1)
    assert captions.stat().st_size < 16_000_000  # under the size cap: the rows are what is refused
    with pytest.raises(InvalidInput, match=r"captions\.csv has more than 100,000 rows"):
        FolderSource(tmp_path, captions)
    from rag.ingest.open_source import SourceSpec, open_source

    owners = open_source(SourceSpec(images=tmp_path, captions=captions))  # the owner's CLI on their own folder
    expected = [sum(1 for row in range(100_001) if row % 13 == 9 + i) for i in range(4)]  # rows naming each image
    assert [len(item.captions) for item in owners.items()] == expected


def test_a_large_captions_file_in_an_uploaded_archive_is_refused_by_its_size(tmp_path):
    folder = tmp_path / "upload"
    folder.mkdir()
    names = _images(folder)
    captions = _captions_csv(folder / "captions.csv", names, 420_000, words=5)  # ~17 MB of random words
    assert 16_000_000 < captions.stat().st_size < 20_000_000
    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as handle:
        for path in sorted(folder.iterdir()):
            handle.write(path, path.name)
    settings = Settings(cache_dir=tmp_path / "cache", build_max_images=50, build_max_mb=50)
    with pytest.raises(InvalidInput, match=r"captions\.csv is over 1\d\.\d MB; a captions file may hold at most 16 MB"):
        make_source(BuildRequest(archive=str(archive)), tmp_path / "work", settings)


def test_a_captions_file_is_streamed_not_held_in_memory(tmp_path):
    names = _images(tmp_path)
    rows = [["file", "caption", "label"]] + [[f"elsewhere/{i}.png", f"caption number {i} " * 4, "x"]
                                              for i in range(60_000)]
    rows += [[name, f"the caption of {name}", "mine"] for name in names]
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    (tmp_path / "captions.csv").write_text(buffer.getvalue())
    del rows, buffer
    size = (tmp_path / "captions.csv").stat().st_size
    assert size > 5_000_000
    tracemalloc.start()
    try:
        source = FolderSource(tmp_path, tmp_path / "captions.csv")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < size / 5, f"reading a {size / 1e6:.1f} MB captions file peaked at {peak / 1e6:.1f} MB"
    items = list(source.items())
    assert [item.captions for item in items] == [[f"the caption of {name}"] for name in names]
    assert {item.label for item in items} == {"mine"}


def test_a_captions_jsonl_is_capped_too(tmp_path):
    names = _images(tmp_path)
    lines = [f'{{"file": "{names[i % 4]}", "caption": "c{i}"}}' for i in range(100_001)]
    (tmp_path / "captions.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(InvalidInput, match=r"captions\.jsonl has more than 100,000 rows"):
        FolderSource(tmp_path, tmp_path / "captions.jsonl")
    (tmp_path / "captions.jsonl").write_text("\n".join(lines[:8]) + "\n")
    assert [item.captions for item in FolderSource(tmp_path, tmp_path / "captions.jsonl").items()] == [
        [f"c{i}", f"c{i + 4}"] for i in range(4)]
