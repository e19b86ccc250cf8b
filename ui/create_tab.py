"""The "Create" tab and its endpoint /create: a new image guided by what the search retrieved (rag.create).

/create returns the image and a dict (prompt, references, init_id, seconds, seed, model, ...); the page then
shows the references with their scores, the exact prompt (and what did not fit the text encoder's window),
and the init image, from that dict. ``RAG_CREATE=off`` (or ``auto`` without diffusers) adds neither the tab
nor the endpoint. One creation runs at a time on a CPU (the queue shows each visitor's place).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import gradio as gr

from rag.config import context_columns, hf_token
from rag.create import MAX_REFERENCES, CreateOptions, Creator, create_state
from rag.create.options import DEFAULT_GUIDANCE, DEFAULT_STEPS, DEFAULT_STRENGTH
from rag.errors import RagError, ServiceError
from rag.models.devices import generator_device, on_zero_gpu

from .components import hits_json, image_input, markdown_text, number_slider
from .context import AppContext
from .errors import scrub_paths

CREATE_LIMITS: dict[str, Any] = {"concurrency_id": "create", "concurrency_limit": 4 if on_zero_gpu() else 1}


def make_creator(ctx: AppContext) -> tuple[Creator | None, str | None]:
    """The Space's Creator from its variables, or the problem that stops Create (shown in the tab)."""
    _, problem = create_state()
    if problem or ctx.pipeline is None:
        return None, problem
    try:
        device = generator_device(os.environ.get("RAG_DEVICE", "").strip() or None)
        creator = Creator(CreateOptions.from_env(device, hf_token()), context_columns())
        if on_zero_gpu():
            creator.warm()  # ZeroGPU: weights go to "cuda" before launch; the GPU function then finds them there
    except RagError as exc:
        return None, str(exc)
    return creator, None


def step_progress(progress: gr.Progress) -> Callable[[int, int], None]:
    """Per denoising step: the bar, and the seconds left at the pace so far."""
    started = time.perf_counter()

    def on_step(done: int, total: int) -> None:
        left = (time.perf_counter() - started) / max(done, 1) * max(total - done, 0)
        progress((done, total), desc=f"Generating: step {done} of {total}, about {left:.0f} s left", unit="steps")

    return on_step


def create_handler(ctx: AppContext, creator: Creator | None, problem: str | None) -> Callable[..., Any]:
    """The /create API function (its parameter names are the API's)."""

    def create(query: str = "", image: str | None = None, k: float = 3, strength: float = DEFAULT_STRENGTH,
               guidance: float = DEFAULT_GUIDANCE, steps: float = DEFAULT_STEPS, seed: float = 0,
               use_context: bool = True, request: gr.Request = None, progress=gr.Progress()):
        """Create a new image guided by the collection: the query and/or image retrieves the k nearest images; their
        captions and metadata are fused into the prompt and the best one is the starting image (image to image).

        Args:
            query: What to create, e.g. "a red circle on a blue background"; may be empty when an image is given.
            image: Optional image (URL or file): searched with the query; without the collection as context it is the starting image.
            k: References retrieved from the collection, 1 to 10.
            strength: How far the result may move from the starting image, above 0 and at most 1 (0.55 default).
            guidance: How strongly the prompt steers the image, 0 to 20.
            steps: Denoising steps, 1 to 50 (4 suits the default few-step model).
            seed: Random seed, a whole number from 0: the same seed and inputs give the same image.
            use_context: Use the collection as context (false: the base model from the query or your image alone).
        Returns:
            The created image (none when the safety check flagged it), and {"prompt", "references": [hits with "id", "score", "captions"], "init_id", "seconds", "seed", "model", "flagged", "message", "prompt_cut", "safety", "timings", ...}.
        """
        if problem or creator is None:
            raise ServiceError(problem or "Create is not available in this Space.")
        progress(0, desc="Retrieving references")
        status = lambda text: progress(0, desc=text)  # noqa: E731 - the first call says it loads the generator
        creation = creator.create(ctx.pipeline_for(request), query, image, k, strength, guidance, steps, seed,
                                  use_context, status=status, on_step=step_progress(progress))
        data = creation.to_dict()
        data["references"] = hits_json(creation.references)
        data.update(model=scrub_paths(data["model"]), vae=scrub_paths(data["vae"]) if data["vae"] else None)
        return creation.image, data

    return ctx.guard(create)


def _cut_markdown(data: dict[str, Any]) -> str:
    used = f"**{data.get('prompt_tokens', 0)} of {data.get('prompt_budget', 75)} tokens.** "
    cut = data.get("prompt_cut") or []
    if not cut:
        return used + "Nothing was cut."
    lines = [f"- {markdown_text(part['source'])}: {markdown_text(part['text'])}" for part in cut]
    return used + "Left out (did not fit the text encoder's window):\n" + "\n".join(lines)


