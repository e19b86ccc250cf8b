"""Keep user- and collection-supplied text from posing as a model's control tokens (prompt injection).

A question or a neighbour's caption containing ``<|im_end|><|im_start|>system ...`` would rewrite the
Qwen2-VL conversation, and a stray ``<|image_pad|>`` makes the processor fail (it expands that token into
the image's patches). The tokens come from the tokenizer itself (its special and added special tokens,
so a fine-tuned model's extra markers are covered), plus any ChatML-style ``<|...|>`` marker as a fallback;
they are removed (case-insensitively, repeatedly, so removing one cannot splice another together).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

# ChatML/Qwen-style markers (<|im_start|>, <|vision_start|>, <|endoftext|> ...), whatever the tokenizer says.
MARKER_PATTERN = r"<\|[^<>|\s]{1,64}\|>"


def control_tokens(tokenizer: Any) -> set[str]:
    """The tokenizer's special tokens and its added tokens flagged special, as literal strings."""
    tokens = set(getattr(tokenizer, "all_special_tokens", None) or [])
    decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
    tokens.update(token.content for token in decoder.values() if getattr(token, "special", False))
    return {token for token in tokens if isinstance(token, str) and token.strip()}


class TokenFilter:
    """Callable that removes a tokenizer's control tokens (and ``<|...|>`` markers) from text."""

    def __init__(self, tokenizer: Any = None, extra: Iterable[str] = ()) -> None:
        tokens = sorted(control_tokens(tokenizer) | set(extra), key=len, reverse=True)
        self.tokens = frozenset(tokens)
        alternatives = [re.escape(token) for token in tokens] + [MARKER_PATTERN]
        self._pattern = re.compile("|".join(alternatives), re.IGNORECASE)

    def __call__(self, text: str) -> str:
        """The text with every control token replaced by a space, whitespace collapsed."""
        previous = None
        while text != previous:
            previous, text = text, self._pattern.sub(" ", text)
        return " ".join(text.split())
