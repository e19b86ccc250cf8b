"""The image generator: a diffusers text-to-image / image-to-image pair, loaded on first use, seeded, checked.

``AutoPipelineForText2Image.from_pretrained(RAG_CREATE_MODEL)`` picks the pipeline class from the model's
``model_index.json`` (Stable Diffusion, latent consistency, ...); ``AutoPipelineForImage2Image.from_pipe`` makes
its image-to-image twin sharing the same weights. Precision by device (rag.models.devices): float32 on a CPU;
on CUDA bfloat16 where the GPU has it natively (A10G, L4, A100, H100; every ZeroGPU GPU), else float16 (a T4);
diffusers upcasts an SD autoencoder that overflows in float16 itself (``force_upcast``). Noise comes from a
CPU ``torch.Generator`` seeded per call, so the same seed and inputs give the same image on the same hardware.

Memory (CPU basic has 16 GB with the encoder and captioner loaded): nothing is loaded until the first
creation; the load is refused with a message when the free memory is below what the weights need, and the
generator is freed again when free memory runs short after a creation (the next one reloads it).
"""

from __future__ import annotations

import gc
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import torch
from PIL import Image, ImageOps

from rag.create.options import CreateOptions
from rag.create.safety import DiffusersSafetyCheck, SafetyVerdict, model_safety_check
from rag.errors import InvalidInput, RagError, ServiceError
from rag.models.devices import captioner_dtype

log = logging.getLogger(__name__)

WORKING_GB = 1.0  # activations and copies on top of the weights while loading and generating
FREE_BELOW_GB = 1.0  # after a creation, free the generator when less than this is left
WEIGHT_SUFFIXES = (".safetensors", ".bin")
StepCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class Request:
    """One generation: the prompt, the init image (None: text to image), and the sampler settings."""

    prompt: str
    init: Image.Image | None
    strength: float
    guidance: float
    steps: int
    seed: int


@dataclass
class Generated:
    """The image and what it cost; ``verdict`` is the model's own safety checker's, None when it has none."""

    image: Image.Image
    seconds: float
    verdict: SafetyVerdict | None


def available_gb() -> float:
    """Memory the system can still give this process, in GB."""
    return psutil.virtual_memory().available / 2**30


