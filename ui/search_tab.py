"""The "Advanced search" tab and its endpoint /search: weighted terms, #rows, an image, filters, threshold, pages."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gradio as gr

from rag.errors import InvalidInput
from rag.pipeline import MAX_K, Pipeline
from rag.search.query import describe_terms, parse_query

from .components import (
    clear_selection, gallery_items, hit_json, image_input, number_slider, results_panel, search_feedback,
)
from .context import SEARCH_LIMITS, AppContext
from .examples import search_examples
from .filter_controls import filter_controls, refresh_choices
from .search_tabs import SearchHandlers, on_failure, wire_more_like_this
from .session_examples import example_picker

QUERY_HELP = (
    "Join terms with **+** and **−**, weight them with **2\\*red car**, quote phrases that contain signs "
    '(**"t-shirt"**), and use **#123** for collection row 123 (shown in each result\'s details).'
)


def passthrough_slider(minimum: float, maximum: float, step: float, **kwargs: Any) -> gr.Slider:
    """A slider whose value the pipeline checks, so the API gets the pipeline's message for a bad value."""
    slider = gr.Slider(minimum, maximum, step=step, **kwargs)
    slider.preprocess = lambda payload: payload
    return slider


def terms_markdown(query: str | None) -> str:
    """How the query box is read, shown under it while typing (or what is wrong with it)."""
    if not (query or "").strip():
        return "*Parsed query: nothing yet.*"
    try:
        return "**Parsed query:** " + describe_terms(parse_query(query)).replace("*", "\\*")
    except InvalidInput as exc:
        return f"⚠️ {exc}"


def ranked(hits: list, offset: int) -> list[dict[str, Any]]:
    """Hits as the API returns them, ranked from offset + 1."""
    return [hit_json(hit, offset + rank) for rank, hit in enumerate(hits, 1)]


def search_handler(ctx: AppContext) -> Callable[..., Any]:
    """The /search API function; its parameter names are the API's (a public contract)."""

    def search(query: str = "", image: str | None = None, image_weight: float = 1.0, k: float = 10, offset: float = 0,
               threshold: float = 0, filters: str = "", request: gr.Request = None):
        """Search the image collection with weighted text terms, collection rows, an optional image and filters.

        Args:
            query: Terms joined by + and -, each with an optional weight: 'beach - people', '#42 + 2*"red car"', '"t-shirt" - #7'. A quoted phrase keeps + and - as text; #123 is collection row 123. May be empty when an image is given.
            image: Optional image (URL or file) used as one more term of the query.
            image_weight: Weight of the image term (default 1; negative pushes results away from the image).
            k: Number of results, 1 to 50.
            offset: Results to skip, for the next page (0 for the first page; page 2 of k=10 is offset 10).
            threshold: Minimum cosine similarity of a hit; 0 means no threshold.
            filters: JSON object of conditions on label and metadata columns, e.g. {"label": ["dog", "cat"], "year": {"min": 2000}, "source": {"contains": "beach"}}; operators eq, in, contains, min, max. Empty means no filter.
        Returns:
            The result thumbnails (with "score · caption"), and {"hits": [{"rank", "id", "score", "captions", "label", "metadata", "source"}], "k", "offset", "terms": [{"kind", "value", "weight"}], "filters", "threshold", "matching_rows"}.
        """
        pipeline = ctx.pipeline_for(request)
        result = pipeline.search(query, image or None, image_weight, k, offset, threshold, filters)
        data = result.to_dict()
        data["hits"] = ranked(result.hits, result.offset)
        return gallery_items(result.hits), {"query": query, **data}

    return ctx.guard(search, in_place=True)