def show_handler(ctx: AppContext) -> Callable[..., Any]:
    """After /create: the status line, references, prompt, what was cut and the init image, from its dict."""

    def show(data: dict | None, image: str | None, request: gr.Request = None):
        if not data:
            return "", [], "", "", None
        pipeline = ctx.pipeline_for(request)
        refs = data.get("references") or []
        items = [(str(pipeline.thumbnail(h["id"])), f"{h['score']:.3f} · {(h.get('captions') or [''])[0]}") for h in refs]
        init = str(pipeline.thumbnail(data["init_id"])) if data.get("init_id") is not None else (
            image if data.get("init") == "your image" else None)
        timing = f"{data['seconds']:.1f} s"
        status = data.get("message") or f"Image created in {timing} from {len(refs)} references (seed {data['seed']})."
        return markdown_text(status), items, data.get("prompt", ""), _cut_markdown(data), init

    return ctx.guard(show)


def _float_slider(minimum: float, maximum: float, **kwargs: Any) -> gr.Slider:
    """A slider whose value rag.create checks (an out-of-range API value gets rag's message, not Gradio's)."""
    slider = gr.Slider(minimum, maximum, **kwargs)
    slider.preprocess = lambda payload: payload
    return slider


def _controls() -> list[gr.components.Component]:
    query = gr.Textbox(label="What to create", placeholder="e.g. a red circle on a blue background", max_lines=3,
                       elem_id="create-query")
    image = image_input(label="Image (optional)", sources=["upload", "clipboard"], height=220, elem_id="create-image")
    use_context = gr.Checkbox(value=True, label="Use the collection as context (off: the base model alone)",
                              elem_id="create-context")
    k = number_slider(1, MAX_REFERENCES, value=3, label="References")
    strength = _float_slider(0.05, 1, value=DEFAULT_STRENGTH, step=0.05, label="Strength (how far from the init image)")
    guidance = _float_slider(0, 20, value=DEFAULT_GUIDANCE, step=0.5, label="Guidance")
    steps = number_slider(1, 50, value=DEFAULT_STEPS, label="Steps")
    seed = gr.Number(value=0, precision=0, label="Seed (same seed, same image)")
    seed.preprocess = lambda payload: payload  # rag.create checks it, with its message
    return [query, image, k, strength, guidance, steps, seed, use_context]


# Gradio wraps a shown image in a <button> (for select events) around an <img alt="">: a button with no name.
# When the tab is opened, name those buttons by what they show (idempotent; follows re-renders).
NAME_IMAGES = """() => { if (window.createTabNames) return; window.createTabNames = true;
  const name = () => [['#create-result', 'Created image'], ['#create-init', 'Init image']].forEach(([id, label]) =>
    document.querySelectorAll(`${id} .image-container > button`).forEach((button) => {
      if (button.getAttribute('aria-label') !== label) button.setAttribute('aria-label', label); }));
  new MutationObserver(name).observe(document.body, {subtree: true, childList: true}); name(); }"""


def create_tab(ctx: AppContext) -> None:
    """Query, image, k, strength, guidance, steps, seed and the context switch; the result, its references,
    prompt and init image. Nothing at all when Create is off."""
    shown, _ = create_state()
    if not shown:
        return
    creator, problem = make_creator(ctx)
    with gr.Tab("Create", id="create") as tab:
        if problem and not ctx.startup_error:
            gr.Markdown(f"⚠️ {markdown_text(problem)}", elem_id="create-error")
        elif creator is not None:
            o = creator.options
            gr.Markdown(f"Model `{scrub_paths(o.model)}`, {o.size}×{o.size} px on {o.device}. It is loaded on first use, so the "
                        "first creation takes longer; one creation runs at a time.", elem_id="create-note")
        with gr.Row(equal_height=False):
            with gr.Column():
                inputs = _controls()
                button = gr.Button("Create", variant="primary", elem_id="create-button")
            with gr.Column():
                status = gr.Markdown("", elem_id="create-status", elem_classes=["live-status"])
                result = gr.Image(type="pil", format="png", label="Result", interactive=False, elem_id="create-result")
                prompt = gr.Textbox(label="Prompt given to the generator", lines=3, interactive=False,
                                    elem_id="create-prompt", buttons=["copy"])
                cut = gr.Markdown("", elem_id="create-cut")
        with gr.Row():
            references = gr.Gallery(label="References (score · caption)", columns=5, height=220, object_fit="contain",
                                    elem_id="create-references", format="jpeg")
            init = gr.Image(type="filepath", label="Init image", interactive=False, height=220, elem_id="create-init")
        with gr.Accordion("Result as JSON (what the API returns)", open=False):
            data = gr.JSON(label="result")
        button.click(
            create_handler(ctx, creator, problem), inputs, [result, data], api_name="create", **CREATE_LIMITS,
        ).success(show_handler(ctx), [data, inputs[1]], [status, references, prompt, cut, init],
                  api_visibility="private", queue=False)
    tab.select(None, js=NAME_IMAGES, api_visibility="private", queue=False)
