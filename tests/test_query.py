"""The search-query language: how queries are read into weighted terms, and every way a query is refused."""

from __future__ import annotations

import pytest

from rag.errors import InvalidInput
from rag.search.query import MAX_TERMS, describe_terms, parse_query


def read(query: str) -> list[tuple[str, object, float]]:
    return [(t.kind, t.value, t.weight) for t in parse_query(query)]


@pytest.mark.parametrize(
    "query, terms",
    [
        ("beach", [("text", "beach", 1.0)]),
        ("beach - people", [("text", "beach", 1.0), ("text", "people", -1.0)]),
        ("beach -people +sunset", [("text", "beach", 1.0), ("text", "people", -1.0), ("text", "sunset", 1.0)]),
        ('#42 + 2*"red car"', [("row", 42, 1.0), ("text", "red car", 2.0)]),
        ('"t-shirt" - #7', [("text", "t-shirt", 1.0), ("row", 7, -1.0)]),
        ("0.5*#42", [("row", 42, 0.5)]),
        ("2*red car - 0.25*blue", [("text", "red car", 2.0), ("text", "blue", -0.25)]),
        ("- people + beach", [("text", "people", -1.0), ("text", "beach", 1.0)]),
        ("t-shirt on a chair", [("text", "t-shirt on a chair", 1.0)]),  # a hyphen inside a word is text
        ("1e-1*dog", [("text", "dog", 0.1)]),
        ('a "b + c" d', [("text", "a b + c d", 1.0)]),  # quotes protect the signs, the rest stays text
        ("\u201cx - y\u201d + z", [("text", "x - y", 1.0), ("text", "z", 1.0)]),  # typographic quotes
        ('"#42"', [("text", "#42", 1.0)]),  # a quoted #42 is text, not a row
        ("#hashtag", [("text", "#hashtag", 1.0)]),
        ("  many   spaces  ", [("text", "many spaces", 1.0)]),
        ("", []),
        ("dog - 0*cat", [("text", "dog", 1.0), ("text", "cat", -0.0)]),
    ],
)
def test_queries_are_read_into_weighted_terms(query, terms):
    assert read(query) == terms


def test_terms_are_shown_the_way_they_were_read():
    shown = describe_terms(parse_query('#42 + 2*"red car" - people'))
    assert shown == '+1 × row #42 +2 × "red car" −1 × "people"'
    assert parse_query("2*dog")[0].to_dict() == {"kind": "text", "value": "dog", "weight": 2.0}


@pytest.mark.parametrize(
    "query, message",
    [
        ("beach +", "empty term after the '+' at character 7"),
        ("beach - ", "empty term"),
        ("a + + b", "empty term after the '+' at character 3"),
        ('""', "empty term at the start"),
        ("+", "empty term"),
        ("dog + -1*cat", "empty term"),  # the sign goes between terms: dog - cat
        ("abc*dog", "'abc' before '*' (at character 1) is not a weight"),
        ("nan*dog", "is not a weight"),
        ("inf*dog", "is not a weight"),
        ("1e400*dog", "not a finite number"),
        ("2*3*dog", "Only one weight per term"),
        ('"red car', "quote is not closed"),
        ("#42 dogs", "mixes a row reference with text"),
        (" + ".join(["x"] * (MAX_TERMS + 1)), f"the limit is {MAX_TERMS}"),
    ],
)
def test_every_malformed_query_is_refused_with_a_reason(query, message):
    with pytest.raises(InvalidInput) as error:
        parse_query(query)
    assert message in str(error.value)


def test_a_query_that_is_not_text_is_refused():
    with pytest.raises(InvalidInput, match="must be text"):
        parse_query(42)  # type: ignore[arg-type]
