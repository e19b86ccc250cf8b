"""What the Explore tab and the /map, /map_select endpoints serve: the map's points, compactly, and rows' details.

Points go out as parallel arrays (ids, x, y, label_ids) plus one short list of label names: the 20 most
frequent labels, then "other" and "(no label)" where needed. Captions stay out of the map payload; they
come with /map_select for the few rows a user picks.
"""

from __future__ import annotations

import weakref
from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from rag.collection.reader import Collection
from rag.errors import InvalidInput, MapMissing
from rag.explore.map_file import ADD_MAP_HINT, read_map

TOP_LABELS = 20
OTHER = "other"
NO_LABEL = "(no label)"
MAX_SELECT = 500
COORD_DECIMALS = 4


@dataclass(frozen=True)
class MapPoints:
    """Every row's map position and colour group (label index into ``labels``)."""

    xy: np.ndarray
    label_ids: np.ndarray
    labels: list[str]


_CACHE: "weakref.WeakKeyDictionary[Collection, MapPoints]" = weakref.WeakKeyDictionary()


def label_groups(labels: Sequence[str | None], top: int = TOP_LABELS) -> tuple[np.ndarray, list[str]]:
    """Colour groups: the ``top`` most frequent labels (ties by name), then "other", then "(no label)"."""
    counts = Counter(label for label in labels if label)
    names = [name for name, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:top]]
    position = {name: i for i, name in enumerate(names)}
    other = missing = -1
    if len(counts) > len(names):
        other = len(names)
        names.append(OTHER)
    if any(not label for label in labels):
        missing = len(names)
        names.append(NO_LABEL)
    ids = np.fromiter(
        (position.get(label, other) if label else missing for label in labels), dtype=np.int32, count=len(labels)
    )
    return ids, names


def map_points(collection: Collection) -> MapPoints:
    """The collection's map with colour groups (cached per loaded collection); MapMissing says how to add one."""
    cached = _CACHE.get(collection)
    if cached is None:
        xy = read_map(collection)
        if xy is None:
            raise MapMissing(
                f"This collection has no map yet. Add one from its stored vectors (no re-encoding): `{ADD_MAP_HINT}`."
            )
        label_ids, labels = label_groups(collection.all_labels())
        cached = _CACHE[collection] = MapPoints(xy, label_ids, labels)
    return cached


def map_payload(collection: Collection, limit: Any = None, seed: int = 0) -> dict[str, Any]:
    """/map: ``{"ids", "x", "y", "label_ids", "labels"}`` for every row, or a seeded sample of ``limit`` rows."""
    points = map_points(collection)
    rows = len(points.xy)
    ids = np.arange(rows)
    if limit not in (None, "", 0):
        cap = _whole(limit, "limit")
        if not 1 <= cap <= rows:
            raise InvalidInput(f"limit must be between 1 and {rows:,} (the number of rows); got {cap}.")
        ids = np.sort(np.random.default_rng(seed).choice(rows, size=cap, replace=False))
    xy = np.round(points.xy[ids].astype(np.float64), COORD_DECIMALS)
    return {
        "ids": ids.tolist(), "x": xy[:, 0].tolist(), "y": xy[:, 1].tolist(),
        "label_ids": points.label_ids[ids].tolist(), "labels": list(points.labels),
    }


def parse_ids(ids: Any, rows: int) -> list[int]:
    """Row ids from a list or a comma/space separated string; each must exist, at most MAX_SELECT of them."""
    if isinstance(ids, str):
        ids = [part for part in ids.replace(",", " ").split() if part]
    if isinstance(ids, (int, float)):
        ids = [ids]
    if not isinstance(ids, (list, tuple)) or not ids:
        raise InvalidInput("Give one or more row ids, e.g. [3, 17] or \"3, 17\".")
    if len(ids) > MAX_SELECT:
        raise InvalidInput(f"At most {MAX_SELECT} rows can be selected at once; got {len(ids):,}.")
    out = [_whole(value, "row id") for value in ids]
    bad = [i for i in out if not 0 <= i < rows]
    if bad:
        raise InvalidInput(f"Row id {bad[0]} is not in the collection (0..{rows - 1}).")
    return list(dict.fromkeys(out))


def _whole(value: Any, what: str) -> int:
    try:
        number = int(value)
        if number != float(value):
            raise ValueError
    except (TypeError, ValueError):
        raise InvalidInput(f"{what} must be a whole number, not {value!r}.") from None
    return number


def map_details(collection: Collection, ids: Any, cache_dir: Any) -> list[dict[str, Any]]:
    """/map_select: the chosen rows' details (captions, label, source, metadata, map position, thumbnail file)."""
    picked = parse_ids(ids, len(collection))
    try:
        xy = map_points(collection).xy
    except MapMissing:
        xy = None
    rows = collection.rows(picked)
    for row in rows:
        row["thumbnail"] = str(collection.thumbnail_path(row["id"], cache_dir))
        if xy is not None:
            row["x"], row["y"] = (round(float(v), COORD_DECIMALS) for v in xy[row["id"]])
    return rows
