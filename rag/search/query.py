"""The search-query language: terms joined by ``+`` / ``-``, optional weights, quoted phrases and ``#row`` references.

    beach - people            text "beach" (weight 1) minus text "people" (weight -1)
    #42 + 2*"red car"         collection row 42, plus the phrase "red car" with weight 2
    "t-shirt" - #7            a quoted phrase keeps + and - as text
    0.5*#42                   a weighted row

A ``-`` between two letters or digits (``t-shirt``, ``x-ray``) is part of the word; anywhere else ``+`` and
``-`` join terms. The parser only reads the text; the pipeline checks row ids and encodes the terms.
Every problem is an InvalidInput whose message says what to change.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any

from rag.errors import InvalidInput

MAX_TERMS = 16
QUOTES = {'"': '"', "\u201c": "\u201d", "\u201e": "\u201d"}  # straight and typographic double quotes
_ROW = re.compile(r"#(\d+)")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


@dataclass(frozen=True)
class Term:
    """One parsed term: ``kind`` is "text", "row" or "image"; ``value`` the text, row id or image name."""

    kind: str
    value: Any
    weight: float

    def to_dict(self) -> dict[str, Any]:
        """JSON form shown in results: {"kind", "value", "weight"}."""
        return asdict(self)


def _split(query: str) -> list[tuple[int, str, int]]:
    """Split on top-level + / - into (sign, raw term, position); quotes protect their content."""
    parts: list[tuple[int, str, int]] = []
    sign, start, buffer, i = 1, 0, [], 0
    closing: str | None = None
    while i < len(query):
        char = query[i]
        if closing is not None:
            closing = None if char == closing else closing
            buffer.append(char)
        elif char in QUOTES:
            closing = QUOTES[char]
            buffer.append(char)
        elif char in "+-" and not _inside_word(query, i):
            parts.append((sign, "".join(buffer), start))
            sign, start, buffer = (1 if char == "+" else -1), i, []
        else:
            buffer.append(char)
        i += 1
    if closing is not None:
        raise InvalidInput(f"A quote is not closed: add the closing {closing} (quotes keep + and - as text).")
    parts.append((sign, "".join(buffer), start))
    return parts


def _inside_word(query: str, i: int) -> bool:
    """A hyphen between two letters/digits (t-shirt, covid-19) is text, not a minus sign."""
    return query[i] == "-" and 0 < i < len(query) - 1 and query[i - 1].isalnum() and query[i + 1].isalnum()


def _weight(raw: str, position: int) -> tuple[float, str]:
    """Split an optional leading ``number*`` off a term: (weight, rest)."""
    head, star, rest = raw.partition("*")
    if not star or _starts_quoted(head):
        return 1.0, raw
    text = head.strip()
    if not _NUMBER.fullmatch(text):
        raise InvalidInput(
            f"{text!r} before '*' (at character {position + 1}) is not a weight: write a number, e.g. 2*red car or 0.5*#42."
        )
    weight = float(text)
    if not math.isfinite(weight):
        raise InvalidInput(f"The weight {text!r} is not a finite number.")
    return weight, rest


def _starts_quoted(text: str) -> bool:
    stripped = text.lstrip()
    return bool(stripped) and stripped[0] in QUOTES


def _unquote(body: str) -> tuple[str, bool]:
    """Remove the quote marks, keep their content; (text, had quotes)."""
    out, quoted, closing = [], False, None
    for char in body:
        if closing is not None and char == closing:
            closing = None
        elif closing is None and char in QUOTES:
            closing, quoted = QUOTES[char], True
        else:
            out.append(char)
    return " ".join("".join(out).split()), quoted


def _term(sign: int, raw: str, position: int) -> Term:
    weight, body = _weight(raw, position)
    text, quoted = _unquote(body)
    where = "at the start" if position == 0 else f"after the '{'+' if sign > 0 else '-'}' at character {position + 1}"
    if not text:
        raise InvalidInput(f"There is an empty term {where}: write text, \"a phrase\" or #row between the signs.")
    row = _ROW.fullmatch(text)
    if row and not quoted:
        return Term("row", int(row.group(1)), sign * weight)
    if not quoted and text.startswith("#") and _ROW.match(text):
        raise InvalidInput(
            f"{text!r} mixes a row reference with text: put #row on its own between + and - (e.g. #42 + red car)."
        )
    if "*" in text and not quoted:
        raise InvalidInput(f"Only one weight per term: {raw.strip()!r} has more than one '*' (quote it to search for '*').")
    return Term("text", text, sign * weight)


def parse_query(query: str) -> list[Term]:
    """Parse a query into weighted terms (empty query -> no terms); InvalidInput names the problem."""
    if query is None:
        return []
    if not isinstance(query, str):
        raise InvalidInput("The query must be text.")
    if not query.strip():
        return []
    parts = _split(query.strip())
    if len(parts) > 1 and not parts[0][1].strip():
        parts = [(parts[1][0], parts[1][1], 0)] + parts[2:]  # a leading sign: "- people + beach"
    if len(parts) > MAX_TERMS:
        raise InvalidInput(f"The query has {len(parts)} terms; the limit is {MAX_TERMS}.")
    return [_term(sign, raw, position) for sign, raw, position in parts]


def describe_terms(terms: list[Term]) -> str:
    """How the query was read, e.g. ``+1 × "beach" −1 × "people" +2 × row #42`` (shown under the search box)."""
    words = []
    for term in terms:
        sign = "+" if term.weight >= 0 else "\u2212"
        what = {"row": f"row #{term.value}", "image": "the uploaded image"}.get(term.kind, f'"{term.value}"')
        words.append(f"{sign}{abs(term.weight):g} \u00d7 {what}")
    return " ".join(words)
