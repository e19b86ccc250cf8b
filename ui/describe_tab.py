"""The "Describe" tab and its endpoint /describe: the captioner with the retrieved neighbours as context."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gradio as gr

from rag.pipeline import MAX_CONTEXT_K

from .components import gallery_items, hits_json, image_input, markdown_text, number_slider
from .context import DESCRIBE_LIMITS, AppContext


def describe_handler(ctx: AppContext) -> Callable[..., Any]:
    """The /describe API function (its parameter names are the API's)."""

    def describe(image: str, question: str = "", k: float = 5, request: gr.Request = None, progress=gr.Progress()):
        """Describe an image with the captioner, given the captions of its k nearest collection images as context.

        Args:
            image: The image to describe (URL or file).
            question: Optional question about the image, e.g. "what is the dog doing?"; empty for a plain description.
            k: Context size: how many neighbours' captions the captioner sees, 0 to 20 (0 = plain captioning).
        Returns:
            The description, the context thumbnails, the exact prompt given to the captioner, and {"text", "captioner", "seconds", "k", "question", "prompt", "context": [hits]}.
        """
        ctx.require_captioner()
        progress(0, desc="Retrieving neighbours and writing the description")
        result = ctx.pipeline_for(request).describe(image, question or None, k)
        data = result.to_dict()
        data["context"] = hits_json(result.context)
        data.update(k=int(k), question=" ".join((question or "").split()) or None)
        return result.text, gallery_items(result.context), result.prompt, data

    return ctx.guard(describe)


def describe_status(result: dict | None) -> str:
    """What a screen reader announces when the description is ready."""
    if not result:
        return ""
    context = len(result.get("context") or [])
    used = f"with {context} neighbours as context" if context else "without retrieved context"
    return f"Description ready ({used}): {markdown_text(result.get('text') or '')}"


def describe_tab(ctx: AppContext) -> None:
    """Image, optional question, context size; the description, its context neighbours and the prompt."""
    with gr.Tab("Describe", id="describe"):
        if ctx.captioner_error and not ctx.startup_error:
            gr.Markdown(f"⚠️ {ctx.captioner_error}", elem_id="captioner-error")
        with gr.Row(equal_height=False):
            with gr.Column():
                image = image_input(
                    label="Image to describe", sources=["upload", "clipboard", "webcam"],
                    height=280, elem_id="describe-image",
                )
                question = gr.Textbox(
                    label="Question (optional)", value="", placeholder="e.g. what is the dog doing?", max_lines=2,
                )
                k = number_slider(
                    0, MAX_CONTEXT_K, value=5,
                    label="Context: neighbours given to the captioner (0 = plain captioning, no RAG)",
                )
                button = gr.Button("Describe", variant="primary", elem_id="describe-button")
                if ctx.example_images:
                    gr.Examples([[p] for p in ctx.example_images], [image], elem_id="describe-examples", api_visibility="private",
                                label="Try an image from the collection (it will find itself first)")
            with gr.Column():
                status = gr.Markdown("", elem_id="describe-status", elem_classes=["live-status"])
                description = gr.Textbox(
                    label="Description", lines=3, interactive=False, elem_id="description", buttons=["copy"],
                )
                with gr.Accordion("Prompt / context given to the captioner", open=False):
                    prompt = gr.Textbox(label="prompt", lines=14, interactive=False, show_label=False, elem_id="prompt")
        context_gallery = gr.Gallery(
            label="Context neighbours", columns=5, height=240, object_fit="contain", elem_id="context-gallery",
            format="jpeg",
        )
        with gr.Accordion("Result as JSON (what the API returns)", open=False):
            result = gr.JSON(label="result")
        button.click(
            describe_handler(ctx), [image, question, k], [description, context_gallery, prompt, result],
            api_name="describe", **DESCRIBE_LIMITS,
        ).success(describe_status, [result], [status], api_visibility="private", queue=False)
