"""Shared pieces of the tabs: the gallery with its details panel, number sliders, image inputs, JSON views."""

from __future__ import annotations

import os

from dataclasses import dataclass
from typing import Any

import gradio as gr

from rag.pipeline import Hit

from .errors import scrub_paths

CAPTION_CHARS = 90
# Session-changing endpoints (/build, /publish...) are public so gradio_client (which reads parameter defaults
# only from the public API info) takes keyword calls with just the arguments that matter; not_an_mcp_tool keeps
# them off the MCP server's tool list, since every MCP agent shares one session (ui.context.through_mcp).
SESSION_API = "public"


def not_an_mcp_tool(fn: Any) -> Any:
    """Mark an endpoint function so Gradio's MCP server does not list it as a tool (it lists only functions whose
    ``_mcp_type`` is absent or "tool"); returns ``fn``."""
    fn._mcp_type = "session"
    return fn
NO_SELECTION = (
    "*Each result shows its similarity to the query (1 = the closest possible) · its first caption. "
    "Select one to see all its captions, label and metadata.*"
)


def _short(text: str, limit: int = CAPTION_CHARS) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def gallery_items(hits: list[Hit]) -> list[tuple[str, str]]:
    """(thumbnail file, "score · first caption") per hit, in rank order."""
    items = []
    for hit in hits:
        first = hit.captions[0] if hit.captions else (hit.label or hit.source or f"row {hit.id}")
        items.append((hit.thumbnail, f"{hit.score:.3f} · {_short(first)}"))
    return items


def hit_json(hit: Hit, rank: int) -> dict[str, Any]:
    """A hit as the API returns it (the thumbnail is a server path, so it comes as the gallery output instead)."""
    data = hit.to_dict()
    data.pop("thumbnail", None)
    return {"rank": rank, **data}


def hits_json(hits: list[Hit]) -> list[dict[str, Any]]:
    """The API's list of hits, ranked from 1."""
    return [hit_json(hit, rank) for rank, hit in enumerate(hits, 1)]


def markdown_text(text: Any) -> str:
    """User data inside Markdown: no accidental formatting, tables or HTML."""
    text = " ".join(str(text).split())
    for char in "\\`*_{}[]<>#|":
        text = text.replace(char, "\\" + char)
    return text


def details_markdown(hit: dict[str, Any]) -> str:
    """Everything we know about one result: captions, label, metadata columns, score, source."""
    score = f" · score {hit['score']:.3f}" if hit.get("score") is not None else ""  # map selections have none
    lines = [f"### Row {hit['id']}{score}", ""]
    lines.append(f"**Label:** {markdown_text(hit['label']) if hit.get('label') else '—'}  ")
    lines.append(f"**Source:** {markdown_text(hit.get('source') or '—')}  ")
    generated = " (written by the captioner at build time)" if hit.get("captions_generated") else ""
    lines += ["", f"**Captions**{generated}:"]
    lines += [f"- {markdown_text(c)}" for c in hit.get("captions") or []] or ["- —"]
    metadata = hit.get("metadata") or {}
    if metadata:
        lines += ["", "| column | value |", "| --- | --- |"]
        lines += [
            f"| {markdown_text(k)} | {markdown_text(v) if v not in (None, '') else '—'} |" for k, v in metadata.items()
        ]
    return "\n".join(lines)


def _plain_name(name: Any) -> str:
    """A model or collection name fit for the page: a Hub id as it is, a local folder by its last part only
    (the page never shows a server path)."""
    return scrub_paths(str(name or ""))


def info_markdown(info: dict[str, Any]) -> str:
    """The footer: what the Space serves, in plain words (index type and quantisation stay in /info)."""
    captioner = _plain_name(info.get("captioner")) or "none loaded"
    revision = f" @ `{markdown_text(info['revision'])}`" if info.get("revision") else ""
    return (
        f"**Collection:** {markdown_text(_plain_name(info['collection']))}{revision} · **{info['rows']:,} images** · "
        f"**search model:** {markdown_text(_plain_name(info['embedding_model']))} · "
        f"**captions by:** {markdown_text(captioner)} · **runs on:** {markdown_text(str(info['device']).upper())}"
    )


IMAGE_MAX_MB = 20  # the page's upload cap is raised for Build-tab archives; images keep this one


def check_image_size(path: str) -> None:
    """Refuse an uploaded image over IMAGE_MAX_MB (Gradio's max_file_size is one cap for every upload)."""
    size = os.path.getsize(path)
    if size > IMAGE_MAX_MB * 1024 * 1024:
        raise gr.Error(f"This image is {size / 2**20:.0f} MB; images up to {IMAGE_MAX_MB} MB are accepted.",
                       title="Invalid input", print_exception=False)


