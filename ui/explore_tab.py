"""The "Explore" tab: the map of the whole collection, and its endpoints /map and /map_select.

The figure is sent when the tab is opened (and again only when the last search's hits changed). A click
or lasso on the map reaches Python through a small gr.HTML bridge: gr.Plot has no select event in Gradio
6.31, but the page's Plotly graph div emits ``plotly_click`` / ``plotly_selected`` with each point's
``customdata`` (its row id). The selected rows fill the same results panel as the search tabs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gradio as gr

from rag.errors import MapMissing
from rag.explore.map_api import MAX_SELECT

from .components import ResultsPanel, details_markdown, number_slider, results_panel
from .context import SEARCH_LIMITS, AppContext
from .explore_figure import map_figure
from .search_tabs import SearchHandlers, wire_more_like_this
from .theme import PHONE_MAX_WIDTH
from rag.pipeline import MAX_K

HOVER_CAPTIONS_MAX = 20_000  # beyond this the figure carries no captions (hover shows row and label)
SELECTION_SHOWN = 48
INTRO = ("Every image of the collection on one map: similar images lie close together. Click (or tap) a point, "
         "or draw a lasso around several, to see the images; click a label under the map to hide or show it. "
         "Rings mark the results of your last search.")
BRIDGE_JS = """
const attach = () => {
  const gd = document.querySelector('#explore-map .js-plotly-plot');
  if (!gd || !gd.on || gd.__ragBridge) return;
  gd.__ragBridge = true;
  const send = (points) => {
    const ids = (points || []).map(p => p.customdata).filter(i => Number.isInteger(i));
    if (!ids.length) return;
    trigger('click', {ids: Array.from(new Set(ids)).slice(0, %d)});
    // On a phone the results are under the map, out of sight: bring them up.
    if (matchMedia('(max-width: %dpx)').matches) document.querySelector('#explore-gallery').scrollIntoView();
  };
  gd.on('plotly_click', e => send(e && e.points));
  gd.on('plotly_selected', e => send(e && e.points));
};
setInterval(attach, 400);
""" % (MAX_SELECT, PHONE_MAX_WIDTH)


def hit_ids(result: dict | None) -> list[int]:
    """Row ids of a search result (what the search tabs' JSON holds)."""
    return [int(h["id"]) for h in (result or {}).get("hits") or [] if "id" in h]


def explore_handlers(ctx: AppContext):
    """/map and /map_select, guarded by the app's error mapper."""

    def map_points(limit: int | None = None, request: gr.Request = None) -> dict:
        """The map of the collection: {"ids", "x", "y", "label_ids", "labels"} (labels[label_ids[i]] is row
        ids[i]'s colour group: the 20 most frequent labels, "other", "(no label)"); ``limit``: a seeded sample."""
        return ctx.pipeline_for(request).map_points(limit)

    def map_select(ids: list[int] | str, request: gr.Request = None) -> list[dict]:
        """Details of map rows (ids as a list or "3, 17"): id, captions, label, source, metadata, x, y."""
        rows = ctx.pipeline_for(request).map_rows(ids)
        return [{k: v for k, v in row.items() if k != "thumbnail"} for row in rows]

    return ctx.guard(map_points), ctx.guard(map_select)


def _short(text: str, limit: int = 90) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def selection_outputs(rows: list[dict[str, Any]]):
    """Selected map rows -> the results panel: gallery, JSON, details of the first row, its id, "More like this"."""
    gallery = [(row["thumbnail"], f"row {row['id']} · {_short(row['captions'][0] if row['captions'] else row['label'] or '')}")
               for row in rows]
    hits = [{k: v for k, v in row.items() if k != "thumbnail"} for row in rows]
    if not hits:
        return gallery, {"hits": []}, "*Nothing selected.*", -1, gr.update(interactive=False)
    return gallery, {"hits": hits}, details_markdown(hits[0]), hits[0]["id"], gr.update(interactive=True)


def explore_tab(ctx: AppContext, handlers: SearchHandlers, searches: Sequence[ResultsPanel] = ()) -> ResultsPanel:
    """The Explore tab; ``searches``: the search tabs' panels, whose latest hits are ringed on the map."""
    with gr.Tab("Explore", id="explore", elem_id="explore-tab") as tab:
        # States inside the tab: a State among gr.Tabs' children shifts the tab's index and the page then
        # shows a second "Explore" tab when this one is opened.
        last_hits, shown = gr.State([]), gr.State(None)
        message = gr.Markdown(INTRO, elem_id="explore-message")
        plot = gr.Plot(show_label=False, elem_id="explore-map")
        bridge = gr.HTML("", html_template="", js_on_load=BRIDGE_JS, elem_id="explore-bridge")
        panel = results_panel("explore")
        k = number_slider(1, MAX_K, value=12, label="Number of results for \"More like this\"")
        wire_more_like_this(panel, handlers.similar_to, k, None, "explore")
    for search in searches:
        search.result.change(hit_ids, [search.result], [last_hits], api_visibility="private", queue=False)

    def render(highlight: list[int], already: list | None, request: gr.Request):
        """The figure when the tab opens (skipped when it already rings these hits); a hint without a map."""
        pipeline = ctx.pipeline_for(request)
        key = [pipeline.collection.fingerprint, highlight]  # a switched collection is drawn anew
        if already == key:
            return gr.skip(), gr.skip(), already
        try:
            points = pipeline.map_data()
        except MapMissing as exc:
            return gr.update(visible=False), f"**No map yet.** {exc}", None
        hover = None
        if len(points.xy) <= HOVER_CAPTIONS_MAX:
            hover = [c[0] if c else "" for c in pipeline.collection.all_captions()]
        return gr.update(value=map_figure(points, hover, highlight), visible=True), INTRO, key

    def select(evt: gr.EventData, request: gr.Request):
        """Points clicked or lassoed on the map fill the results panel."""
        ids = list(evt._data.get("ids") or [])[:SELECTION_SHOWN]
        return selection_outputs(ctx.pipeline_for(request).map_rows(ids) if ids else [])

    tab.select(ctx.guard(render), [last_hits, shown], [plot, message, shown], api_visibility="private",
               **SEARCH_LIMITS)
    bridge.click(ctx.guard(select), None, [panel.gallery, panel.result, *panel.selection],
                 api_visibility="private", **SEARCH_LIMITS)
    return panel


def explore_api(ctx: AppContext) -> None:
    """Register /map and /map_select (outside the tabs: gr.api adds a component)."""
    map_fn, select_fn = explore_handlers(ctx)
    gr.api(map_fn, api_name="map", concurrency_limit=None)
    gr.api(select_fn, api_name="map_select", concurrency_limit=None)
