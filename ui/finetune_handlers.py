"""The Build tab's "Tune on my captions": /finetune and /cancel_finetune, and their section of the tab.

After a session build with captions, rag.finetune tunes that collection's embedding space on its own captions (with
the Space's loaded, quantised encoder), judged on held-out images; when they got better, the session searches the
tuned collection from then on (and publishing it publishes the adapter with it). Bounded like builds: it takes the
session's build slot and the Space's one-at-a-time build line, training stops at a CPU time budget keeping what it
learned, the whole run has a deadline, and Cancel stops it between steps (nothing is kept).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable

import gradio as gr

from rag.config import Settings
from rag.errors import InvalidInput, RagError
from rag.finetune import METHODS, FinetuneCancelled, FinetuneOptions, TrainSettings, finetune
from rag.space.session_build import BuildProgress
from rag.space.sessions import BuildCancelledWhileWaiting, BuildStopped, SessionRegistry

from .build_handlers import session_of
from .components import SESSION_API, not_an_mcp_tool
from .context import AppContext, client_of
from .errors import scrub_result

log = logging.getLogger("ui.finetune")
TRAIN_SECONDS = 120.0  # training's CPU time budget on CPU basic; the adapter keeps what it learned by then
DEADLINE_SECONDS = 900.0  # the whole run (encoding the captions too); past it the run is cancelled
MAX_EPOCHS = 300
HOLDOUT_RANGE = (0.05, 0.5)
NOT_FOR_MCP = SESSION_API  # changes the caller's session: never an MCP tool (see ui.components.not_an_mcp_tool)


def finetune_options(method: str, holdout: float, epochs: float, max_seconds: float) -> FinetuneOptions:
    """The request's parameters, checked (empty = the default), as FinetuneOptions."""
    method = (method or "adapter").strip()
    if method not in METHODS:
        raise InvalidInput(f"method must be one of {', '.join(METHODS)}, not {method!r}.")
    holdout = float(holdout or 0.2)
    if not HOLDOUT_RANGE[0] <= holdout <= HOLDOUT_RANGE[1]:
        raise InvalidInput(f"holdout must be between {HOLDOUT_RANGE[0]} and {HOLDOUT_RANGE[1]}, not {holdout}.")
    epochs, seconds = int(epochs or 0), float(max_seconds or TRAIN_SECONDS)
    if not 0 <= epochs <= MAX_EPOCHS:
        raise InvalidInput(f"epochs must be between 0 (= automatic) and {MAX_EPOCHS}, not {epochs}.")
    if not 0 < seconds <= TRAIN_SECONDS:
        raise InvalidInput(f"max_seconds must be between 0 (= {TRAIN_SECONDS:.0f}) and {TRAIN_SECONDS:.0f} on this Space.")
    return FinetuneOptions(method=method, holdout=holdout, train=TrainSettings(epochs=epochs, max_seconds=seconds))


class FinetuneHandlers:
    """/finetune and /cancel_finetune, bound to the Space's session registry and settings."""

    def __init__(self, registry: SessionRegistry, settings: Settings) -> None:
        self.registry, self.settings = registry, settings

    def finetune(self, method: str, holdout: float, epochs: float, max_seconds: float, request: gr.Request,
                 progress=gr.Progress()) -> tuple[dict, str | None]:
        """Tune this session's collection on its captions (every parameter optional: "", 0 = default).

        Returns ({"ok", "tuned", "message", "heldout_rows", "relevance", "before", "after", "table", "train",
        "seconds", "info"}, the before/after similarity plot); when tuned, this session searches the tuned collection.
        """
        session = session_of(request)
        state = self.registry.state(session)
        if state is None or state.collection_dir is None or state.pipeline is None:
            raise InvalidInput("Build a collection with captions in this tab first: tuning learns from its captions.")
        source, name = state.collection_dir, state.pipeline.name
        options = finetune_options(method, holdout, epochs, max_seconds)
        state, work = self.registry.begin_build(session, client_of(request))
        options.plots_dir = work / "plots"
        report = lambda fraction, desc: progress(fraction, desc=desc)  # noqa: E731
        return self._run(session, state, work, source, name, options, report)

    def _run(self, session: str, state: Any, work: Path, source: Path, name: str, options: FinetuneOptions,
             report: Callable[[float | None, str], None]) -> tuple[dict, str | None]:
        deadline = time.monotonic() + DEADLINE_SECONDS
        stop = lambda: state.cancel.is_set() or time.monotonic() > deadline  # noqa: E731

        def progress(stage: str, fraction: float) -> None:
            if stop():
                raise FinetuneCancelled("Tuning was cancelled (or ran past its time limit); nothing was kept.")
            report(fraction, stage)

        try:
            with self.registry.line.turn(on_wait=lambda ahead: report(0.0, _waiting(ahead)),
                                         should_stop=state.cancel.is_set):
                result = finetune(source, work / "collection", options, self.settings, encoder=self.registry.space.encoder,
                                  name=name, progress=progress, should_stop=stop)
            pipeline = None
            if result.written:
                pipeline = self.registry.finish_build(session, work / "collection", f"{name}, tuned on its captions")
            else:
                self.registry.abort_build(session, work)
        except (FinetuneCancelled, BuildCancelledWhileWaiting, BuildStopped) as exc:
            self.registry.abort_build(session, work)
            return {"ok": False, "cancelled": True, "error": str(exc)}, None
        except InvalidInput:
            self.registry.abort_build(session, work, refund=True)
            raise
        except RagError as exc:
            self.registry.abort_build(session, work)
            return scrub_result({"ok": False, "cancelled": False, "error": str(exc)}), None
        except BaseException:
            self.registry.abort_build(session, work)
            raise
        plot = work / "plots" / "similarity.png"
        return _answer(result, pipeline), (str(plot) if result.written and plot.is_file() else None)

    def cancel(self, request: gr.Request) -> dict:
        """Stop this session's tuning (or build) between two steps; nothing of it is kept."""
        return {"ok": True, "cancelling": self.registry.cancel(session_of(request))}


