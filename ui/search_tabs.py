"""The "Text → image" and "Image → image" tabs and their endpoints: /search_text, /search_image, /similar_to."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr

from rag.errors import InvalidInput

from .components import (
    ResultsPanel,
    clear_selection,
    gallery_items,
    result_status,
    hits_json,
    image_input,
    markdown_text,
    number_slider,
    results_panel,
)
from .context import SEARCH_LIMITS, AppContext, collection_examples
from .errors import ErrorBoard
from .examples import is_multilingual, text_examples
from .session_examples import example_picker
from rag.pipeline import MAX_K
from rag.search.batching import MAX_BATCH

# /search_text has its own queue slots, as many as a batch: a burst of text queries reaches the pipeline together,
# which encodes and searches concurrent calls in batches (rag.search.batching), each call keeping its own
# inputs, outputs and errors. (Gradio's batch=True would hand one visitor's bad input to every visitor of the batch
# as their error, and its validator answers bad input with an HTTP 422 instead of the event stream's error.)
TEXT_LIMITS: dict[str, Any] = {"concurrency_id": "search_text", "concurrency_limit": MAX_BATCH}


@dataclass
class SearchHandlers:
    """The search endpoints of one app, guarded by its error mapper."""

    search_text: Callable[..., Any]
    search_image: Callable[..., Any]
    similar_to: Callable[..., Any]


def search_handlers(ctx: AppContext) -> SearchHandlers:
    """The API functions; their parameter names are the API's (a public contract)."""

    def search_text(query: str, k: float = 10, request: gr.Request = None):
        """Images of the collection best matching a text query (any language the text encoder reads).

        Args:
            query: What to look for, in words, e.g. "a dog running on the beach".
            k: Number of results, 1 to 50.
        Returns:
            The result thumbnails (with "score · caption"), and {"query", "k", "hits": [{"rank", "id", "score", "captions", "label", "metadata", "source"}]}.
        """
        hits = ctx.pipeline_for(request).search_text(query, k)
        return gallery_items(hits), {"query": query, "k": int(k), "hits": hits_json(hits)}

    def search_image(image: str, k: float = 10, request: gr.Request = None, progress=gr.Progress()):
        """Images of the collection most similar to a given image.

        Args:
            image: The query image (URL or file).
            k: Number of results, 1 to 50.
        Returns:
            The result thumbnails (with "score · caption"), and {"k", "hits": [{"rank", "id", "score", "captions", "label", "metadata", "source"}]}.
        """
        progress(0, desc="Reading the image and searching")
        hits = ctx.pipeline_for(request).search_image(image, k)
        return gallery_items(hits), {"k": int(k), "hits": hits_json(hits)}

    def similar_to(row_id: float, k: float = 10, request: gr.Request = None):
        """More like this: the images nearest to a collection row (the row itself excluded).

        Args:
            row_id: Row id of an image in the collection (the "id" of a hit from another search).
            k: Number of results, 1 to 50.
        Returns:
            The result thumbnails (with "score · caption"), and {"row_id", "k", "hits": [{"rank", "id", "score", "captions", "label", "metadata", "source"}]}.
        """
        if row_id is None or row_id == "" or (isinstance(row_id, (int, float)) and row_id < 0):
            raise InvalidInput("Select an image in the results first.")
        hits = ctx.pipeline_for(request).similar_to(row_id, k)
        return gallery_items(hits), {"row_id": int(row_id), "k": int(k), "hits": hits_json(hits)}

    return SearchHandlers(*(ctx.guard(fn, in_place=True) for fn in (search_text, search_image, similar_to)))


def failure_view(board: ErrorBoard, place: str, image: gr.Image | None = None) -> Callable[..., Any]:
    """The failure step: the handler's message where the results would be (no pop-up), the old results gone,
    and an unreadable upload's broken preview cleared."""

    def shown(request: gr.Request):
        message, unreadable = board.take(request, place)
        cleared = (None if unreadable else gr.update(),) if image is not None else ()
        return (f"⚠️ {markdown_text(message)}", [], None, *cleared)

    return shown


def scroll_into_view(element: gr.components.Component) -> str:
    """Browser code that brings an element into view (on a phone a tab's status line is below the fold)."""
    return f"() => {{ document.getElementById('{element.elem_id}')?.scrollIntoView({{block: 'nearest'}}); }}"


def on_failure(event: Any, handler: Callable[..., Any], panel: ResultsPanel, image: gr.Image | None = None) -> None:
    """Show a failed search's message in the panel's status line, when the handler leaves its messages on an
    ErrorBoard (ctx.guard(fn, in_place=True)); other handlers' errors stay pop-ups."""
    board = getattr(handler, "error_board", None)
    if board is None:
        return
    outputs = [panel.status, panel.gallery, panel.result] + ([image] if image is not None else [])
    event.failure(failure_view(board, handler.__name__, image), None, outputs, api_visibility="private",
                  queue=False, show_progress="hidden").then(None, js=scroll_into_view(panel.status))


