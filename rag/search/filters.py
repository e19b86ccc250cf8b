"""Metadata filters: a dict (or its JSON text) -> a row mask and a FAISS IDSelector over the collection.

    {"label": ["dog", "cat"], "year": {"min": 2000}, "source": {"contains": "beach"}}

A list means ``in``, a plain value means ``eq``, a dict names operators: ``eq``, ``in``, ``contains``
(case-insensitive substring), ``min`` and ``max`` (inclusive; numeric when the bound is a number, text order
otherwise, e.g. ISO dates). All conditions must hold. Columns: ``label``, ``source``, ``captions`` (any of
them, via ``contains``/``eq`` on the joined text) and every passed-through metadata column.
"""

from __future__ import annotations

import json
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rag.errors import InvalidInput

OPERATORS = ("eq", "in", "contains", "min", "max")
BASE_FILTER_COLUMNS = ("label", "source", "captions")
MAX_FILTER_CHARS = 10_000
MAX_IN_VALUES = 1_000
NUMBER_PATTERN = r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$"
CAPTION_SEPARATOR = "\n"


@dataclass
class RowFilter:
    """A compiled filter: which rows pass (mask), how many, and a FAISS selector over them."""

    spec: dict[str, dict[str, Any]]
    mask: np.ndarray
    count: int = 0
    _bits: np.ndarray = field(default=None, repr=False)  # keeps the bitmap alive as long as the selector
    selector: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.count = int(self.mask.sum())
        self._bits = np.packbits(self.mask, bitorder="little")
        self.selector = faiss.IDSelectorBitmap(len(self.mask), faiss.swig_ptr(self._bits))

    @property
    def ids(self) -> np.ndarray:
        """Row ids that pass, ascending."""
        return np.flatnonzero(self.mask)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_scalar(column: str, op: str, value: Any) -> Any:
    if isinstance(value, bool) or value is None or not isinstance(value, (str, int, float)):
        raise InvalidInput(f"Filter {column}.{op}: use a text or a number, not {json.dumps(value, default=str)}.")
    if _is_number(value) and not math.isfinite(value):
        raise InvalidInput(f"Filter {column}.{op}: {value} is not a finite number.")
    return value


def _normalise_condition(column: str, condition: Any) -> dict[str, Any]:
    """A list -> {"in": [...]}, a value -> {"eq": value}, a dict -> checked operators."""
    if isinstance(condition, list):
        condition = {"in": condition}
    elif not isinstance(condition, dict):
        condition = {"eq": condition}
    if not condition:
        raise InvalidInput(f"Filter {column!r} has no condition: use one of {', '.join(OPERATORS)}.")
    out: dict[str, Any] = {}
    for op, value in condition.items():
        if op not in OPERATORS:
            raise InvalidInput(f"Unknown filter operator {op!r} on {column!r}: use one of {', '.join(OPERATORS)}.")
        if op == "in":
            if not isinstance(value, list) or not value:
                raise InvalidInput(f"Filter {column}.in needs a non-empty list of values, e.g. [\"dog\", \"cat\"].")
            if len(value) > MAX_IN_VALUES:
                raise InvalidInput(f"Filter {column}.in has {len(value)} values; the limit is {MAX_IN_VALUES}.")
            out[op] = [_check_scalar(column, op, v) for v in value]
        else:
            out[op] = _check_scalar(column, op, value)
    if column == "captions" and set(out) - {"contains", "eq"}:
        raise InvalidInput("Filter 'captions' takes only contains or eq (the captions are text).")
    return out


def parse_filters(filters: Any, columns: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Validate a filter dict or its JSON text against the collection's columns; {} means no filter."""
    if filters is None:
        return {}
    if isinstance(filters, str):
        if not filters.strip():
            return {}
        if len(filters) > MAX_FILTER_CHARS:
            raise InvalidInput(f"The filters are {len(filters):,} characters long; the limit is {MAX_FILTER_CHARS:,}.")
        try:
            filters = json.loads(filters)
        except ValueError as exc:
            raise InvalidInput(
                f"The filters are not valid JSON ({exc.msg} at character {exc.pos + 1}); "
                'write e.g. {"label": ["dog", "cat"], "year": {"min": 2000}}.'
            ) from None
    if filters is None:
        return {}
    if not isinstance(filters, dict):
        raise InvalidInput('Filters must be a JSON object such as {"label": ["dog", "cat"]}.')
    valid = list(columns)
    spec = {}
    for column, condition in filters.items():
        if column not in valid:
            raise InvalidInput(f"Unknown filter column {column!r}: this collection has {', '.join(valid)}.")
        spec[column] = _normalise_condition(column, condition)
    return spec


def _numbers(values: pa.ChunkedArray) -> pa.ChunkedArray:
    """Text cells read as float64; cells that are not numbers become null (they never pass numeric bounds)."""
    trimmed = pc.utf8_trim_whitespace(values)
    numeric = pc.match_substring_regex(trimmed, NUMBER_PATTERN)
    return pc.cast(pc.if_else(numeric, trimmed, pa.scalar(None, pa.string())), pa.float64())


def _condition_mask(values: pa.ChunkedArray, numbers: Callable[[], pa.ChunkedArray], op: str, value: Any):
    if op == "in":
        texts = [v for v in value if isinstance(v, str)]
        found = pc.is_in(values, value_set=pa.array(texts, pa.string())) if texts else None
        nums = [float(v) for v in value if _is_number(v)]
        if nums:
            by_number = pc.is_in(numbers(), value_set=pa.array(nums, pa.float64()))
            found = by_number if found is None else pc.or_(found, by_number)
        return found
    if op == "contains":
        return pc.match_substring(values, str(value), ignore_case=True)
    if _is_number(value):
        compare = {"eq": pc.equal, "min": pc.greater_equal, "max": pc.less_equal}[op]
        return compare(numbers(), float(value))
    compare = {"eq": pc.equal, "min": pc.greater_equal, "max": pc.less_equal}[op]
    return compare(values, value)


def compute_mask(spec: dict[str, dict[str, Any]], column: Callable[[str], pa.ChunkedArray], rows: int) -> np.ndarray:
    """The rows that pass every condition of a parsed filter, as a boolean array."""
    mask = np.ones(rows, dtype=bool)
    for name, conditions in spec.items():
        values = column(name)
        if name == "captions":
            values = pc.binary_join(values, CAPTION_SEPARATOR)
        cache: list[pa.ChunkedArray] = []

        def numbers(values=values, cache=cache) -> pa.ChunkedArray:
            if not cache:
                cache.append(_numbers(values))
            return cache[0]

        for op, value in conditions.items():
            passed = pc.fill_null(_condition_mask(values, numbers, op, value), False)
            mask &= np.asarray(passed.to_numpy(zero_copy_only=False), dtype=bool)
    return mask


class FilterCache:
    """Compiled filters of one collection, the most recent few kept (so "Load more" does not recompute)."""

    def __init__(self, column: Callable[[str], pa.ChunkedArray], rows: int, columns: Sequence[str], size: int = 8):
        self._column, self._rows, self.columns, self._size = column, rows, list(columns), size
        self._cache: OrderedDict[str, RowFilter] = OrderedDict()
        self._lock = threading.Lock()

    def compile(self, filters: Any) -> RowFilter | None:
        """Parse and compile a filter; None when there is nothing to filter."""
        spec = parse_filters(filters, self.columns)
        if not spec:
            return None
        key = json.dumps(spec, sort_keys=True)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        compiled = RowFilter(spec, compute_mask(spec, self._column, self._rows))
        with self._lock:
            self._cache[key] = compiled
            while len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return compiled
