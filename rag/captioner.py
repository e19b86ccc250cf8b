"""GIT and Qwen2-VL behind one interface, each given the retrieved neighbours' captions as context.

* Qwen2-VL (GPU): the neighbours' captions and labels go into the chat prompt beside the image.
* GIT (CPU): GIT writes several beam candidates; they are pooled with the neighbours' captions and
  reranked by CLIP image-text similarity plus agreement with the neighbours (consensus reranking,
  Devlin et al. 2015). With no context this is plain GIT captioning (its best beam).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import numpy as np
import torch
from PIL import Image

from .config import DEFAULT_CAPTIONER_MODELS
from .encoder import Encoder, pick_device
from .errors import CaptionerError, ConfigError, RagError

log = logging.getLogger(__name__)

GIT_BEAMS = 5
GIT_MAX_NEW_TOKENS = 30
QWEN_MAX_NEW_TOKENS = 96
QWEN_MAX_PIXELS = 448 * 448
CONSENSUS_WEIGHT = 0.5
CONTEXT_CAPTIONS_PER_HIT = 2
ZERO_GPU_DURATION = 60


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


def context_lines(context: Sequence[Neighbour]) -> list[str]:
    """One line per neighbour: its label and first captions, as given to the captioner."""
    lines = []
    for number, hit in enumerate(context, 1):
        parts = []
        if hit.label:
            parts.append(f"label: {hit.label}")
        captions = [c for c in hit.captions[:CONTEXT_CAPTIONS_PER_HIT] if c]
        if captions:
            parts.append("; ".join(captions))
        if parts:
            lines.append(f"{number}. (similarity {hit.score:.2f}) " + " | ".join(parts))
    return lines


def on_zero_gpu() -> bool:
    """True on Hugging Face ZeroGPU hardware (the `spaces` package sets this variable)."""
    return os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "true")


def choose_captioner(kind: str) -> str:
    """Resolve ``auto``: Qwen2-VL when a GPU (CUDA or ZeroGPU) is there, else GIT."""
    if kind != "auto":
        return kind
    return "qwen2-vl" if torch.cuda.is_available() or on_zero_gpu() else "git"


class GitCaptioner:
    """microsoft/git-base-coco style captioner; retrieval context reranks its beam candidates."""

    kind = "git"

    def __init__(self, model_id: str, encoder: Encoder, device: str | None = None, token: str | None = None) -> None:
        from transformers import AutoModelForCausalLM, AutoProcessor

        self.model_id = model_id
        self.encoder = encoder
        self.device = pick_device(device)
        try:
            self.processor = AutoProcessor.from_pretrained(model_id, token=token)
            self.model = AutoModelForCausalLM.from_pretrained(model_id, token=token).to(self.device).eval()
        except (OSError, ValueError, ImportError) as exc:
            raise CaptionerError(f"Could not load the GIT captioner {model_id!r}: {exc}") from exc

    def _generate(self, images: Sequence[Image.Image], beams: int, question: str | None = None) -> list[list[str]]:
        inputs = self.processor(images=list(images), return_tensors="pt")
        kwargs: dict[str, Any] = {"pixel_values": inputs["pixel_values"].to(self.device)}
        prefix = ""
        if question:
            tokenizer = self.processor.tokenizer
            ids = tokenizer(question, add_special_tokens=False).input_ids
            kwargs["input_ids"] = torch.tensor([[tokenizer.cls_token_id, *ids]] * len(images), device=self.device)
            prefix = tokenizer.decode(ids, skip_special_tokens=True).strip()
        with torch.inference_mode():
            output = self.model.generate(
                **kwargs, num_beams=beams, num_return_sequences=beams, max_new_tokens=GIT_MAX_NEW_TOKENS
            )
        texts = self.processor.batch_decode(output, skip_special_tokens=True)
        if prefix:
            texts = [t.strip()[len(prefix):] if t.strip().lower().startswith(prefix.lower()) else t for t in texts]
        texts = [" ".join(t.split()) for t in texts]
        return [texts[i * beams : (i + 1) * beams] for i in range(len(images))]

    def caption(self, images: Sequence[Image.Image]) -> list[str]:
        """Plain captions (best beam), used by index_build --caption-missing."""
        return [candidates[0] for candidates in self._generate(images, beams=3)]

    def write_description(
        self, image: Image.Image, context: Sequence[Neighbour], question: str | None = None
    ) -> CaptionResult:
        """Best of GIT's beams and the neighbours' captions, by CLIP similarity to the image plus consensus."""
        beams = [c for c in dict.fromkeys(self._generate([image], GIT_BEAMS, question)[0]) if c]
        if not context:
            text = beams[0] if beams else ""
            return CaptionResult(text, f"GIT ({self.model_id}), no retrieved context: best of {GIT_BEAMS} beams.")
        retrieved = [c for hit in context for c in hit.captions[:CONTEXT_CAPTIONS_PER_HIT] if c]
        candidates = list(dict.fromkeys(beams + retrieved))
        if not candidates:
            return CaptionResult("", "GIT produced no text and the neighbours have no captions.")
        image_vec = self.encoder.encode_images([image])[0]
        cand_vecs = self.encoder.encode_texts(candidates)
        similarity = cand_vecs @ image_vec
        consensus = (cand_vecs @ self.encoder.encode_texts(retrieved).T).mean(axis=1) if retrieved else 0.0
        scores = similarity + CONSENSUS_WEIGHT * consensus
        order = np.argsort(-scores)
        lines = [
            f"{'GIT' if candidates[i] in beams else 'retrieved'}\t{scores[i]:.3f}\t{candidates[i]}" for i in order
        ]
        prompt = (
            f"GIT ({self.model_id}) beam candidates pooled with the captions of {len(context)} retrieved neighbours,\n"
            f"ranked by CLIP(image, text) + {CONSENSUS_WEIGHT} x mean CLIP(text, neighbour captions):\n"
            + "\n".join(context_lines(context))
            + "\n\nsource\tscore\tcandidate\n"
            + "\n".join(lines)
        )
        return CaptionResult(candidates[int(order[0])], prompt)


QWEN_SYSTEM = "You describe images accurately and concisely."


def qwen_user_text(context: Sequence[Neighbour], question: str | None) -> str:
    """The text beside the image in the Qwen2-VL chat: retrieved context, then the instruction."""
    ask = question.strip() if question else "Describe this image in one or two sentences."
    lines = context_lines(context)
    if not lines:
        return ask
    return (
        "Images in the collection that look similar are described as follows:\n"
        + "\n".join(lines)
        + "\nUse these descriptions only where they agree with what you see in the image.\n"
        + ask
    )


HUB_KWARGS = ("token", "revision", "cache_dir", "local_files_only")


def load_qwen2vl_processor(model_id: str, **kwargs: Any) -> Any:
    """The Qwen2-VL processor: ``AutoProcessor`` where torchvision is installed, else an image+text one.

    transformers 5 cannot build a Qwen2-VL processor without torchvision (its video processor needs it),
    and the Space's requirements do not pin torchvision; describing images never touches the video part.
    """
    from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer, Qwen2VLProcessor
    from transformers.utils import is_torchvision_available

    if is_torchvision_available():
        return AutoProcessor.from_pretrained(model_id, **kwargs)

    class ImageTextQwen2VLProcessor(Qwen2VLProcessor):
        """Qwen2VLProcessor that accepts a missing video processor."""

        def check_argument_for_proper_class(self, argument_name: str, argument: Any) -> Any:
            if argument is None and argument_name == "video_processor":
                return None
            return super().check_argument_for_proper_class(argument_name, argument)

    tokenizer = AutoTokenizer.from_pretrained(model_id, **{k: v for k, v in kwargs.items() if k in HUB_KWARGS})
    image_processor = AutoImageProcessor.from_pretrained(model_id, **kwargs)
    return ImageTextQwen2VLProcessor(
        image_processor=image_processor, tokenizer=tokenizer, video_processor=None, chat_template=tokenizer.chat_template
    )


class Qwen2VLCaptioner:
    """Qwen2-VL-Instruct with the neighbours' captions and labels in its chat prompt."""

    kind = "qwen2-vl"

    def __init__(self, model_id: str, device: str | None = None, token: str | None = None) -> None:
        from transformers import Qwen2VLForConditionalGeneration

        self.model_id = model_id
        self.device = "cuda" if on_zero_gpu() else pick_device(device)
        dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        try:
            self.processor = load_qwen2vl_processor(model_id, token=token, max_pixels=QWEN_MAX_PIXELS)
            self.model = Qwen2VLForConditionalGeneration.from_pretrained(model_id, token=token, dtype=dtype)
        except (OSError, ValueError, ImportError) as exc:
            raise CaptionerError(f"Could not load the Qwen2-VL captioner {model_id!r}: {exc}") from exc
        self.model.to(self.device).eval()  # on ZeroGPU the move is deferred until a GPU is attached
        self._run = _zero_gpu_wrap(self._generate)

    def _generate(self, inputs: dict[str, Any]) -> torch.Tensor:
        inputs = {k: v.to(self.model.device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        with torch.inference_mode():
            return self.model.generate(**inputs, max_new_tokens=QWEN_MAX_NEW_TOKENS, do_sample=False).cpu()

    def _chat(self, image: Image.Image, user_text: str) -> str:
        messages = [
            {"role": "system", "content": [{"type": "text", "text": QWEN_SYSTEM}]},
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": user_text}]},
        ]
        prompt = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        inputs = self.processor(text=[prompt], images=[image], return_tensors="pt")
        try:
            output = self._run(dict(inputs))
        except RagError:
            raise
        except Exception as exc:  # ZeroGPU quota and allocation errors arrive as plain exceptions
            if "quota" in str(exc).lower() or "gpu" in type(exc).__name__.lower():
                raise CaptionerError(f"The GPU is not available right now ({exc}). Try again later.") from exc
            raise
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        return self.processor.batch_decode(new_tokens, skip_special_tokens=True)[0].strip()

    def caption(self, images: Sequence[Image.Image]) -> list[str]:
        """Plain captions, one chat per image."""
        return [self._chat(image, qwen_user_text([], None)) for image in images]

    def write_description(
        self, image: Image.Image, context: Sequence[Neighbour], question: str | None = None
    ) -> CaptionResult:
        """Chat with the image and the retrieved captions/labels in the prompt."""
        user_text = qwen_user_text(context, question)
        return CaptionResult(self._chat(image, user_text), f"[system] {QWEN_SYSTEM}\n[user] <image>\n{user_text}")


def _zero_gpu_wrap(function):
    """Decorate the GPU call with ``spaces.GPU`` on ZeroGPU hardware; unchanged elsewhere."""
    if not on_zero_gpu():
        return function
    try:
        import spaces
    except ImportError:
        return function
    return spaces.GPU(duration=ZERO_GPU_DURATION)(function)


def load_captioner(
    kind: str, model_id: str | None, encoder: Encoder, device: str | None = None, token: str | None = None
) -> Captioner:
    """Build the configured captioner (``auto`` resolved by hardware)."""
    kind = choose_captioner(kind)
    model_id = model_id or DEFAULT_CAPTIONER_MODELS[kind]
    log.info("loading captioner %s (%s)", kind, model_id)
    if kind == "git":
        return GitCaptioner(model_id, encoder, device=device, token=token)
    if kind == "qwen2-vl":
        return Qwen2VLCaptioner(model_id, device=device, token=token)
    raise ConfigError(f"RAG_CAPTIONER must be one of auto, git, qwen2-vl; not {kind!r}.")