def like_row(result: dict | None):
    """After "More like this": the details say whose neighbours are shown, and no result stays highlighted."""
    row = (result or {}).get("row_id")
    note = f"*Images like row {row} (its nearest neighbours). Select one to see its details.*"
    return note, -1, gr.update(interactive=False), gr.Gallery(selected_index=None)


def wire_more_like_this(panel: ResultsPanel, handler: Callable[..., Any], k: gr.Slider, api_name: str | None,
                        name: str) -> None:
    """"More like this" fills the panel's gallery; the details then follow it (no stale row beside new results)."""
    event = panel.more.click(
        handler, [panel.row_id, k], [panel.gallery, panel.result],
        api_name=api_name or f"{name}_similar_to", api_visibility="public" if api_name else "private",
        **SEARCH_LIMITS,
    )
    event.success(result_status, [panel.result], [panel.status], api_visibility="private", queue=False).then(
        like_row, [panel.result], [*panel.selection, panel.gallery], api_visibility="private", queue=False,
        show_progress="hidden",
    )
    on_failure(event, handler, panel)


def wire_search(trigger: Callable[..., Any], handler: Callable[..., Any], inputs: list, panel: ResultsPanel,
                api_name: str | None = None, limits: dict[str, Any] | None = None, image: gr.Image | None = None) -> None:
    """Clear the old selection, then search; only api_name'd triggers are public endpoints. A failure's message
    shows in the panel's status line (see on_failure), and a successful search replaces it."""
    event = trigger(clear_selection, None, panel.selection, api_visibility="private", queue=False).then(
        handler, inputs, [panel.gallery, panel.result], api_name=api_name,
        api_visibility="public" if api_name else "private", **(limits or SEARCH_LIMITS),
    )
    event.success(fresh_results, [panel.result], [panel.status, panel.gallery], api_visibility="private",
                  queue=False, show_progress="hidden")
    on_failure(event, handler, panel, image)


def fresh_results(result: dict | None):
    """After a search: its status line, and no highlight left on a thumbnail (the details say none is selected)."""
    return result_status(result), gr.Gallery(selected_index=None)


def text_tab(ctx: AppContext, handlers: SearchHandlers) -> ResultsPanel:
    """Text → image: query box, k, examples, results; the button is /search_text, "More like this" /similar_to."""
    with gr.Tab("Text → image", id="text"):
        with gr.Row():
            query = gr.Textbox(
                label="Query", placeholder="a dog running on the beach · anjing bermain di pantai",
                scale=4, max_lines=3, elem_id="query", min_width=320,  # full width on a phone (the row wraps)
            )
            k = number_slider(1, MAX_K, value=12, label="Number of results", scale=1, min_width=200)
        button = gr.Button("Search", variant="primary", elem_id="search-text-button")
        picked = example_picker(ctx, query, text_examples, example_label, "text-examples")
        panel = results_panel("text")
        wire_more_like_this(panel, handlers.similar_to, k, "similar_to", "text")
        # The button is the API endpoint; pressing Enter runs the same function, privately.
        search = dict(limits=TEXT_LIMITS)
        wire_search(button.click, handlers.search_text, [query, k], panel, api_name="search_text", **search)
        wire_search(query.submit, handlers.search_text, [query, k], panel, **search)
        if picked is not None:  # a click on an example runs its search (not only fills the box)
            wire_search(picked.then, handlers.search_text, [query, k], panel, **search)
    return panel


def example_label(pipeline: Any) -> str:
    """The text examples' heading (it says which are Indonesian when the text model reads Indonesian)."""
    return "Examples from this collection" + (" (the last two are Indonesian)" if is_multilingual(pipeline) else "")


def image_tab(ctx: AppContext, handlers: SearchHandlers) -> ResultsPanel:
    """Image → image: upload, k, examples from the collection, results; the button is /search_image."""
    with gr.Tab("Image → image", id="image"):
        with gr.Row():
            image = image_input(
                label="Image (upload, paste or webcam)", sources=["upload", "clipboard", "webcam"],
                height=280, elem_id="image-query",
            )
            with gr.Column():
                k = number_slider(1, MAX_K, value=12, label="Number of results")
                button = gr.Button("Search", variant="primary", elem_id="search-image-button")
                picked = example_picker(ctx, image, collection_examples, lambda _: "Try an image from the collection",
                                        "image-examples")
        panel = results_panel("image")
        wire_more_like_this(panel, handlers.similar_to, k, None, "image")
        search = dict(image=image)
        wire_search(button.click, handlers.search_image, [image, k], panel, api_name="search_image", **search)
        wire_search(image.upload, handlers.search_image, [image, k], panel, **search)
        if picked is not None:  # a click on an example image runs its search
            wire_search(picked.then, handlers.search_image, [image, k], panel, **search)
    return panel
