"""The page: header, start-up message, the tabs, the footer and /info; and launch() with the Space's options."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import gradio as gr

from rag.pipeline import Pipeline

from .build_tab import attach_session_end, build_tab, collection_switch, enable_sessions, upload_limit
from .components import info_markdown, markdown_text
from .context import QUEUE_MAX_SIZE, SEARCH_CONCURRENCY, AppContext
from .describe_tab import describe_tab
from .create_tab import create_tab
from .duplicates_tab import duplicates_tab
from .search_tab import search_tab
from .score_tab import score_tab
from .explore_tab import explore_api, explore_tab
from .search_tabs import image_tab, search_handlers, text_tab
from .errors import scrub_paths
from .theme import CSS, HEAD, space_theme

TITLE = "Multimodal image search"
MAX_FILE_SIZE = "20mb"
_CONTEXTS: "weakref.WeakKeyDictionary[gr.Blocks, AppContext]" = weakref.WeakKeyDictionary()
INTRO = (
    f"# {TITLE}\n"
    "Search the collection by text (in any language the text encoder reads) or by image, or let the "
    "captioner describe your image using the captions of its nearest neighbours as context."
)


def info_handler(ctx: AppContext):
    """The /info API function."""

    def info(request: gr.Request) -> dict:
        """What this Space serves (to this session): collection, revision, rows, models, index, captioner, and
        the metadata columns that /search filters can name.

        Returns:
            {"ok", "collection", "revision", "rows", "embedding_model", "text_model", "dim", "index", "captioner", "columns", ...}, or {"ok": false, "error"} when the Space could not start.
        """
        if ctx.startup_error:
            return {"ok": False, "error": ctx.startup_error}
        data = {"ok": True, **ctx.pipeline_for(request).info()}
        if ctx.captioner_error:
            data["captioner_error"] = ctx.captioner_error
        return data

    return info


def thumbnail_api(ctx: AppContext) -> None:
    """/thumbnail: one row's image as an image output, so an MCP client gets it inline (Gradio's MCP server
    sends a file output as image content; galleries and JSON reach agents only as URLs)."""

    def thumbnail(row_id: float, request: gr.Request) -> str:
        """The stored thumbnail of one collection row, as an image (inline image content for MCP clients).

        Args:
            row_id: the row's id, as in a hit's "id" from /search, /search_text, /search_image or /similar_to.
        """
        return str(ctx.pipeline_for(request).thumbnail(row_id))

    with gr.Row(visible=False):
        row_id = gr.Number(label="Row id", precision=0)
        image = gr.Image(type="filepath", label="Thumbnail", format="jpeg")
        trigger = gr.Button("Thumbnail")
    trigger.click(ctx.guard(thumbnail), row_id, image, api_name="thumbnail", concurrency_limit=None)


def footer(ctx: AppContext, request: gr.Request | None = None) -> str:
    """The footer line under the tabs: what this session searches."""
    if ctx.pipeline is None:
        return "**Collection:** not loaded (see the message at the top)."
    return info_markdown(ctx.pipeline_for(request).info())


def searching_line(ctx: AppContext, request: gr.Request | None = None) -> str:
    """The line above the tabs: which collection this session searches, and how many images it holds."""
    if ctx.pipeline is None:
        return ""
    pipeline = ctx.pipeline_for(request)
    info = pipeline.info()
    if pipeline is ctx.pipeline:
        return f"**Searching:** {markdown_text(scrub_paths(info['collection']))} ({info['rows']:,} images)"
    return f"**Searching:** your collection ({info['rows']:,} images, only in this browser tab)"


def session_view(ctx: AppContext) -> Callable[[gr.Request], tuple[Any, ...]]:
    """The per-session lines, then every part registered with ctx.per_session (examples, hints), in the order of
    session_outputs (refreshed on load, after a build and after the switch)."""

    def view(request: gr.Request) -> tuple[Any, ...]:
        parts: list[Any] = []
        pipeline = ctx.pipeline_for(request) if ctx.pipeline is not None else None
        for outputs, fn in ctx.session_parts:
            parts += fn(pipeline) if pipeline is not None else [gr.update() for _ in outputs]
        return searching_line(ctx, request), footer(ctx, request), *parts

    return view


def session_outputs(ctx: AppContext, *lines: gr.components.Component) -> list[gr.components.Component]:
    """The outputs of session_view: the lines, then the registered per-session parts."""
    return [*lines, *(output for outputs, _ in ctx.session_parts for output in outputs)]


def build_demo(pipeline_or_error: Pipeline | BaseException | str, captioner_error: str | None = None) -> gr.Blocks:
    """The Blocks app around a loaded Pipeline, or around a start-up error (the page then says what to set)."""
    ctx = AppContext.of(pipeline_or_error, captioner_error)
    enable_sessions(ctx)
    # Uploads are Gradio temp files: every 15 min, delete those older than an hour (a full disk stops a Space).
    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=(900, 3600)) as demo:
        gr.Markdown(INTRO)
        gr.Markdown(
            f"### ⚠️ The Space could not start\n\n{ctx.startup_error}" if ctx.startup_error else "",
            visible=bool(ctx.startup_error), elem_id="startup-error",
        )
        handlers = search_handlers(ctx)
        searching = gr.Markdown(searching_line(ctx), elem_id="collection-indicator")
        switch = collection_switch(ctx)
        with gr.Tabs(overflow_behavior="wrap"):  # every tab labelled, on a phone too (no "⋯" menu)
            searches = [text_tab(ctx, handlers), image_tab(ctx, handlers)]
            search_tab(ctx, handlers)
            describe_tab(ctx)
            create_tab(ctx)
            score_tab(ctx)
            duplicates_tab(ctx)
            built = build_tab(ctx, switch)
            explore_tab(ctx, handlers, searches)
        info_footer = gr.Markdown(footer(ctx), elem_id="info-footer")
        lines = dict(fn=session_view(ctx), inputs=None, outputs=session_outputs(ctx, searching, info_footer),
                     api_visibility="private",
                     queue=False, show_progress="hidden")  # no pending overlay dimming the lines while they load
        demo.load(**lines)
        for event in (built, getattr(switch, "switched", None)):
            if event is not None:
                event.then(**lines)
        gr.api(info_handler(ctx), api_name="info", concurrency_limit=None, queue=False)
        thumbnail_api(ctx)
        explore_api(ctx)
        attach_session_end(demo, ctx)
    demo.queue(default_concurrency_limit=SEARCH_CONCURRENCY, max_size=QUEUE_MAX_SIZE)
    _CONTEXTS[demo] = ctx  # launch() reads the folders it may serve from here
    return demo


def launch(demo: gr.Blocks, **kwargs: Any):
    """demo.launch with this Space's settings (upload limit, thumbnail folder, local fonts); kwargs override."""
    ctx = _CONTEXTS.get(demo)
    options: dict[str, Any] = {
        "max_file_size": upload_limit(ctx, MAX_FILE_SIZE) if ctx else MAX_FILE_SIZE,
        "allowed_paths": ctx.allowed_paths if ctx else [],
        "theme": space_theme(),  # system fonts (no Google Fonts fetch), WCAG AA contrast
        "css": CSS,
        "head": HEAD,
        "footer_links": ["api", "gradio"],
        # Every named endpoint is also an MCP tool at /gradio_api/mcp/ (needs the gradio[mcp] extra).
        "mcp_server": True,
    }
    options.update(kwargs)
    return demo.launch(**options)
