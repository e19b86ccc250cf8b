"""A creation end to end: references from the collection, the fusion prompt, the init image, the generation on
its device, the safety check, and the record of what was done (``Creation.to_dict`` is what /create returns).

With ``use_context`` the best reference's image is the init image (image to image at ``strength``) and the
prompt fuses the references' captions and RAG_CONTEXT_COLUMNS values; without it the query alone is the
prompt, and the caller's image (if any) is the init image, else the model generates from text alone: the
base generation the evaluation compares against.

Where it runs: on ZeroGPU the generation and the model's safety checker run inside ``@spaces.GPU`` (the
entry point registered when the Creator is made, before launch: rag.models.zerogpu). On a CPU they run in a
thread of lower scheduling priority, so that other visitors' searches (a few ms of CLIP and FAISS) are served
first while a creation (seconds) runs: benchmarks/create_speed.py measures the search latency during a creation.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from rag.create.checks import CreateParams, check_params
from rag.create.fusion import FusionPrompt, fuse, prompt_parts, token_counter
from rag.create.generator import Generator, Request, shared_generator
from rag.create.options import CreateOptions
from rag.create.references import find_references, reference_image, user_image
from rag.create.safety import FLAGGED_MESSAGE, NOT_CHECKED, ClipConceptCheck, SafetyVerdict
from rag.errors import InvalidInput
from rag.images.decode import ImageInput
from rag.models.devices import on_zero_gpu
from rag.models.zerogpu import in_fresh_thread, on_gpu
from rag.pipeline import Hit, Pipeline

log = logging.getLogger(__name__)

CREATE_GPU_DURATION = 20  # s per ZeroGPU call: a 4-step 512 px creation is estimated < 1 s on an A10G
# (benchmarks/create_speed.py, from FLOPs); the rest is margin for the first call's weight load (not measured)
CREATE_NICE = 10  # scheduling priority of CPU creations (0 = normal, 19 = lowest)
Status = Callable[[str], None]
Steps = Callable[[int, int], None]


@dataclass
class Creation:
    """A finished creation: the image (None when the safety check flagged it) and how it was made."""

    image: Image.Image | None
    params: CreateParams
    prompt: FusionPrompt
    references: list[Hit]
    init_id: int | None
    init: str | None  # "reference", "your image" or None (text to image)
    model: str
    safety: SafetyVerdict
    timings: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def message(self) -> str | None:
        return FLAGGED_MESSAGE if self.safety.flagged else None

    def to_dict(self) -> dict[str, Any]:
        """What /create returns besides the image."""
        p = self.params
        return {
            "prompt": self.prompt.text, "references": [h.to_dict() for h in self.references],
            "init_id": self.init_id, "init": self.init, "seconds": round(sum(self.timings.values()), 3),
            "seed": p.seed, "model": self.model, "query": p.query, "k": p.k, "strength": p.strength,
            "guidance": p.guidance, "steps": p.steps, "use_context": p.use_context,
            "prompt_tokens": self.prompt.tokens, "prompt_budget": self.prompt.budget,
            "prompt_parts": self.prompt.to_dict()["used"], "prompt_cut": self.prompt.to_dict()["cut"],
            "flagged": self.safety.flagged, "message": self.message, "safety": self.safety.to_dict(),
            "timings": {name: round(value, 3) for name, value in self.timings.items()}, **self.details,
        }


def at_lower_priority(function: Callable[..., Any], *args: Any) -> Any:
    """``function(*args)`` in a fresh thread niced to CREATE_NICE: its torch worker threads, created by it, inherit
    the priority, so the scheduler serves the main threads' short searches first."""

    def run() -> Any:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), CREATE_NICE)
        except (OSError, AttributeError):  # not Linux, or not allowed: run at normal priority
            pass
        return function(*args)

    return in_fresh_thread(run)


