"""Create: retrieval-guided image synthesis. A query and/or an image retrieves the collection's nearest rows; a
fusion prompt joins the query with their captions and RAG_CONTEXT_COLUMNS values within the text encoder's
window; the best reference's image is the init image of a diffusers image-to-image pipeline; a safety check
runs on every image before it is shown.

Modules: ``options`` (RAG_CREATE, RAG_CREATE_MODEL, ... and the defaults per hardware), ``checks`` (the /create
parameters), ``references`` (search and init image through rag.pipeline), ``fusion`` (the prompt by priority
within 77 tokens), ``generator`` (the lazily loaded diffusers pipeline, precision, seeds, memory), ``safety``
(the model's SD safety checker, else a CLIP concept check), ``creator`` (one creation end to end, on ZeroGPU
inside ``@spaces.GPU``, on a CPU at lower priority than searches).
"""

from __future__ import annotations

from .checks import MAX_REFERENCES, CreateParams, check_params
from .creator import Creation, Creator
from .fusion import FusionPrompt, PromptPart, fuse, prompt_parts
from .generator import Generator, loaded_generators, shared_generator
from .options import DEFAULT_MODEL, CreateOptions, create_mode, create_state
from .safety import FLAGGED_MESSAGE, SafetyVerdict

__all__ = [
    "DEFAULT_MODEL", "FLAGGED_MESSAGE", "MAX_REFERENCES", "Creation", "CreateOptions", "CreateParams", "Creator",
    "FusionPrompt", "Generator", "PromptPart", "SafetyVerdict", "check_params", "create_mode", "create_state",
    "fuse", "loaded_generators", "prompt_parts", "shared_generator",
]
