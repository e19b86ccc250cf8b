"""The Search tab's filter controls: a label picker and one column condition, written into the filters JSON.

The JSON box is what /search receives as ``filters``, so the page and the API send the same thing; a user can
also edit it directly for several conditions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

import gradio as gr

from rag.search.filters import OPERATORS
from rag.pipeline import Pipeline

from .context import AppContext
from .examples import frequent_labels


@dataclass
class FilterControls:
    """The label picker, the column condition (column, operator, value) and the JSON they produce."""

    labels: gr.Dropdown
    column: gr.Dropdown
    operator: gr.Dropdown
    value: gr.Textbox
    json: gr.Textbox

    @property
    def inputs(self) -> list[gr.components.Component]:
        return [self.labels, self.column, self.operator, self.value]


def _typed(text: str) -> Any:
    """A number when the text is one (so min/max compare numerically), else the text."""
    try:
        number = float(text)
    except ValueError:
        return text
    return int(number) if number.is_integer() and "." not in text else number


def filters_json(labels: list[str] | None, column: str | None, operator: str | None, value: str | None) -> str:
    """The filters dict as JSON text ("" when nothing is chosen); ``in`` takes comma-separated values."""
    spec: dict[str, Any] = {}
    if labels:
        spec["label"] = list(labels)
    text = (value or "").strip()
    if column and operator and text:
        if operator == "in":
            bound: Any = [_typed(v.strip()) for v in text.split(",") if v.strip()]
        else:
            bound = _typed(text) if operator in ("eq", "min", "max") else text
        condition = {operator: bound}
        if column == "label" and "label" in spec:
            condition["in"] = spec["label"]
        spec[column] = condition
    return json.dumps(spec, ensure_ascii=False) if spec else ""


def filter_choices(pipeline: Pipeline | None) -> tuple[list[str], list[str]]:
    """The label picker's and the column picker's choices for a collection (none without one)."""
    if pipeline is None:
        return [], []
    return frequent_labels(pipeline), pipeline.collection.filter_columns


def refresh_choices(ctx: AppContext) -> Callable[..., tuple[Any, Any]]:
    """Handler: the label and column choices of the collection this session searches (its own after a build in
    the Build tab, else the Space's), keeping whatever the user picked that is still valid."""

    def refresh(labels: list[str] | None, column: str | None, request: gr.Request) -> tuple[Any, Any]:
        if ctx.pipeline is None:
            return gr.update(), gr.update()
        choices, columns = filter_choices(ctx.pipeline_for(request))
        return (gr.update(choices=choices, value=[v for v in labels or [] if v in choices], visible=bool(choices)),
                gr.update(choices=columns, value=column if column in columns else None))

    return refresh


def filter_controls(pipeline: Pipeline | None) -> FilterControls:
    """Lay out the controls from the collection's labels and columns; every change rewrites the JSON."""
    labels, columns = filter_choices(pipeline)
    with gr.Accordion("Filters", open=False, elem_id="search-filters-box"):
        with gr.Row():
            label_box = gr.Dropdown(
                labels, value=[], multiselect=True, label="Label is one of", visible=bool(labels),
                elem_id="filter-labels", scale=2,
            )
            column = gr.Dropdown(columns, value=None, label="Column", elem_id="filter-column", scale=1)
            operator = gr.Dropdown(list(OPERATORS), value="contains", label="Operator", elem_id="filter-operator",
                                   scale=1)
            value = gr.Textbox(label="Value", placeholder="e.g. beach · 2000 · dog, cat (for in)",
                               elem_id="filter-value", scale=2)
        json_box = gr.Textbox(
            label='Filters sent to /search (JSON; edit for more conditions, e.g. {"year": {"min": 2000}})',
            value="", max_lines=3, elem_id="search-filters",
        )
    controls = FilterControls(label_box, column, operator, value, json_box)
    for component in controls.inputs:
        component.change(filters_json, controls.inputs, json_box, api_visibility="private", queue=False)
    return controls
