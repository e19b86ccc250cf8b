"""GIT and Qwen2-VL behind one interface, each given the retrieved neighbours' captions as context.

* Qwen2-VL (GPU, rag.models.qwen2vl): the neighbours' captions, labels and RAG_CONTEXT_COLUMNS values go into the
  chat prompt beside the image.
* GIT (CPU): GIT writes several beam candidates; they are pooled with the neighbours' captions and
  reranked by CLIP image-text similarity plus agreement with the neighbours (consensus reranking,
  Devlin et al. 2015). With no context this is plain GIT captioning (its best beam).

Which captioner ``auto`` means, and on which device/dtype each runs, is decided in rag.models.devices. What
either writes is guarded (rag.models.caption_types): non-finite logits or degenerate text raise CaptionerError.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from rag.models.caption_types import (
    CONTEXT_CAPTIONS_PER_HIT, DEGENERATE, Candidate, Captioner, CaptionResult, Neighbour, captioner_label, checked_text,
    context_lines, is_degenerate, require_finite, usable_caption, watch_logits,
)
from rag.config import DEFAULT_CAPTIONER_MODELS
from rag.models.devices import captioner_dtype, main_device, on_zero_gpu, resolve_captioner
from rag.models.encoder import Encoder
from rag.errors import CaptionerError, ConfigError
from rag.models.prompt_safety import TokenFilter
from rag.models.qwen2vl import QWEN_MAX_NEW_TOKENS, QWEN_MAX_PIXELS, Qwen2VLCaptioner, load_qwen2vl_processor, qwen_user_text

__all__ = [
    "CONTEXT_CAPTIONS_PER_HIT",
    "Candidate",
    "QWEN_MAX_NEW_TOKENS",
    "QWEN_MAX_PIXELS",
    "CaptionResult",
    "Captioner",
    "GitCaptioner",
    "Neighbour",
    "Qwen2VLCaptioner",
    "captioner_label",
    "choose_captioner",
    "context_lines",
    "load_captioner",
    "load_qwen2vl_processor",
    "on_zero_gpu",
    "qwen_user_text",
]

log = logging.getLogger(__name__)

GIT_BEAMS = 5
GIT_CONTEXT_BEAMS = 3  # with retrieved captions in the pool, fewer beams (benchmarks/describe_speed.py)
GIT_MAX_NEW_TOKENS = 20  # COCO-style captions are ~10-14 tokens; 30 cost 1.5x the time (benchmarks/describe_speed.py)
CONSENSUS_WEIGHT = 0.5


def choose_captioner(kind: str, device: str | None = None) -> str:
    """Resolve ``auto`` by the device the captioner would really use (``RAG_DEVICE=cpu`` -> GIT)."""
    return resolve_captioner(kind, device)


class GitCaptioner:
    """microsoft/git-base-coco style captioner; retrieval context reranks its beam candidates."""

    kind = "git"

    def __init__(self, model_id: str, encoder: Encoder, device: str | None = None, token: str | None = None) -> None:
        from transformers import AutoModelForCausalLM, AutoProcessor

        self.model_id = model_id
        self.encoder = encoder
        self.device = main_device(device)
        self.dtype = captioner_dtype(self.device)
        try:
            self.processor = AutoProcessor.from_pretrained(model_id, token=token)
            model = AutoModelForCausalLM.from_pretrained(model_id, token=token, dtype=self.dtype)
            self.model = model.to(self.device).eval()
        except (OSError, ValueError, ImportError) as exc:
            raise CaptionerError(f"Could not load the GIT captioner {model_id!r}: {exc}") from exc
        self.clean = TokenFilter(self.processor.tokenizer)

    def _generate(self, images: Sequence[Image.Image], beams: int, question: str | None = None) -> list[list[str]]:
        inputs = self.processor(images=list(images), return_tensors="pt")
        kwargs: dict[str, Any] = {"pixel_values": inputs["pixel_values"].to(self.device, dtype=self.model.dtype)}
        prefix = ""
        question = self.clean(question) if question else None
        if question:
            tokenizer = self.processor.tokenizer
            ids = tokenizer(question, add_special_tokens=False).input_ids
            kwargs["input_ids"] = torch.tensor([[tokenizer.cls_token_id, *ids]] * len(images), device=self.device)
            prefix = tokenizer.decode(ids, skip_special_tokens=True).strip()
        with torch.inference_mode(), watch_logits(self.model) as watch:
            output = self.model.generate(
                **kwargs, num_beams=beams, num_return_sequences=beams, max_new_tokens=GIT_MAX_NEW_TOKENS
            )
        require_finite(watch.finite, self.model.dtype)
        texts = self.processor.batch_decode(output, skip_special_tokens=True)
        if prefix:
            texts = [t.strip()[len(prefix):] if t.strip().lower().startswith(prefix.lower()) else t for t in texts]
        texts = [" ".join(t.split()) for t in texts]
        return [texts[i * beams : (i + 1) * beams] for i in range(len(images))]

    def caption(self, images: Sequence[Image.Image]) -> list[str]:
        """Plain captions (best beam), used by index_build --caption-missing ("" where GIT wrote nothing usable)."""
        return [usable_caption(candidates[0]) for candidates in self._generate(images, beams=3)]

    def write_description(
        self, image: Image.Image, context: Sequence[Neighbour], question: str | None = None,
        columns: Sequence[str] = (),
    ) -> CaptionResult:
        """Best of GIT's beams and the neighbours' captions, by CLIP similarity to the image plus consensus.
        (GIT ranks texts: the neighbours' labels and metadata ``columns`` are listed in the prompt, not weighed.)"""
        count = GIT_CONTEXT_BEAMS if context else GIT_BEAMS
        beams = [c for c in dict.fromkeys(self._generate([image], count, question)[0]) if not is_degenerate(c)]
        if not context:
            text = checked_text(beams[0] if beams else "")
            return CaptionResult(text, f"GIT ({self.model_id}), no retrieved context: best of {GIT_BEAMS} beams.")
        ranked = self.rerank(image, beams, context)
        lines = [f"{'GIT' if c.source == 'captioner' else 'retrieved'}\t{c.score:.3f}\t{c.text}" for c in ranked]
        prompt = (
            f"GIT ({self.model_id}) beam candidates pooled with the captions of {len(context)} retrieved neighbours,\n"
            f"ranked by CLIP(image, text) + {CONSENSUS_WEIGHT} x mean CLIP(text, neighbour captions):\n"
            + "\n".join(context_lines(context, columns=columns))
            + "\n\nsource\tscore\tcandidate\n"
            + "\n".join(lines)
        )
        return CaptionResult(ranked[0].text, prompt, ranked)

    def rerank(self, image: Image.Image, beams: list[str], context: Sequence[Neighbour]) -> list[Candidate]:
        """GIT's beams and the neighbours' captions, best first: CLIP(image, text) + CONSENSUS_WEIGHT x mean
        CLIP(text, neighbour captions) (consensus reranking)."""
        retrieved = [c for hit in context for c in hit.captions[:CONTEXT_CAPTIONS_PER_HIT] if c]
        rows: dict[str, int | None] = {}
        for hit in context:
            for caption in hit.captions[:CONTEXT_CAPTIONS_PER_HIT]:
                rows.setdefault(caption, getattr(hit, "id", None))
        candidates = [c for c in dict.fromkeys(beams + retrieved) if not is_degenerate(c)]
        if not candidates:  # no usable beam and no usable neighbour caption
            raise CaptionerError(DEGENERATE.format(shown="nothing"))
        image_vec = self.encoder.encode_images([image])[0]
        cand_vecs = self.encoder.encode_texts(candidates)
        similarity = cand_vecs @ image_vec
        consensus = (
            (cand_vecs @ self.encoder.encode_texts(retrieved).T).mean(axis=1)
            if retrieved else np.zeros(len(candidates))
        )
        scores = similarity + CONSENSUS_WEIGHT * consensus
        return [
            Candidate(
                text=candidates[i], source="captioner" if candidates[i] in beams else "neighbour",
                row=None if candidates[i] in beams else rows[candidates[i]],
                image_match=round(float(similarity[i]), 4), agreement=round(float(consensus[i]), 4),
                score=round(float(scores[i]), 4),
            )
            for i in np.argsort(-scores, kind="stable")
        ]


def load_captioner(
    kind: str, model_id: str | None, encoder: Encoder, device: str | None = None, token: str | None = None
) -> Captioner:
    """Build the configured captioner (``auto`` resolved by hardware)."""
    kind = choose_captioner(kind, device)
    model_id = model_id or DEFAULT_CAPTIONER_MODELS[kind]
    log.info("loading captioner %s (%s)", kind, model_id)
    if kind == "git":
        return GitCaptioner(model_id, encoder, device=device, token=token)
    if kind == "qwen2-vl":
        return Qwen2VLCaptioner(model_id, device=device, token=token)
    raise ConfigError(f"RAG_CAPTIONER must be one of auto, git, qwen2-vl; not {kind!r}.")
