"""The fusion prompt: the query, the references' captions and their RAG_CONTEXT_COLUMNS values, by priority,
within the text encoder's window.

Stable Diffusion's CLIP text encoder reads 77 tokens (75 after its start and end tokens) and silently drops
the rest, so a prompt that simply joined everything would lose whatever came last. Parts are added in
priority order: the query, the best reference's first caption and its context-column values, each further
reference's caption and values in rank order, then the references' other captions. A part that does not fit
whole is cut to the words that fit (so the query, and then the best reference, always get the room); every
part left out, wholly or in part, is reported. Tokens are counted with the pipeline's own tokenizer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

SEPARATOR = ", "
CLIP_WINDOW = 77


@dataclass(frozen=True)
class PromptPart:
    """One piece of the prompt and where it came from ("query", "caption of row 12", "name of row 12")."""

    source: str
    text: str
    row: int | None = None


@dataclass
class FusionPrompt:
    """The prompt the generator receives, its token count and budget, and what was used and what was cut."""

    text: str
    tokens: int
    budget: int
    used: list[PromptPart] = field(default_factory=list)
    cut: list[PromptPart] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON form: {"text", "tokens", "budget", "used": [parts], "cut": [parts]}."""
        return {"text": self.text, "tokens": self.tokens, "budget": self.budget,
                "used": [asdict(p) for p in self.used], "cut": [asdict(p) for p in self.cut]}


def _value_text(value: Any) -> str:
    """A metadata value as prompt text: lists joined, blanks empty."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return SEPARATOR.join(str(v) for v in value if v not in (None, ""))
    return " ".join(str(value).split())


def prompt_parts(query: str, hits: Sequence[Any], columns: Sequence[str] = ()) -> list[PromptPart]:
    """Every candidate part in priority order, repeats (same text, any case) dropped."""
    parts = [PromptPart("query", query)] if query else []
    for hit in hits:
        first = hit.captions[0] if hit.captions else (hit.label or "")
        if first:
            parts.append(PromptPart(f"caption of row {hit.id}", first, hit.id))
        for column in columns:
            text = _value_text((hit.metadata or {}).get(column))
            if text:
                parts.append(PromptPart(f"{column} of row {hit.id}", text, hit.id))
    for hit in hits:
        parts += [PromptPart(f"caption of row {hit.id}", c, hit.id) for c in hit.captions[1:] if c]
    seen: set[str] = set()
    unique = []
    for part in parts:
        key = " ".join(part.text.lower().split())
        if key and key not in seen:
            seen.add(key)
            unique.append(part)
    return unique


def _longest_prefix(words: list[str], fits: Callable[[str], bool]) -> int:
    """How many leading words fit (binary search; 0 when not even one does)."""
    low, high = 0, len(words)
    while low < high:
        middle = (low + high + 1) // 2
        if fits(" ".join(words[:middle])):
            low = middle
        else:
            high = middle - 1
    return low


def fuse(parts: Sequence[PromptPart], count_tokens: Callable[[str], int], window: int = CLIP_WINDOW) -> FusionPrompt:
    """Join ``parts`` in order while the prompt fits ``window`` tokens (less the start and end tokens)."""
    budget = window - 2
    used: list[PromptPart] = []
    cut: list[PromptPart] = []
    for part in parts:
        head = SEPARATOR.join(p.text for p in used)

        def fits(text: str) -> bool:
            return count_tokens(head + SEPARATOR + text if head else text) <= budget

        if fits(part.text):
            used.append(part)
            continue
        words = part.text.split()
        keep = _longest_prefix(words, fits)
        if keep:
            used.append(PromptPart(part.source, " ".join(words[:keep]), part.row))
            cut.append(PromptPart(part.source, " ".join(words[keep:]), part.row))
        else:
            cut.append(part)
    text = SEPARATOR.join(p.text for p in used)
    return FusionPrompt(text=text, tokens=count_tokens(text) if text else 0, budget=budget, used=used, cut=cut)


def token_counter(tokenizer: Any) -> Callable[[str], int]:
    """Tokens a (CLIP) tokenizer makes of a text, start and end tokens not counted."""

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False, truncation=False, verbose=False)["input_ids"])

    return count
