"""The /create parameters checked, each bad value refused with one sentence that says what is allowed."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from rag.create.options import DEFAULT_GUIDANCE, DEFAULT_STEPS, DEFAULT_STRENGTH
from rag.errors import InvalidInput
from rag.models.encoder import MAX_QUERY_CHARS
from rag.pipeline import check_int

MAX_REFERENCES = 10
MAX_STEPS = 50
MAX_GUIDANCE = 20.0
MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class CreateParams:
    """Checked /create parameters (the image is decoded separately)."""

    query: str = ""
    k: int = 3
    strength: float = DEFAULT_STRENGTH
    guidance: float = DEFAULT_GUIDANCE
    steps: int = DEFAULT_STEPS
    seed: int = 0
    use_context: bool = True


def _number(value: Any, what: str, low: float, high: float, low_open: bool = False) -> float:
    bounds = f"{'above' if low_open else 'from'} {low:g} {'and at most' if low_open else 'to'} {high:g}"
    message = f"{what} must be a number {bounds}"
    if isinstance(value, bool) or value is None or value == "":
        raise InvalidInput(message + ".")
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise InvalidInput(message + ".") from None
    if not math.isfinite(number) or number > high or number < low or (low_open and number <= low):
        raise InvalidInput(f"{message}; got {value!r}.")
    return number


def check_query_text(query: Any) -> str:
    """The query: text (may be empty), whitespace collapsed, at most MAX_QUERY_CHARS characters."""
    if query is None:
        return ""
    if not isinstance(query, str):
        raise InvalidInput("The query must be text.")
    query = " ".join(query.split())
    if len(query) > MAX_QUERY_CHARS:
        raise InvalidInput(f"The query is {len(query):,} characters long; the limit is {MAX_QUERY_CHARS:,}.")
    return query


def check_switch(value: Any) -> bool:
    """use_context: true or false (also "true"/"false", 1/0)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise InvalidInput(f"use_context must be true or false, not {value!r}.")


def check_params(query: Any = "", k: Any = 3, strength: Any = DEFAULT_STRENGTH, guidance: Any = DEFAULT_GUIDANCE,
                 steps: Any = DEFAULT_STEPS, seed: Any = 0, use_context: Any = True) -> CreateParams:
    """Every /create parameter checked (the first bad one raises InvalidInput)."""
    return CreateParams(
        query=check_query_text(query),
        k=check_int(k, 1, MAX_REFERENCES, "k"),
        strength=_number(strength, "strength", 0.0, 1.0, low_open=True),
        guidance=_number(guidance, "guidance", 0.0, MAX_GUIDANCE),
        steps=check_int(steps, 1, MAX_STEPS, "steps"),
        seed=check_int(seed, 0, MAX_SEED, "seed"),
        use_context=check_switch(use_context),
    )
