"""The "Score" tab and its endpoint /score: how well each text describes an image (CLIP cosine similarity).

The ``texts`` parameter is a list of strings for API and MCP callers and one text per line in the page: the
textbox accepts either (blank lines are skipped), so ``client.predict(image=..., texts=["a", "b"],
api_name="/score")`` and the page's newline-separated box reach the same function.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gradio as gr

from rag.pipeline import MAX_SCORE_TEXTS, check_texts

from .components import image_input, markdown_text
from .context import SEARCH_LIMITS, AppContext
from .examples import text_examples

TEXTS_API_INFO = {
    "anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "string"}],
    "description": f"the texts: a list of 1 to {MAX_SCORE_TEXTS} strings, or one string with one text per line",
}


def texts_input(**kwargs: Any) -> gr.Textbox:
    """A multi-line Textbox whose value reaches the handler as a list of texts: a list from an API client is
    passed on as it is (the library checks each item), a string from the page is split into its non-blank lines.

    (Methods are replaced on the instance, as ui.components.image_input does: subclassing a component makes
    Gradio write a .pyi stub next to this file.)
    """
    box = gr.Textbox(**kwargs)

    def preprocess(payload: Any) -> Any:
        if payload is None:
            return []
        if isinstance(payload, str):
            return [line for line in payload.splitlines() if line.strip()]
        return payload

    box.preprocess = preprocess
    box.api_info = lambda: dict(TEXTS_API_INFO)
    box.example_payload = lambda: ["a red bicycle", "a dog on a beach"]
    return box


def score_handler(ctx: AppContext) -> Callable[..., Any]:
    """The /score API function (its parameter names are the API's)."""

    def score(image: str, texts: list[str], request: gr.Request = None) -> list[dict[str, Any]]:
        """Score an image against texts: the CLIP cosine similarity of the image with each text, in the collection's
        embedding space (higher = the text describes the image better; compare the texts with each other).

        Args:
            image: The image to score (URL or file).
            texts: The texts to score it against: a list of 1 to 100 strings (in the page: one text per line).
        Returns:
            [{"text", "score"}, ...]: one entry per text, in the order given; "score" is the cosine in [-1, 1].
        """
        checked = check_texts(texts)
        scores = ctx.pipeline_for(request).score(image, checked)
        return [{"text": text, "score": value} for text, value in zip(checked, scores)]

    return ctx.guard(score)


def score_table(result: list[dict[str, Any]] | None) -> str:
    """The scores as a Markdown table, best first (the JSON keeps the order given)."""
    if not result:
        return ""
    ranked = sorted(result, key=lambda item: -item["score"])
    rows = [f"| {rank} | {markdown_text(item['text'])} | {item['score']:.4f} |" for rank, item in enumerate(ranked, 1)]
    return "\n".join(["| rank | text | score |", "| ---: | --- | ---: |", *rows])


def score_tab(ctx: AppContext) -> None:
    """Image and texts (one per line); the scores as a table, best first, and as the JSON the API returns."""
    with gr.Tab("Score", id="score"):
        gr.Markdown("How well does each text describe the image? The CLIP cosine similarity of the image with "
                    "each text, in this collection's embedding space: rank the texts against each other.")
        with gr.Row(equal_height=False):
            image = image_input(label="Image to score", sources=["upload", "clipboard", "webcam"], height=280,
                                elem_id="score-image")
            with gr.Column():
                texts = texts_input(label=f"Texts, one per line (up to {MAX_SCORE_TEXTS})", lines=6, max_lines=12,
                                    value="\n".join(text_examples(ctx.pipeline, 4)), elem_id="score-texts")
                button = gr.Button("Score", variant="primary", elem_id="score-button")
        if ctx.example_images:
            gr.Examples([[p] for p in ctx.example_images], [image], label="Try an image from the collection")
        table = gr.Markdown("", elem_id="score-table", elem_classes=["live-status"])
        with gr.Accordion("Result as JSON (what the API returns)", open=False):
            result = gr.JSON(label="result")
        button.click(score_handler(ctx), [image, texts], [result], api_name="score", **SEARCH_LIMITS).success(
            score_table, [result], [table], api_visibility="private", queue=False,
        )
