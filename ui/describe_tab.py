"""The "Describe" tab and its endpoint /describe: the captioner with the retrieved neighbours as context."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gradio as gr

from rag.config import context_columns
from rag.pipeline import MAX_CONTEXT_K

from .components import gallery_items, hits_json, image_input, markdown_text, number_slider
from .context import DESCRIBE_LIMITS, AppContext, collection_examples
from .describe_view import GIT_QUESTION, explanation
from .errors import ErrorBoard, scrub_paths
from .search_tabs import scroll_into_view
from .session_examples import example_picker

EXAMPLES_LABEL = "Try an image from the collection (it will find itself first)"


def describe_handler(ctx: AppContext) -> Callable[..., Any]:
    """The /describe API function (its parameter names are the API's)."""
    columns = context_columns()  # RAG_CONTEXT_COLUMNS: metadata the neighbours bring along, as for Create

    def describe(image: str, question: str = "", k: float = 5, request: gr.Request = None, progress=gr.Progress()):
        """Describe an image with the captioner, given the captions of its k nearest collection images as context.

        Args:
            image: The image to describe (URL or file).
            question: Optional question about the image, e.g. "what is the dog doing?"; empty for a plain description. Needs the Qwen2-VL captioner (GIT writes a caption whatever the question).
            k: Context size: how many neighbours' captions the captioner sees, 0 to 20 (0 = plain captioning).
        Returns:
            The description, the context thumbnails, the exact prompt given to the captioner, and {"text", "captioner", "seconds", "k", "question", "prompt", "context": [hits], "context_columns", "candidates"}.
        """
        ctx.require_captioner()
        progress(0, desc="Retrieving neighbours and writing the description")
        result = ctx.pipeline_for(request).describe(image, question or None, k, columns=columns)
        data = result.to_dict()
        data["context"] = hits_json(result.context)
        data.update(k=int(k), question=" ".join((question or "").split()) or None)
        data.update(prompt=scrub_paths(result.prompt), captioner=scrub_paths(result.captioner))
        return result.text, gallery_items(result.context), data["prompt"], data

    return ctx.guard(describe, in_place=True)


def describe_status(result: dict | None) -> tuple[str, str]:
    """What a screen reader announces when the description is ready, and how it was written (describe_view)."""
    if not result:
        return "", ""
    context = len(result.get("context") or [])
    used = f"with {context} neighbours as context" if context else "without retrieved context"
    return f"Description ready ({used}): {markdown_text(result.get('text') or '')}", explanation(result)


def describe_failure(board: ErrorBoard) -> Callable[..., Any]:
    """The message where the description would be, the old one cleared, an unreadable upload's preview too."""

    def shown(request: gr.Request):
        message, unreadable = board.take(request, "describe")
        return f"⚠️ {markdown_text(message)}", "", [], "", None, "", None if unreadable else gr.update()

    return shown


def question_box(ctx: AppContext) -> gr.Textbox:
    """The optional question; with GIT (which cannot take one) disabled, with the sentence saying why."""
    captioner = ctx.pipeline.captioner if ctx.pipeline is not None else None
    git = getattr(captioner, "kind", "") == "git"
    return gr.Textbox(
        label="Question (optional)", value="", max_lines=2, elem_id="describe-question", interactive=not git,
        placeholder="GIT writes a caption" if git else "e.g. what is the dog doing?",
        info=GIT_QUESTION if git else None,
    )


def describe_tab(ctx: AppContext) -> None:
    """Image, optional question, context size; the description, how it was written, its neighbours, the prompt."""
    with gr.Tab("Describe", id="describe"):
        if ctx.captioner_error and not ctx.startup_error:
            gr.Markdown(f"⚠️ {ctx.captioner_error}", elem_id="captioner-error")
        with gr.Row(equal_height=False):
            with gr.Column():
                image = image_input(
                    label="Image to describe", sources=["upload", "clipboard", "webcam"],
                    height=280, elem_id="describe-image",
                )
                question = question_box(ctx)
                k = number_slider(
                    0, MAX_CONTEXT_K, value=5,
                    label="Context: neighbours given to the captioner (0 = plain captioning, no neighbours)",
                )
                button = gr.Button("Describe", variant="primary", elem_id="describe-button")
                # an example fills the image; Describe runs on the button (a description takes seconds)
                example_picker(ctx, image, collection_examples, lambda _: EXAMPLES_LABEL, "describe-examples")
            with gr.Column():
                status = gr.Markdown("", elem_id="describe-status", elem_classes=["live-status"])
                description = gr.Textbox(
                    label="Description", lines=3, interactive=False, elem_id="description", buttons=["copy"],
                )
                explained = gr.Markdown("", elem_id="describe-explained")
                with gr.Accordion("Exact prompt given to the captioner", open=False):
                    prompt = gr.Textbox(label="prompt", lines=14, interactive=False, show_label=False, elem_id="prompt")
        context_gallery = gr.Gallery(
            label="Context neighbours", columns=5, height=240, object_fit="contain", elem_id="context-gallery",
            format="jpeg",
        )
        with gr.Accordion("Result as JSON (what the API returns)", open=False):
            result = gr.JSON(label="result")
        handler = describe_handler(ctx)
        event = button.click(
            handler, [image, question, k], [description, context_gallery, prompt, result],
            api_name="describe", **DESCRIBE_LIMITS,
        )
        event.success(describe_status, [result], [status, explained], api_visibility="private", queue=False)
        event.failure(describe_failure(ctx.errors), None,
                      [status, description, context_gallery, prompt, result, explained, image],
                      api_visibility="private", queue=False, show_progress="hidden",
                      ).then(None, js=scroll_into_view(status))
