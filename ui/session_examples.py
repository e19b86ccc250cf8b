"""Example queries and images drawn from the collection the session searches (the Space's, or the one the visitor
built): a gr.Dataset whose samples ui.page refreshes per session, and whose click fills the input from the same
collection (gr.Examples keeps one fixed list for every visitor, so its "#150" fails on a 40-image collection)."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any

import gradio as gr

from rag.pipeline import Pipeline

from .context import AppContext

Draw = Callable[[Pipeline], list[str]]


class PerCollection:
    """``draw(pipeline)`` computed once per served pipeline (examples are read from the collection's rows)."""

    def __init__(self, draw: Draw) -> None:
        self.draw = draw
        self._seen: "weakref.WeakKeyDictionary[Any, list[str]]" = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def __call__(self, pipeline: Pipeline | None) -> list[str]:
        if pipeline is None:
            return []
        key = pipeline.collection  # a Pipeline is unhashable (a dataclass); its collection object is its identity
        with self._lock:
            if key not in self._seen:
                self._seen[key] = list(self.draw(pipeline))
            return self._seen[key]


def example_picker(
    ctx: AppContext, target: gr.components.Component, draw: Draw, label: Callable[[Pipeline], str], elem_id: str,
) -> Any | None:
    """A gr.Dataset of examples for ``target`` from the session's collection; returns its click event (fills
    ``target``; chain the search on it), or None when the Space has no collection to draw from."""
    if ctx.pipeline is None:
        return None
    examples = PerCollection(draw)
    first = examples(ctx.pipeline)
    dataset = gr.Dataset(
        components=[target], samples=[[value] for value in first], type="index", label=label(ctx.pipeline),
        visible=bool(first), elem_id=elem_id,
    )

    def fill(index: int | None, request: gr.Request):
        values = examples(ctx.pipeline_for(request))
        return values[index] if index is not None and 0 <= index < len(values) else gr.update()

    def refresh(pipeline: Pipeline) -> list[Any]:
        values = examples(pipeline)
        return [gr.Dataset(samples=[[value] for value in values], label=label(pipeline), visible=bool(values))]

    ctx.per_session([dataset], refresh)
    return dataset.click(fill, [dataset], [target], api_visibility="private", queue=False, show_progress="hidden")