class Creator:
    """Creates images for any Pipeline (the Space's or a session's) with one shared generator."""

    def __init__(self, options: CreateOptions, context_columns: Sequence[str] = (), generator: Generator | None = None):
        self.options = options
        self.context_columns = tuple(context_columns)
        self.generator = generator or shared_generator(options)
        self._concept_checks: dict[int, ClipConceptCheck] = {}
        # ZeroGPU: registered now (before launch) so that `spaces` reports it at start-up
        self._on_device = on_gpu(self.generator.run, duration=CREATE_GPU_DURATION)

    @property
    def loaded(self) -> bool:
        return self.generator.loaded

    def warm(self) -> None:
        """Load the generator now: on ZeroGPU its weights must be placed on "cuda" before launch."""
        self.generator.load()

    def _generate(self, request: Request, on_step: Steps | None) -> Any:
        if on_zero_gpu():
            return self._on_device(request)  # progress callbacks cannot cross into the forked GPU worker
        if self.options.device.startswith("cuda"):
            return self.generator.run(request, on_step)
        return at_lower_priority(self.generator.run, request, on_step)

    def _check(self, pipeline: Pipeline, image: Image.Image, verdict: SafetyVerdict | None) -> SafetyVerdict:
        if not self.options.safety:
            return NOT_CHECKED
        if verdict is not None:
            return verdict
        key = id(pipeline.encoder)
        if key not in self._concept_checks:
            self._concept_checks[key] = ClipConceptCheck(pipeline.encoder)
        return self._concept_checks[key].check(image)

    def create(
        self, pipeline: Pipeline, query: Any = "", image: ImageInput | None = None, k: Any = 3, strength: Any = 0.55,
        guidance: Any = 7.5, steps: Any = 4, seed: Any = 0, use_context: Any = True, exclude: Sequence[int] = (),
        status: Status | None = None, on_step: Steps | None = None,
    ) -> Creation:
        """One creation (see the module docstring); bad input raises InvalidInput before anything runs."""
        params = check_params(query, k, strength, guidance, steps, seed, use_context)
        picture = user_image(image)
        if not params.query and picture is None:
            raise InvalidInput("Describe the picture to create, or add an image (or both).")
        timings: dict[str, float] = {}
        started = time.perf_counter()
        hits = find_references(pipeline, params.query, picture, params.k, exclude) if params.use_context else []
        timings["search"] = time.perf_counter() - started
        if not self.generator.loaded:
            if status is not None:
                status(f"Loading the image generator {self.options.model} (first use: this takes a while)…")
            started = time.perf_counter()
            self.generator.load()
            timings["load"] = time.perf_counter() - started
        fusion, init_id, init_kind, init = self._plan(pipeline, params, hits, picture)
        self.generator.check_steps(params.steps, params.strength, init is not None)
        request = Request(fusion.text, init, params.strength, params.guidance, params.steps, params.seed)
        generated = self._generate(request, on_step)
        timings["generate"] = generated.seconds
        verdict = self._check(pipeline, generated.image, generated.verdict)
        timings["safety"] = verdict.seconds
        self.generator.free_if_short()
        return Creation(
            image=None if verdict.flagged else generated.image, params=params, prompt=fusion, references=hits,
            init_id=init_id, init=init_kind, model=self.options.model, safety=verdict, timings=timings,
            details=self._details(pipeline),
        )

    def _plan(self, pipeline: Pipeline, params: CreateParams, hits: list[Hit], picture: Image.Image | None):
        """The fusion prompt and the init image (row id, kind, image) for this request."""
        parts = prompt_parts(params.query, hits, self.context_columns if params.use_context else ())
        fusion = fuse(parts, token_counter(self.generator.tokenizer), self.generator.window)
        if params.use_context and hits:
            return fusion, hits[0].id, "reference", reference_image(pipeline, hits[0])
        if picture is not None:
            return fusion, None, "your image", picture
        return fusion, None, None, None

    def _details(self, pipeline: Pipeline) -> dict[str, Any]:
        columns = set(pipeline.collection.extra_columns)
        return {
            "size": self.options.size, "device": self.options.device,
            "dtype": str(self.generator.dtype).removeprefix("torch."), "vae": self.options.vae,
            "context_columns": [c for c in self.context_columns if c in columns],
            "missing_context_columns": [c for c in self.context_columns if c not in columns],
        }
