"""The models and where they run: the CLIP encoder, its int8/fp16 conversions and ONNX towers, devices and
dtypes per hardware, ZeroGPU, and the captioners (GIT, Qwen2-VL) with their shared types and prompt safety.
"""

from rag.models.caption_types import CaptionResult, Captioner, Neighbour
from rag.models.captioner import load_captioner
from rag.models.encoder import Encoder
from rag.models.quantize import quantize_encoder

__all__ = ["CaptionResult", "Captioner", "Encoder", "Neighbour", "load_captioner", "quantize_encoder"]
