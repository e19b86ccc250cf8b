"""Offline stand-ins for the Hub datasets the README names, in the Hub's own layout, built with `datasets`.

Each fixture is a folder laid out like a dataset repo pushed with ``push_to_hub``: ``data/<split>-*.parquet``
(features, ClassLabel names included, in the parquet schema) plus a ``README.md`` card whose YAML holds the
``configs`` (split -> files) and ``dataset_info`` (features, row counts). ``load_dataset(folder, split=...)``
therefore goes through the same loader, streaming or not, as ``load_dataset("royokong/flickr30k_test", ...)``.

The schemas are those of the datasets' cards (also tabulated in the README):

* ``royokong/flickr30k_test``: ``image``, ``text`` (list of 5 strings); split ``test``
* ``jxie/flickr8k``: ``image``, ``caption_0`` ... ``caption_4``; splits ``train`` / ``validation`` / ``test``
* ``zh-plus/tiny-imagenet``: ``image``, ``label`` (ClassLabel of 200 names); splits ``train`` / ``valid``
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from testkit.tiny_models import make_shape_images

TINY_IMAGENET_CLASSES = 200


def _png(image: Any) -> dict[str, Any]:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": None}


def _flickr30k_rows(shapes: list[tuple[Any, str, str]]) -> dict[str, list]:
    return {
        "image": [_png(image) for image, _, _ in shapes],
        "text": [[caption, f"a picture of a {label}", label, f"one {label}", f"image {i}"]
                 for i, (_, caption, label) in enumerate(shapes)],
    }


def _flickr8k_rows(shapes: list[tuple[Any, str, str]]) -> dict[str, list]:
    rows: dict[str, list] = {"image": [_png(image) for image, _, _ in shapes]}
    for n in range(5):
        rows[f"caption_{n}"] = [caption if n == 0 else f"{label} number {i} ({n})"
                                for i, (_, caption, label) in enumerate(shapes)]
    return rows


def _tiny_imagenet_rows(shapes: list[tuple[Any, str, str]], names: list[str]) -> dict[str, list]:
    # the shape labels ("red circle", ...) are the first class names, so label ids map back to them
    return {"image": [_png(image) for image, _, _ in shapes], "label": [names.index(label) for _, _, label in shapes]}


def _features(kind: str, names: list[str]) -> Any:
    from datasets import ClassLabel, Features, Image, List, Value

    if kind == "flickr30k":
        return Features({"image": Image(), "text": List(Value("string"))})
    if kind == "flickr8k":
        return Features({"image": Image(), **{f"caption_{n}": Value("string") for n in range(5)}})
    return Features({"image": Image(), "label": ClassLabel(names=names)})


def write_hub_layout(folder: Path, splits: dict[str, Any], shards: int = 1, row_group_rows: int | None = None) -> Path:
    """Write ``{split: Dataset}`` as ``push_to_hub`` would: parquet shards under data/ and a README card.

    ``row_group_rows`` sets the parquet row groups (default: `datasets`' own choice, up to 100 MB each).
    """
    from datasets import DatasetInfo, SplitDict, SplitInfo
    from datasets.info import DatasetInfosDict
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCard, DatasetCardData

    (folder / "data").mkdir(parents=True, exist_ok=True)
    split_dict = SplitDict()
    for split, dataset in splits.items():
        for shard in range(shards):
            part = dataset.shard(shards, shard, contiguous=True) if shards > 1 else dataset
            part.to_parquet(str(folder / "data" / f"{split}-{shard:05d}-of-{shards:05d}.parquet"), batch_size=row_group_rows)
        split_dict.add(SplitInfo(name=split, num_examples=len(dataset)))
    features = next(iter(splits.values())).features
    card_data = DatasetCardData()
    DatasetInfosDict({"default": DatasetInfo(config_name="default", features=features, splits=split_dict)}
                     ).to_dataset_card_data(card_data)
    MetadataConfigs({"default": {"data_files": [{"split": s, "path": f"data/{s}-*"} for s in splits]}}
                    ).to_dataset_card_data(card_data)
    DatasetCard(f"---\n{card_data}\n---\n").save(folder / "README.md")
    return folder


HUB_DATASETS: dict[str, tuple[str, tuple[str, ...]]] = {
    "royokong/flickr30k_test": ("flickr30k", ("test",)),
    "jxie/flickr8k": ("flickr8k", ("train", "validation", "test")),
    "zh-plus/tiny-imagenet": ("tiny-imagenet", ("train", "valid")),
}


def make_hub_fixture(dataset_id: str, folder: Path, rows: int = 24, seed: int = 3) -> Path:
    """A local folder with the schema and splits of the Hub dataset ``dataset_id`` (generated shape images)."""
    from datasets import Dataset

    from testkit.tiny_models import LABELS

    kind, split_names = HUB_DATASETS[dataset_id]
    names = list(LABELS) + [f"n{i:08d}" for i in range(TINY_IMAGENET_CLASSES - len(LABELS))]
    makers: dict[str, Callable[[list], dict[str, list]]] = {
        "flickr30k": _flickr30k_rows, "flickr8k": _flickr8k_rows,
        "tiny-imagenet": lambda shapes: _tiny_imagenet_rows(shapes, names),
    }
    features = _features(kind, names)
    splits = {}
    for number, split in enumerate(split_names):
        shapes = list(make_shape_images(rows, seed=seed + number))
        splits[split] = Dataset.from_dict(makers[kind](shapes), features=features)
    return write_hub_layout(folder, splits)


def make_hub_fixtures(root: Path, dataset_ids: Iterable[str] = tuple(HUB_DATASETS), rows: int = 24) -> dict[str, Path]:
    """Every README dataset id mapped to its local fixture folder under ``root``."""
    return {dataset_id: make_hub_fixture(dataset_id, root / dataset_id.replace("/", "__"), rows)
            for dataset_id in dataset_ids}
