"""What every captioner shares: the neighbour protocol, the result type and the context lines shown to it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from PIL import Image

CONTEXT_CAPTIONS_PER_HIT = 2


class Neighbour(Protocol):
    """What a captioner reads of a retrieved row (rag.pipeline.Hit has these)."""

    captions: list[str]
    label: str | None
    score: float


@dataclass
class CaptionResult:
    """A description plus the exact context/prompt the captioner was given (shown in the UI)."""

    text: str
    prompt: str


class Captioner(Protocol):
    """What the pipeline and the builder need of a captioner (GitCaptioner and Qwen2VLCaptioner)."""

    kind: str
    model_id: str

    def caption(self, images: Sequence[Image.Image]) -> list[str]: ...

    def write_description(
        self, image: Image.Image, context: Sequence[Neighbour], question: str | None = None
    ) -> CaptionResult: ...


def captioner_label(captioner: Captioner) -> str:
    """How the UI, /info and reports name a captioner: ``kind (model id)``."""
    return f"{captioner.kind} ({captioner.model_id})"


def unchanged(text: str) -> str:
    """The identity: the default ``clean`` step for text that needs none."""
    return text


def context_lines(context: Sequence[Neighbour], clean: Callable[[str], str] = unchanged) -> list[str]:
    """One line per neighbour: its label and first captions (each passed through ``clean``), as given to the captioner."""
    lines = []
    for number, hit in enumerate(context, 1):
        parts = []
        label = clean(hit.label) if hit.label else ""
        if label:
            parts.append(f"label: {label}")
        captions = [c for c in (clean(c) for c in hit.captions[:CONTEXT_CAPTIONS_PER_HIT] if c) if c]
        if captions:
            parts.append("; ".join(captions))
        if parts:
            lines.append(f"{number}. (similarity {hit.score:.2f}) " + " | ".join(parts))
    return lines
