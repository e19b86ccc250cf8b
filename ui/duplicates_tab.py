"""The "Duplicates" tab and its endpoint /duplicates: groups of near-duplicate images, one thumbnail row each."""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import gradio as gr

from rag.search.duplicates import MAX_GROUPS
from rag.pipeline import Pipeline

from .components import details_markdown
from .context import SEARCH_LIMITS, AppContext
from .search_tab import passthrough_slider

ROW_STYLE = "display:flex;gap:6px;flex-wrap:wrap;align-items:flex-end;margin:0 0 14px 0"
INTRO = (
    "Groups of near-identical images in the whole collection: copies, resized or re-compressed versions. "
    "Raise the minimum similarity for stricter groups; select a thumbnail to see that image's details."
)
NO_SELECTION = "*Select a thumbnail to see its row, captions, label and metadata.*"
# Thumbnails are buttons; a click reaches Python through the gr.HTML's own click event with the row id, and the
# details are scrolled into view when they are off screen (on a phone they sit under the groups).
PICK_JS = """
element.addEventListener('click', (event) => {
  const button = event.target.closest('button[data-row]');
  if (!button) return;
  element.querySelectorAll('button[data-row]').forEach((b) => b.setAttribute('aria-pressed', String(b === button)));
  trigger('click', {id: Number(button.dataset.row)});
  const details = document.querySelector('#duplicates-details');
  const box = details && details.getBoundingClientRect();
  if (box && (box.top > innerHeight || box.bottom < 0)) details.scrollIntoView({block: 'start'});
});
"""


def duplicates_handler(ctx: AppContext) -> Callable[..., Any]:
    """The /duplicates API function; its parameter names are the API's (a public contract)."""

    def duplicates(threshold: float = 0.95, max_groups: float = 20, request: gr.Request = None):
        """Find groups of near-duplicate images in the collection (exact copies, resized or re-compressed versions).

        Args:
            threshold: Cosine similarity at or above which two images count as duplicates (0.5 to 1; default 0.95). Groups join images connected by such pairs.
            max_groups: How many groups to return, largest first (1 to 500).
        Returns:
            {"groups": [{"ids": [row ids], "min_score": weakest pair score in the group, "rows": [{"id", "label", "caption"}]}], "threshold", "total_groups", "pairs", "seconds"}. Pass a row id to search as '#id' or to similar_to.
        """
        pipeline = ctx.pipeline_for(request)
        found = pipeline.duplicates(threshold, max_groups)
        data = found.to_dict()
        for group in data["groups"]:
            group["rows"] = [
                {"id": row["id"], "label": row["label"], "caption": (row["captions"] or [None])[0]}
                for row in pipeline.collection.rows(group["ids"])
            ]
        return data

    return ctx.guard(duplicates)


def floor2(score: float) -> str:
    """A similarity rounded down to two decimals, so "≥" stays true of every pair."""
    return f"{math.floor(score * 100) / 100:.2f}"


def group_html(pipeline: Pipeline, group: dict[str, Any]) -> str:
    """One group: "3 near-identical images · similarity ≥ 0.97", then its thumbnails as buttons (ids in details)."""
    buttons = []
    for row in group["rows"]:
        path = pipeline.collection.thumbnail_path(row["id"], pipeline.cache_dir)
        name = html.escape(row.get("caption") or row.get("label") or "image without a caption")
        buttons.append(f'<button type="button" class="duplicate-thumb" data-row="{int(row["id"])}" '
                       f'aria-pressed="false" title="{name}"><img src="/gradio_api/file={quote(str(path))}" '
                       f'alt="{name}"></button>')
    header = f"{len(group['ids'])} near-identical images · similarity ≥ {floor2(group['min_score'])}"
    return (f'<div class="duplicate-group" style="{ROW_STYLE}"><b style="width:100%">{header}</b>'
            f"{''.join(buttons)}</div>")


def groups_html(pipeline: Pipeline, result: dict | None) -> str:
    """One row of thumbnails per group with a readable header (served from the thumbnail cache)."""
    groups = (result or {}).get("groups") or []
    if not groups:
        return "<p>No near-identical images at this minimum similarity; lower it to find looser ones.</p>" \
            if result else ""
    shown = f"the largest {len(groups):,} of " if len(groups) < result["total_groups"] else ""
    summary = (f"<p>Showing {shown}{result['total_groups']:,} groups ({result['pairs']:,} similar pairs, "
               f"found in {result['seconds']:.2f} s).</p>")
    return summary + "".join(group_html(pipeline, group) for group in groups)


def details_handler(ctx: AppContext) -> Callable[..., Any]:
    """The private event behind a thumbnail click: that row's details (its id, captions, label, metadata)."""

    def details(evt: gr.EventData, request: gr.Request) -> str:
        row_id = (evt._data or {}).get("id")
        if not isinstance(row_id, int):
            return NO_SELECTION
        row = ctx.pipeline_for(request).collection.rows([row_id])[0]
        return (details_markdown(row) + f"\n\nTo find images like this one, search **\\#{row_id}** in "
                "*Advanced search*.")

    return ctx.guard(details)


def render_handler(ctx: AppContext) -> Callable[..., Any]:
    """The private event that draws the groups of the request's collection."""

    def render(found: dict | None, request: gr.Request) -> str:
        return groups_html(ctx.pipeline_for(request), found)

    return ctx.guard(render)


def duplicates_tab(ctx: AppContext) -> None:
    """Minimum similarity and group count, then the groups as thumbnail rows, the selected row's details and the
    JSON the API returns."""
    with gr.Tab("Duplicates", id="duplicates", elem_id="duplicates-tab"):
        gr.Markdown(INTRO)
        with gr.Row():
            threshold = passthrough_slider(0.5, 1, 0.005, value=0.95, label="Minimum similarity (1 = identical)",
                                           elem_id="duplicates-threshold")
            max_groups = passthrough_slider(1, MAX_GROUPS, 1, value=20, label="Groups to show",
                                            elem_id="duplicates-max-groups")
        button = gr.Button("Find duplicates", variant="primary", elem_id="duplicates-button")
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                groups = gr.HTML(elem_id="duplicates-groups", js_on_load=PICK_JS)
            with gr.Column(scale=2, elem_id="duplicates-details-column"):
                details = gr.Markdown(NO_SELECTION, elem_id="duplicates-details")
        with gr.Accordion("Result as JSON (what the API returns)", open=False):
            result = gr.JSON(label="result")
        button.click(duplicates_handler(ctx), [threshold, max_groups], result, api_name="duplicates",
                     **SEARCH_LIMITS).then(
            render_handler(ctx), result, groups, api_visibility="private", queue=False,
        ).then(lambda: NO_SELECTION, None, details, api_visibility="private", queue=False)
        groups.click(details_handler(ctx), None, details, api_visibility="private", queue=False)