def gallery_from_json(pipeline: Pipeline, hits: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Gallery items of hits already shown (their thumbnails are cached files)."""
    items = []
    for hit in hits:
        first = (hit.get("captions") or [hit.get("label") or f"row {hit['id']}"])[0]
        items.append((str(pipeline.collection.thumbnail_path(hit["id"], pipeline.cache_dir)), f"{hit['score']:.3f} · {first}"))
    return items


def load_more_handler(ctx: AppContext) -> Callable[..., Any]:
    """"Load more": the next page after the hits shown, appended (a private event; the API pages with offset)."""

    def load_more(query, image, image_weight, k, threshold, filters, shown: dict | None, request: gr.Request):
        shown = shown or {}
        previous = shown.get("hits") or []
        if not previous:
            raise InvalidInput("Search first; then Load more fetches the next results.")
        pipeline = ctx.pipeline_for(request)
        page = pipeline.search(query, image or None, image_weight, k, len(previous), threshold, filters)
        if not page.hits:
            gr.Info("No more results.")
        hits = previous + ranked(page.hits, len(previous))
        merged = {**shown, **page.to_dict(), "hits": hits, "offset": 0, "shown": len(hits)}
        return gallery_from_json(pipeline, hits), merged

    return ctx.guard(load_more, in_place=True)


TAB_LABEL = "Advanced search"
TAB_INTRO = (
    "**Combine** words, collection rows and an image in one query, **filter** by label or column, keep only "
    "close matches, and page through the results with **Load more**. For a plain search in words, use "
    "**Text → image**."
)


def search_tab(ctx: AppContext, handlers: SearchHandlers) -> None:
    """Query box with the parsed terms under it, optional image, filters, threshold, k; results; Load more."""
    with gr.Tab(TAB_LABEL, id="search", elem_id="search-tab") as tab:
        gr.Markdown(TAB_INTRO, elem_id="search-intro")
        with gr.Row():
            query = gr.Textbox(label="Query", placeholder='beach - people · #42 + 2*"red car"', scale=4,
                               max_lines=3, elem_id="search-query")
            k = number_slider(1, MAX_K, value=12, label="Number of results", scale=1)
        terms = gr.Markdown(terms_markdown(""), elem_id="search-terms")
        gr.Markdown(QUERY_HELP)
        with gr.Accordion("Image (optional)", open=False):
            with gr.Row():
                image = image_input(label="Image term", sources=["upload", "clipboard"], height=200,
                                    elem_id="search-image")
                image_weight = passthrough_slider(-2, 2, 0.05, value=1, label="Image weight", elem_id="search-image-weight")
        controls = filter_controls(ctx.pipeline)
        tab.select(refresh_choices(ctx), [controls.labels, controls.column], [controls.labels, controls.column],
                   api_visibility="private", queue=False)
        threshold = passthrough_slider(0, 1, 0.01, value=0, label="Minimum similarity (0 = show every match)",
                                       elem_id="search-threshold")
        offset = gr.Number(value=0, precision=0, visible=False, label="offset")
        button = gr.Button("Search", variant="primary", elem_id="search-button")
        picked = example_picker(ctx, query, search_examples, lambda _: "Examples from this collection",
                                "search-examples")
        panel = results_panel("search", load_more=True)
        more = panel.load_more
        query.change(terms_markdown, query, terms, api_visibility="private", queue=False)
        inputs = [query, image, image_weight, k, offset, threshold, controls.json]
        triggers = [(button.click, "search"), (query.submit, None)]
        if picked is not None:  # a click on an example runs its search
            triggers.append((picked.then, None))
        search = search_handler(ctx)  # one guarded handler: its failures are shown in place by its name
        for trigger, api_name in triggers:
            event = trigger(clear_selection, None, panel.selection, api_visibility="private", queue=False).then(
                search, inputs, [panel.gallery, panel.result], api_name=api_name,
                api_visibility="public" if api_name else "private", **SEARCH_LIMITS,
            )
            event.success(search_feedback, [panel.result], [panel.status, more], api_visibility="private", queue=False)
            on_failure(event, search, panel, image)
        load_more = load_more_handler(ctx)
        event = more.click(load_more, [query, image, image_weight, k, threshold, controls.json, panel.result],
                           [panel.gallery, panel.result], api_visibility="private", **SEARCH_LIMITS)
        event.success(search_feedback, [panel.result], [panel.status, more], api_visibility="private", queue=False)
        on_failure(event, load_more, panel)
        wire_more_like_this(panel, handlers.similar_to, k, None, "search")
        # "More like this" replaces the results: Load more (the next page of the query) no longer applies.
        panel.more.click(lambda: gr.update(interactive=False), None, more, api_visibility="private", queue=False)
