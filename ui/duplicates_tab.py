"""The "Duplicates" tab and its endpoint /duplicates: groups of near-duplicate images, one thumbnail row each."""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import gradio as gr

from rag.search.duplicates import MAX_GROUPS
from rag.pipeline import Pipeline

from .context import SEARCH_LIMITS, AppContext
from .search_tab import passthrough_slider

ROW_STYLE = "display:flex;gap:6px;flex-wrap:wrap;align-items:flex-end;margin:0 0 14px 0"
THUMB_STYLE = "height:96px;width:auto;border-radius:4px;border:1px solid #ccc"


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


def groups_html(pipeline: Pipeline, result: dict | None) -> str:
    """One row of thumbnails per group, with the group's weakest pair score (served from the thumbnail cache)."""
    groups = (result or {}).get("groups") or []
    if not groups:
        return "<p>No near-duplicates at this threshold.</p>" if result else ""
    parts = [f"<p>{result['total_groups']:,} groups from {result['pairs']:,} pairs ({result['seconds']:.2f} s).</p>"]
    for number, group in enumerate(groups, 1):
        images = []
        for row in group["rows"]:
            path = pipeline.collection.thumbnail_path(row["id"], pipeline.cache_dir)
            title = html.escape(f"row {row['id']} · {row.get('caption') or row.get('label') or ''}")
            images.append(f'<img src="/gradio_api/file={quote(str(path))}" title="{title}" alt="{title}" '
                          f'style="{THUMB_STYLE}">')
        parts.append(
            f'<div class="duplicate-group" style="{ROW_STYLE}"><b style="width:100%">Group {number} · '
            f"{len(group['ids'])} images · min score {group['min_score']:.3f} · rows "
            f"{', '.join('#' + str(i) for i in group['ids'])}</b>{''.join(images)}</div>"
        )
    return "".join(parts)


def render_handler(ctx: AppContext) -> Callable[..., Any]:
    """The private event that draws the groups of the request's collection."""

    def render(found: dict | None, request: gr.Request) -> str:
        return groups_html(ctx.pipeline_for(request), found)

    return ctx.guard(render)


def duplicates_tab(ctx: AppContext) -> None:
    """Threshold and group count, then the groups as thumbnail rows and the JSON the API returns."""
    with gr.Tab("Duplicates", id="duplicates"):
        gr.Markdown("Groups of near-duplicate images over the whole collection (FAISS range search at the threshold).")
        with gr.Row():
            threshold = passthrough_slider(0.5, 1, 0.005, value=0.95, label="Threshold (cosine)",
                                           elem_id="duplicates-threshold")
            max_groups = passthrough_slider(1, MAX_GROUPS, 1, value=20, label="Groups to show",
                                            elem_id="duplicates-max-groups")
        button = gr.Button("Find duplicates", variant="primary", elem_id="duplicates-button")
        groups = gr.HTML(elem_id="duplicates-groups")
        with gr.Accordion("Result as JSON (what the API returns)", open=False):
            result = gr.JSON(label="result")
        button.click(duplicates_handler(ctx), [threshold, max_groups], result, api_name="duplicates",
                     **SEARCH_LIMITS).then(
            render_handler(ctx), result, groups, api_visibility="private", queue=False,
        )