def image_input(**kwargs: Any) -> gr.Image:
    """gr.Image(type="filepath") that hands the uploaded file's path to rag.images.decode.load_image unopened.

    Plain gr.Image opens every upload with PIL during Gradio's preprocessing, so a non-image file or a
    decompression bomb would fail there with Gradio's generic error; our loader refuses those with a message
    that says why. (The method is replaced on the instance: subclassing a component makes Gradio write a
    .pyi stub next to this file.)
    """
    image = gr.Image(type="filepath", image_mode=None, **kwargs)
    original = image.preprocess

    def preprocess(payload):
        if payload is None:
            return None
        if payload.path and not (payload.url or "").startswith("data:"):
            check_image_size(payload.path)
            return str(payload.path)
        try:
            return original(payload)
        except Exception:  # noqa: BLE001 - Gradio's decoders raise anything
            raise gr.Error("This file could not be read as an image: it is not a JPEG, PNG, WebP, GIF or other "
                           "picture file.", print_exception=False) from None

    image.preprocess = preprocess
    return image


def number_slider(minimum: int, maximum: int, **kwargs: Any) -> gr.Slider:
    """A slider whose value the pipeline checks (rag.pipeline.check_int), so an out-of-range value sent through
    the API gets the same message as everywhere else ("k must be between 1 and 50; got 100.")."""
    slider = gr.Slider(minimum, maximum, step=1, **kwargs)
    slider.preprocess = lambda payload: payload
    return slider


@dataclass
class ResultsPanel:
    """A results gallery, the details of the selected result, "More like this" and the JSON the API returns."""

    gallery: gr.Gallery
    result: gr.JSON
    details: gr.Markdown
    row_id: gr.Number
    more: gr.Button
    status: gr.Markdown
    load_more: gr.Button | None = None

    @property
    def selection(self) -> list[gr.components.Component]:
        """The outputs that show (or clear) the selected result."""
        return [self.details, self.row_id, self.more]


def results_panel(name: str, load_more: bool = False) -> ResultsPanel:
    """Lay out a results panel; ``name`` prefixes its element ids; ``load_more`` adds a disabled "Load more"
    button right where the results end (the gallery grows with its rows, so appended ones are on the page)."""
    more_results = None
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            status = gr.Markdown("", elem_id=f"{name}-status", elem_classes=["live-status"])
            gallery = gr.Gallery(
                label="Results", columns=4, height="auto", object_fit="contain",
                allow_preview=False, show_label=True, elem_id=f"{name}-gallery", format="jpeg",
                elem_classes=["results-gallery"],
            )
            if load_more:
                more_results = gr.Button("Load more", interactive=False, elem_id=f"{name}-load-more")
        with gr.Column(scale=2):
            details = gr.Markdown(NO_SELECTION, elem_id=f"{name}-details")
            more = gr.Button("More like this", interactive=False, elem_id=f"{name}-more")
            row_id = gr.Number(value=-1, visible=False, precision=0, label="row id")
    with gr.Accordion("Result as JSON (what the API returns)", open=False):
        result = gr.JSON(label="result")
    panel = ResultsPanel(gallery, result, details, row_id, more, status, more_results)
    gallery.select(select_hit, [result], panel.selection, api_visibility="private", queue=False)
    return panel


def select_hit(result: dict | None, evt: gr.SelectData):
    """Show the selected result's details and enable "More like this"."""
    hits = (result or {}).get("hits") or []
    if evt.index is None or not 0 <= evt.index < len(hits):
        return clear_selection()
    hit = hits[evt.index]
    return details_markdown(hit), hit["id"], gr.update(interactive=True)


def result_status(result: dict | None) -> str:
    """One line a screen reader announces after a search: how many results, for what."""
    hits = (result or {}).get("hits")
    if hits is None:
        return ""
    what = f" for “{markdown_text(result['query'])}”" if result.get("query") else ""
    if result.get("row_id") is not None:
        what = f" like row {result['row_id']}"
    if not hits:
        return f"No results{what}."
    best = hits[0]
    first = (best.get("captions") or [best.get("label") or ""])[0]
    return f"{len(hits)} results{what}. Best: {markdown_text(first)} (score {best['score']:.2f})."


def empty_reason(result: dict[str, Any]) -> str:
    """Why a /search found nothing, and what to change."""
    if result.get("filters") and not result.get("matching_rows"):
        return "No image matches the filters — loosen or clear them."
    if float(result.get("threshold") or 0) > 0:
        return f"No image scores above {float(result['threshold']):g} — lower the minimum similarity."
    return "No more results." if result.get("offset") else "No results."


def search_feedback(result: dict | None) -> tuple[str, Any]:
    """After a /search page: the status line (the reason when nothing matched) and "Load more", enabled only
    while the results shown are full pages and fewer than the rows that pass the filters."""
    result = result or {}
    hits, k = result.get("hits") or [], int(result.get("k") or 0)
    more = bool(hits) and k > 0 and len(hits) % k == 0 and len(hits) < int(result.get("matching_rows") or 0)
    status = result_status(result) if hits else f"⚠️ {empty_reason(result)}"
    return status, gr.update(interactive=more)


def clear_selection():
    """No result selected."""
    return NO_SELECTION, -1, gr.update(interactive=False)
