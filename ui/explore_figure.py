"""The Explore tab's Plotly figure: one WebGL scatter trace per colour group, plus the last search's hits on top."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from rag.explore.map_api import MapPoints

HOVER_CHARS = 80
PALETTE = [  # 20 distinct colours (Tableau 20), then grey for "other" and light grey for "(no label)"
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
    "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
]
OTHER_COLOURS = {"other": "#b0b0b0", "(no label)": "#dddddd"}
HIGHLIGHT = "last search"
# Marker diameter in px by collection size: small collections get finger-sized points (a tap on a phone lands
# within TAP_DISTANCE of one); large ones smaller points so that clusters stay readable.
MARKER_SIZES = ((1_000, 11), (5_000, 8), (20_000, 5))
SMALLEST_MARKER = 3
TAP_DISTANCE = 24  # px around a point that still picks it (Plotly's hoverdistance; a click or tap uses it too)


def marker_size(rows: int) -> int:
    """The marker diameter for a map of ``rows`` points."""
    return next((size for limit, size in MARKER_SIZES if rows <= limit), SMALLEST_MARKER)


def _short(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= HOVER_CHARS else text[: HOVER_CHARS - 1] + "…"


def map_figure(points: MapPoints, hover: Sequence[str] | None = None, highlight: Sequence[int] = ()) -> go.Figure:
    """All points coloured by label group (legend click toggles a group); ``hover`` texts per row if given."""
    size = marker_size(len(points.xy))
    traces = []
    for group, name in enumerate(points.labels):
        rows = np.flatnonzero(points.label_ids == group)
        colour = OTHER_COLOURS.get(name) if group >= len(PALETTE) or name in OTHER_COLOURS else PALETTE[group]
        text = [f"row {i} · {_short(hover[i])}" for i in rows] if hover is not None else None
        traces.append(go.Scattergl(
            x=points.xy[rows, 0], y=points.xy[rows, 1], customdata=rows.astype(np.int32), mode="markers", name=name,
            marker={"size": size, "color": colour or "#b0b0b0", "opacity": 0.8},
            text=text, hovertemplate=("%{text}" if text is not None else "row %{customdata}") + f"<extra>{name}</extra>",
        ))
    hits = np.asarray([i for i in highlight if 0 <= i < len(points.xy)], dtype=np.int64)
    traces.append(go.Scattergl(
        x=points.xy[hits, 0], y=points.xy[hits, 1], customdata=hits.astype(np.int32), mode="markers", name=HIGHLIGHT,
        marker={"size": size + 9, "color": "rgba(0,0,0,0)", "line": {"color": "#000000", "width": 2}},
        hovertemplate="row %{customdata} (last search)<extra></extra>", visible=bool(len(hits)) or "legendonly",
    ))
    figure = go.Figure(traces)
    # The legend sits under the map (Plotly moves the plot's bottom edge up to make room), so on a phone it
    # covers no point and the toolbar at the top right overlaps neither.
    figure.update_layout(
        dragmode="lasso", uirevision="map", height=640, margin={"l": 10, "r": 10, "t": 30, "b": 10},
        legend={"itemsizing": "constant", "orientation": "h", "x": 0, "xanchor": "left", "y": -0.02,
                "yanchor": "top", "title": {"text": "Labels (click one to hide / show it):", "side": "top"}},
        xaxis={"visible": False}, yaxis={"visible": False, "scaleanchor": "x"},
        plot_bgcolor="white", hovermode="closest", hoverdistance=TAP_DISTANCE,
    )
    return figure