def weights_gb(folder: Path) -> float:
    """Size of the weight files under a pipeline folder, in GB (what loading them will take, in their dtype)."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES)) / 2**30


def model_folder(model: str, token: str | None = None) -> Path:
    """A local folder holding the pipeline: the folder itself, or the Hub snapshot (downloaded if needed)."""
    if Path(model).expanduser().is_dir():
        return Path(model).expanduser()
    from diffusers import DiffusionPipeline

    return Path(DiffusionPipeline.download(model, token=token))


class Generator:
    """One loaded (or not yet loaded) diffusers pipeline pair for ``options``; thread-safe loading."""

    def __init__(self, options: CreateOptions) -> None:
        self.options = options
        self.dtype = captioner_dtype(options.device, "diffusion")
        self.text2img: Any = None
        self.img2img: Any = None
        self.safety: DiffusersSafetyCheck | None = None
        self.load_seconds = 0.0
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self.text2img is not None

    def load(self) -> None:
        """Load the pipeline now (no-op when loaded); a failure is a ServiceError with one sentence."""
        with self._lock:
            if self.loaded:
                return
            started = time.perf_counter()
            try:
                self._load()
            except RagError:
                raise
            except Exception as exc:  # noqa: BLE001 - any loading failure becomes one readable message
                log.warning("could not load %s", self.options.model, exc_info=True)
                raise ServiceError(
                    f"Could not load the image generator {self.options.model} ({type(exc).__name__}: "
                    f"{' '.join(str(exc).split())[:200]}). Check RAG_CREATE_MODEL."
                ) from None
            self.load_seconds = time.perf_counter() - started
            log.info("image generator %s loaded in %.1f s", self.options.model, self.load_seconds)

    def _load(self) -> None:
        from diffusers import AutoencoderTiny, AutoPipelineForText2Image

        options = self.options
        folder = model_folder(options.model, options.token)
        vae_folder = model_folder(options.vae, options.token) if options.vae else None
        needed = weights_gb(folder) + (weights_gb(vae_folder) if vae_folder else 0.0) + WORKING_GB
        if not options.device.startswith("cuda") and available_gb() < needed:
            raise ServiceError(
                f"Not enough free memory to load the image generator now ({available_gb():.1f} GB free, about "
                f"{needed:.1f} GB needed). Try again later."
            )
        text2img = AutoPipelineForText2Image.from_pretrained(str(folder), dtype=self.dtype)
        if vae_folder is not None:
            text2img.vae = AutoencoderTiny.from_pretrained(str(vae_folder), dtype=self.dtype)
        self.adopt(text2img)

    def adopt(self, text2img: Any) -> None:
        """Serve an in-memory text-to-image pipeline (the loader's, or a benchmark's random-weight one): take its
        safety checker out, move it to the device, and make its image-to-image twin."""
        from diffusers import AutoPipelineForImage2Image

        options = self.options
        self.safety = model_safety_check(text2img) if options.safety else None
        if not options.safety and getattr(text2img, "safety_checker", None) is not None:
            text2img.safety_checker = None
        text2img.to(options.device)
        if self.safety is not None:
            self.safety.checker.to(options.device)
        text2img.set_progress_bar_config(disable=True)
        # the checker runs through rag.create.safety, not inside the pipeline (which would only black the image out)
        extra = {"requires_safety_checker": False} if "requires_safety_checker" in text2img.config else {}
        img2img = AutoPipelineForImage2Image.from_pipe(text2img, **extra)
        img2img.set_progress_bar_config(disable=True)
        self.text2img, self.img2img = text2img, img2img

    def free(self) -> None:
        """Drop the pipeline (the next creation loads it again)."""
        with self._lock:
            self.text2img = self.img2img = self.safety = None
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def free_if_short(self) -> bool:
        """Free the generator when free memory is below FREE_BELOW_GB (CPU only); True when it did."""
        if self.options.device.startswith("cuda") or available_gb() >= FREE_BELOW_GB:
            return False
        log.warning("freeing the image generator: %.1f GB of memory left", available_gb())
        self.free()
        return True

    # -- what a creation needs ------------------------------------------------------------------------

    @property
    def tokenizer(self) -> Any:
        return self.text2img.tokenizer

    @property
    def window(self) -> int:
        """Tokens the text encoder reads (77 for SD's CLIP), start and end tokens included."""
        return int(getattr(self.tokenizer, "model_max_length", 77) or 77)

    @property
    def few_step(self) -> bool:
        """A latent-consistency model (LCMScheduler): every step runs, whatever the strength."""
        return type(self.text2img.scheduler).__name__ == "LCMScheduler"

    def check_steps(self, steps: int, strength: float, image_to_image: bool) -> None:
        """A classic scheduler runs int(steps x strength) steps of an image-to-image call: at least one must remain."""
        if image_to_image and not self.few_step and int(steps * strength) < 1:
            least = math.ceil(1 / strength)
            raise InvalidInput(f"With strength {strength:g}, this model needs at least {least} steps "
                               f"(it runs steps × strength of them); got {steps}.")

    def run(self, request: Request, on_step: StepCallback | None = None) -> Generated:
        """Generate one image (and run the model's own safety checker on it, if it has one)."""
        self.load()
        started = time.perf_counter()

        def callback(pipe: Any, step: int, timestep: Any, tensors: dict) -> dict:
            if on_step is not None:
                on_step(step + 1, int(getattr(pipe, "_num_timesteps", 0) or request.steps))
            return tensors

        common = dict(prompt=request.prompt, num_inference_steps=request.steps, guidance_scale=request.guidance,
                      generator=torch.Generator("cpu").manual_seed(request.seed), callback_on_step_end=callback)
        side = self.options.size
        with torch.inference_mode():
            if request.init is None:
                image = self.text2img(**common, height=side, width=side).images[0]
            else:
                init = ImageOps.fit(request.init, (side, side), Image.Resampling.LANCZOS)
                image = self.img2img(**common, image=init, strength=request.strength).images[0]
        seconds = time.perf_counter() - started
        verdict = self.safety.check(image) if self.safety is not None else None
        return Generated(image, seconds, verdict)


_SHARED: dict[CreateOptions, Generator] = {}
_SHARED_LOCK = threading.Lock()


def shared_generator(options: CreateOptions) -> Generator:
    """The process's one Generator for ``options`` (sessions and tabs share loaded weights)."""
    with _SHARED_LOCK:
        if options not in _SHARED:
            _SHARED[options] = Generator(options)
        return _SHARED[options]


def loaded_generators() -> list[Generator]:
    """Every Generator this process made (tests reach the loaded safety checker through this)."""
    with _SHARED_LOCK:
        return list(_SHARED.values())
