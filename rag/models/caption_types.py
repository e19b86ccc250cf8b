"""What every captioner shares: the neighbour protocol, the result type, the context lines shown to it (captions,
label and the configured metadata columns, RAG_CONTEXT_COLUMNS), and the guard on what it writes (non-finite
logits or a degenerate string become a CaptionerError, never silent text)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import torch
from PIL import Image

from rag.errors import CaptionerError

CONTEXT_CAPTIONS_PER_HIT = 2


class Neighbour(Protocol):
    """What a captioner reads of a retrieved row (rag.pipeline.Hit has these; ``id`` and ``metadata``, when a
    neighbour has them, name the row in the candidates and give the RAG_CONTEXT_COLUMNS values)."""

    captions: list[str]
    label: str | None
    score: float


@dataclass
class Candidate:
    """One text GIT's reranking weighed: where it came from, how well it matches the image, how well it agrees
    with the neighbours' captions, and the total it was ranked by (the first of a CaptionResult's won)."""

    text: str
    source: str  # "captioner" (a beam GIT wrote) or "neighbour" (a retrieved caption)
    row: int | None  # the neighbour's row id, for a retrieved caption
    image_match: float
    agreement: float
    score: float

    def to_dict(self) -> dict[str, Any]:
        """JSON form (the API's "candidates")."""
        return asdict(self)


@dataclass
class CaptionResult:
    """A description plus the exact context/prompt the captioner was given (shown in the UI), and for a reranking
    captioner the candidates it weighed, best first."""

    text: str
    prompt: str
    candidates: list[Candidate] = field(default_factory=list)


class Captioner(Protocol):
    """What the pipeline and the builder need of a captioner (GitCaptioner and Qwen2VLCaptioner)."""

    kind: str
    model_id: str

    def caption(self, images: Sequence[Image.Image]) -> list[str]: ...

    def write_description(
        self, image: Image.Image, context: Sequence[Neighbour], question: str | None = None,
        columns: Sequence[str] = (),
    ) -> CaptionResult: ...


def captioner_label(captioner: Captioner) -> str:
    """How the UI, /info and reports name a captioner: ``kind (model id)``."""
    return f"{captioner.kind} ({captioner.model_id})"


def unchanged(text: str) -> str:
    """The identity: the default ``clean`` step for text that needs none."""
    return text


def column_values(hit: Neighbour, columns: Sequence[str], clean: Callable[[str], str] = unchanged) -> list[str]:
    """"column: value" for each configured metadata column the neighbour has a value in (RAG_CONTEXT_COLUMNS)."""
    metadata = getattr(hit, "metadata", None) or {}
    values = ((column, clean(" ".join(str(metadata.get(column) or "").split()))) for column in columns)
    return [f"{column}: {value}" for column, value in values if value]


def context_lines(
    context: Sequence[Neighbour], clean: Callable[[str], str] = unchanged, columns: Sequence[str] = ()
) -> list[str]:
    """One line per neighbour: its label, the configured metadata ``columns`` and first captions (each passed
    through ``clean``), as given to the captioner."""
    lines = []
    for number, hit in enumerate(context, 1):
        parts = []
        label = clean(hit.label) if hit.label else ""
        if label:
            parts.append(f"label: {label}")
        parts += column_values(hit, columns, clean)
        captions = [c for c in (clean(c) for c in hit.captions[:CONTEXT_CAPTIONS_PER_HIT] if c) if c]
        if captions:
            parts.append("; ".join(captions))
        if parts:
            lines.append(f"{number}. (similarity {hit.score:.2f}) " + " | ".join(parts))
    return lines


# A model whose activations overflow (Qwen2 in float16 on a T4) yields NaN logits; greedy decoding then picks
# token 0 at every step, "!" in Qwen2's vocabulary, and the visitor would read "!!!!" as if it were an answer.
NON_FINITE = (
    "The captioner's arithmetic overflowed ({dtype}: non-finite scores), so what it wrote would be garbage. "
    "Search still works; this model needs another precision or hardware (e.g. RAG_CAPTIONER=git)."
)
DEGENERATE = "The captioner wrote no usable text ({shown}). Search still works; try another image or question."
MIN_REPEAT = 4  # "!!!!" is degenerate; a one-character answer ("3" to "how many?") is not


class LogitWatch:
    """Remembers whether the model's output layer produced any NaN/inf while it was watched.

    The flag stays a tensor on the model's device (no GPU sync per decoding step) and is read once at the end.
    """

    def __init__(self) -> None:
        self.flag: torch.Tensor | None = None

    def __call__(self, _module: Any, _args: Any, output: Any) -> None:
        logits = getattr(output, "logits", output)
        if isinstance(logits, torch.Tensor) and logits.is_floating_point():
            bad = (~torch.isfinite(logits)).any()
            self.flag = bad if self.flag is None else self.flag | bad

    @property
    def finite(self) -> bool:
        """True when every watched logit was finite (or nothing was produced)."""
        return self.flag is None or not bool(self.flag)


@contextlib.contextmanager
def watch_logits(model: Any) -> Iterator[LogitWatch]:
    """A LogitWatch on ``model``'s output layer (its ``get_output_embeddings()``, else the model) while inside."""
    watch = LogitWatch()
    layer = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    handle = (layer if layer is not None else model).register_forward_hook(watch)
    try:
        yield watch
    finally:
        handle.remove()


def require_finite(finite: bool, dtype: Any) -> None:
    """Raise CaptionerError when generation saw non-finite logits."""
    if not finite:
        raise CaptionerError(NON_FINITE.format(dtype=str(dtype).replace("torch.", "")))


def is_degenerate(text: str) -> bool:
    """Empty, only punctuation/symbols ("!!!!", "..."), or one character repeated (``MIN_REPEAT``+ times)."""
    chars = "".join(text.split())
    if not any(c.isalnum() for c in chars):
        return True
    return len(chars) >= MIN_REPEAT and len(set(chars)) == 1


def usable_caption(text: str) -> str:
    """A build's caption: ``text``, or "" when it is degenerate (a collection keeps no garbage; one odd image
    does not stop a build of thousands, while non-finite logits, a broken model, still do)."""
    return "" if is_degenerate(text) else text


def checked_text(text: str) -> str:
    """``text``, or CaptionerError when it is degenerate (what a broken model writes, never an answer)."""
    if is_degenerate(text):
        shown = repr(text[:20]) if text.strip() else "nothing"
        raise CaptionerError(DEGENERATE.format(shown=shown))
    return text