def _waiting(ahead: int) -> str:
    """The place in the Space's build line, worded as for a build ("Waiting: 2 builds ahead of yours …")."""
    return BuildProgress(0, 0, waiting=ahead, stage="waiting").message()


def _answer(result: Any, pipeline: Any) -> dict:
    """What /finetune returns: the verdict and the held-out numbers (no server paths)."""
    record = result.record
    return scrub_result({
        "ok": True, "tuned": result.written, "message": result.message,
        "heldout_rows": len(record["heldout"]["rows"]), "relevance": record["heldout"]["relevance"],
        "before": result.before, "after": result.after, "table": result.table,
        "train": record["train"], "seconds": result.seconds, "info": pipeline.info() if pipeline else None,
    })


def finetune_section(ctx: AppContext, switch: gr.Checkbox | None = None) -> None:
    """The "Tune on my captions" accordion; call inside the Build tab."""
    handlers = FinetuneHandlers(ctx.sessions, ctx.build_settings)
    with gr.Accordion("Tune on my captions", open=False, elem_id="finetune-section"):
        gr.Markdown(
            "After building a collection **with captions**, teach the search its own words (names, codes, local "
            "terms): a small adapter on the embedding model is trained on your captions, judged on held-out images "
            f"it never saw, and kept only if they got better. Training stops after {TRAIN_SECONDS:.0f} s at most; "
            "Cancel stops it. Afterwards every tab searches the tuned collection, and publishing it publishes the "
            "adapter with it."
        )
        with gr.Row():
            method = gr.Dropdown(list(METHODS), value="adapter", label="method",
                                 info="adapter: the text side only (keeps the index); adapter-both: text and images")
            holdout = gr.Number(value=0.2, step=0.05, label=f"held-out fraction ({HOLDOUT_RANGE[0]}–{HOLDOUT_RANGE[1]})")
            epochs = gr.Number(value=0, precision=0, label="epochs (0 = automatic)")
            seconds = gr.Number(value=TRAIN_SECONDS, label=f"training budget, seconds (at most {TRAIN_SECONDS:.0f})")
        with gr.Row():
            tune_button = gr.Button("Tune on my captions", variant="primary", elem_id="finetune-button")
            cancel_button = gr.Button("Cancel", variant="stop", elem_id="finetune-cancel")
        table = gr.Markdown("", elem_id="finetune-status")
        plot = gr.Image(label="Held-out captions × images, before and after", type="filepath", interactive=False)
        with gr.Accordion("Tuning result as JSON (what /finetune returns)", open=False):
            result = gr.JSON(label="result")
        event = tune_button.click(not_an_mcp_tool(ctx.guard(handlers.finetune)), [method, holdout, epochs, seconds], [result, plot],
                                  api_name="finetune", api_visibility=NOT_FOR_MCP, concurrency_id="build",
                                  concurrency_limit=None)
        event.then(_summary, [result], [table, switch if switch is not None else gr.State()],
                   api_visibility="private", queue=False)
        cancel_button.click(not_an_mcp_tool(ctx.guard(handlers.cancel)), None, [gr.JSON(visible=False)], api_name="cancel_finetune",
                            queue=False, api_visibility=NOT_FOR_MCP)


def _summary(result: dict | None) -> tuple[str, Any]:
    """The status line and the held-out table under the button; the switch set to the (tuned) own collection."""
    result = result or {}
    if not result.get("ok"):
        return ("Tuning cancelled." if result.get("cancelled") else f"⚠️ {result.get('error', 'Tuning failed.')}"), gr.update()
    verdict = "✅ " + result["message"] + " Every tab now searches the tuned collection." if result["tuned"] else (
        "⚠️ " + result["message"] + " You keep searching the collection you built.")
    return (f"{verdict}\n\nHeld-out images: {result['heldout_rows']} (relevance: {result['relevance']}); trained "
            f"{result['train']['steps']} steps in {result['train']['seconds']} s.\n\n{result['table']}"), (
        gr.update(value=False) if result["tuned"] else gr.update())
