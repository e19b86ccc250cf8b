"""Qwen2-VL-Instruct captioner: the neighbours' captions and labels go into its chat prompt beside the image.

Everything user- or collection-supplied is stripped of the tokenizer's control tokens before it enters the
chat template (rag.models.prompt_safety); images beyond Qwen2-VL's aspect-ratio limit are padded; generation alone
runs inside ``@spaces.GPU`` on ZeroGPU (rag.models.zerogpu), in the precision rag.models.devices picks (never
float16: Qwen2 overflows there). Non-finite logits or degenerate text become a CaptionerError (caption_types).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from PIL import Image

from rag.models.caption_types import (
    CaptionResult, Neighbour, checked_text, context_lines, require_finite, unchanged, usable_caption, watch_logits,
)
from rag.models.devices import captioner_dtype, generator_device
from rag.errors import CaptionerError
from rag.images.decode import pad_to_aspect
from rag.models.prompt_safety import TokenFilter
from rag.models.zerogpu import on_gpu

QWEN_MAX_NEW_TOKENS = 96
QWEN_MAX_PIXELS = 448 * 448
# Qwen2-VL's smart_resize refuses a long/short side ratio above 200 (transformers qwen2_vl image processor).
QWEN_MAX_ASPECT = 200
QWEN_SYSTEM = "You describe images accurately and concisely."
DEFAULT_ASK = "Describe this image in one or two sentences."
HUB_KWARGS = ("token", "revision", "cache_dir", "local_files_only")


def qwen_user_text(
    context: Sequence[Neighbour], question: str | None, clean: Callable[[str], str] = unchanged,
    columns: Sequence[str] = (),
) -> str:
    """The text beside the image in the Qwen2-VL chat: retrieved context (captions, labels and the metadata
    ``columns``), then the instruction (all ``clean``ed)."""
    ask = (clean(question) if question else "") or DEFAULT_ASK
    lines = context_lines(context, clean, columns)
    if not lines:
        return ask
    return (
        "Images in the collection that look similar are described as follows:\n"
        + "\n".join(lines)
        + "\nUse these descriptions only where they agree with what you see in the image.\n"
        + ask
    )


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
        self.device = generator_device(device)
        self.dtype = captioner_dtype(self.device, self.kind)
        try:
            self.processor = load_qwen2vl_processor(model_id, token=token, max_pixels=QWEN_MAX_PIXELS)
            self.model = Qwen2VLForConditionalGeneration.from_pretrained(model_id, token=token, dtype=self.dtype)
        except (OSError, ValueError, ImportError) as exc:
            raise CaptionerError(f"Could not load the Qwen2-VL captioner {model_id!r}: {exc}") from exc
        self.model.to(self.device).eval()  # on ZeroGPU the move is emulated until a GPU is attached
        self.clean = TokenFilter(self.processor.tokenizer)
        self._run = on_gpu(self._generate) if self.device.startswith("cuda") else self._generate

    def _generate(self, inputs: dict[str, Any]) -> tuple[torch.Tensor, bool]:
        """The only GPU work: inputs to the model's device, greedy generation; token ids back on the CPU, and
        whether every logit was finite."""
        inputs = {k: v.to(self.model.device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        with torch.inference_mode(), watch_logits(self.model) as watch:
            output = self.model.generate(**inputs, max_new_tokens=QWEN_MAX_NEW_TOKENS, do_sample=False).cpu()
        return output, watch.finite

    def _chat(self, image: Image.Image, user_text: str) -> str:
        messages = [
            {"role": "system", "content": [{"type": "text", "text": QWEN_SYSTEM}]},
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": user_text}]},
        ]
        prompt = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        image = pad_to_aspect(image, QWEN_MAX_ASPECT)
        inputs = self.processor(text=[prompt], images=[image], return_tensors="pt")
        output, finite = self._run(dict(inputs))
        require_finite(finite, self.dtype)
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        return self.processor.batch_decode(new_tokens, skip_special_tokens=True)[0].strip()

    def caption(self, images: Sequence[Image.Image]) -> list[str]:
        """Plain captions, one chat per image ("" where Qwen2-VL wrote nothing usable)."""
        return [usable_caption(self._chat(image, qwen_user_text([], None))) for image in images]

    def write_description(
        self, image: Image.Image, context: Sequence[Neighbour], question: str | None = None,
        columns: Sequence[str] = (),
    ) -> CaptionResult:
        """Chat with the image and the retrieved captions/labels/metadata ``columns`` (control tokens removed) in
        the prompt."""
        user_text = qwen_user_text(context, question, self.clean, columns)
        text = checked_text(self._chat(image, user_text))
        return CaptionResult(text, f"[system] {QWEN_SYSTEM}\n[user] <image>\n{user_text}")
