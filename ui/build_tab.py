"""The Build tab: bring your own images (archive or dataset) into this session, keep them (publish, your own
Space) and, for the Space's owner, change what the Space serves. Layout and wiring only (see build_handlers).

Every other tab serves the caller's session through AppContext.pipeline_for -> SessionRegistry.pipeline_for.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import gradio as gr

from rag.config import Settings
from rag.pipeline import Pipeline
from rag.space.session_build import CANCELLED
from rag.space.sessions import SessionRegistry, clear_orphans

from .build_handlers import BuildHandlers
from .build_help import built_line, skipped_line, what_is_kept, what_to_upload
from .finetune_handlers import finetune_section
from .components import SESSION_API, not_an_mcp_tool
from .context import AppContext
from .uploads import UploadJanitor

ARCHIVE_TYPES = [".zip", ".tar", ".gz", ".tgz"]
PREVIEW_ROWS = 24
BUILDING = "⏳ Starting your build…"
# Builds never wait in Gradio's queue, whose slots searches need: the event has no concurrency limit, so each
# /build starts at once and either takes a place in rag.space.sessions' bounded line (RAG_BUILD_LINE_MAX places,
# RAG_BUILD_PER_CLIENT per address, one per session; one encodes, the others see their place) or is refused
# in milliseconds. The owner's /serve_collection has no line behind builds either: visitors are refused at once
# and the owner's swaps run one at a time (BuildHandlers' lock).
BUILD_LIMITS: dict[str, Any] = {"concurrency_id": "build", "concurrency_limit": None}
SERVE_LIMITS: dict[str, Any] = {"concurrency_id": "serve", "concurrency_limit": None}
# Session-changing endpoints: callable by name with keywords (gradio_client, the page) but not MCP tools, since
# every MCP agent shares one session (ui.context.through_mcp; see ui.components.not_an_mcp_tool).
NOT_FOR_MCP = SESSION_API
_CLEARED: set[Path] = set()  # session roots whose leftovers from an earlier run this process has deleted
SIGN_IN_NOTE = (
    "**Signing in** lets you keep what you built: publish it as a dataset in your account (private by default) "
    "and create your own copy of this Space that serves it. Nothing is written to your account otherwise."
)


def build_settings(pipeline: Pipeline) -> Settings:
    """The build limits from the Space variables, with the served pipeline's cache folder."""
    return replace(Settings.from_env(), cache_dir=Path(pipeline.cache_dir))


def make_registry(pipeline: Pipeline, settings: Settings) -> SessionRegistry:
    """The Space's session registry (folders under ``<cache>/sessions``, swept every minute), after deleting what
    a previous run left there: session folders and served copies (``<cache>/served``) the Space no longer serves."""
    root = Path(settings.cache_dir) / "sessions"
    if root.absolute() not in _CLEARED:  # once per process: what later registries find there is this process's own
        _CLEARED.add(root.absolute())
        clear_orphans(root)
        clear_served_copies(Path(settings.cache_dir) / "served", Path(pipeline.collection.directory))
    registry = SessionRegistry(pipeline, root, ttl=settings.session_ttl, max_builds=settings.session_max_builds,
                               line_max=settings.build_line_max, per_client=settings.build_per_client)
    registry.start_sweeper()
    return registry


def clear_served_copies(served: Path, in_use: Path) -> None:
    """Delete copies kept by an earlier /serve_collection except the one this process serves (a restart loads
    the published repo the owner's choice was saved as, or the collection RAG_COLLECTION names)."""
    for entry in served.iterdir() if served.is_dir() else []:
        if entry.resolve() != in_use.resolve():
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)


def enable_sessions(ctx: AppContext) -> None:
    """Give the page per-session collections (only when the Space's models are loaded) and the upload janitor."""
    if ctx.pipeline is not None and ctx.sessions is None:
        ctx.build_settings = build_settings(ctx.pipeline)
        ctx.sessions = make_registry(ctx.pipeline, ctx.build_settings)
        ctx.uploads = UploadJanitor(grace=ctx.build_settings.upload_grace)


def upload_limit(ctx: AppContext, default: str) -> str:
    """Gradio's max_file_size: large enough for an archive of RAG_BUILD_MAX_MB."""
    if ctx.sessions is None:
        return default
    return f"{max(ctx.build_settings.build_max_mb, int(default.rstrip('mb')))}mb"


def sign_in_available() -> bool:
    """gr.LoginButton only on a Space: elsewhere Gradio mocks sign-in by calling the Hub with a local token at
    launch, which fails offline and would stop the page from starting."""
    return os.environ.get("SYSTEM") == "spaces" and bool(os.environ.get("SPACE_ID"))


def collection_switch(ctx: AppContext) -> gr.Checkbox | None:
    """The "Search the Space's collection instead" switch (ticked = the Space's, unticked = the one you built),
    hidden until this session has built a collection of its own (before that there is nothing to switch to)."""
    if ctx.sessions is None:
        return None
    handlers = BuildHandlers(ctx.sessions, ctx.build_settings, ctx.uploads)
    switch = gr.Checkbox(
        value=True, label="Search the Space's collection instead of yours", elem_id="use-space-collection",
        interactive=True, visible=False, info="Untick to search the collection you built (only you see it).",
    )
    switch.switched = switch.input(  # page.py refreshes the "Searching:" line after it
        not_an_mcp_tool(ctx.guard(handlers.use_space_collection)), [switch], [gr.JSON(visible=False)],
        api_name="use_space_collection", queue=False, api_visibility=NOT_FOR_MCP)
    return switch


def _preview(result: dict | None, registry: SessionRegistry, request: gr.Request,
             failure: str | None = None) -> tuple[Any, Any, Any]:
    """After /build: a status line, the first thumbnails of the new collection, and the switch set to it."""
    result = result or {}
    if not result.get("ok"):
        if result.get("cancelled"):
            return f"{CANCELLED} {skipped_note(result)}".strip(), gr.update(), gr.update()
        return f"⚠️ {result.get('error') or failure or 'The build failed.'}", gr.update(), gr.update()
    pipeline = registry.pipeline_for(request.session_hash)
    rows = min(PREVIEW_ROWS, len(pipeline.collection))
    items = [(str(pipeline.collection.thumbnail_path(i, pipeline.cache_dir)), (pipeline.collection.rows([i])[0]
              ["captions"] or [""])[0][:80]) for i in range(rows)]
    return built_line(result), items, gr.update(value=False, visible=True)


def skipped_note(result: dict) -> str:
    """After a cancelled build: the files skipped before it stopped, if any."""
    return f"({skipped_line(result['skipped'])}.)" if result.get("skipped") else ""


def build_tab(ctx: AppContext, switch: gr.Checkbox | None = None) -> Any:
    """The Build tab; call inside ``gr.Tabs()``. ``switch`` (from collection_switch) is set after a build.
    Returns the event that shows a finished build (page.py refreshes the "Searching:" line after it), or None."""
    if ctx.sessions is None:
        return None
    settings = ctx.build_settings
    handlers = BuildHandlers(ctx.sessions, settings, ctx.uploads)
    with gr.Tab("Build your own", id="build"):
        gr.Markdown("Index **your own images** with this Space's embedding model, then search them in every tab.")
        with gr.Row(equal_height=False):
            with gr.Column():
                archive = gr.File(label="Archive of images (.zip, .tar, .tar.gz)", file_types=ARCHIVE_TYPES,
                                  type="filepath", elem_id="build-archive")
                label_from_folder = gr.Checkbox(label="Folder names are labels", value=False)
            with gr.Column():
                gr.Markdown(what_to_upload(settings), elem_id="build-help")
        dataset, split, image_column, caption_column, label_column, limit = _dataset_form(settings)
        with gr.Row():
            build_button = gr.Button("Build", variant="primary", elem_id="build-button")
            cancel_button = gr.Button("Cancel", variant="stop", elem_id="build-cancel", interactive=False)
        status = gr.Markdown("", elem_id="build-status")
        gallery = gr.Gallery(label="Your collection (first images)", columns=6, height="auto",
                             object_fit="contain", allow_preview=False, elem_id="build-gallery")
        with gr.Accordion("Build result as JSON (what /build returns)", open=False):
            result = gr.JSON(label="result")
        gr.Markdown(what_is_kept(settings), elem_id="build-privacy")
        finetune_section(ctx, switch)  # "Tune on my captions" (/finetune): after a build with captions
        publish = _keep_section(ctx, handlers)
        owner = _owner_section(ctx, handlers)
        inputs = [archive, dataset, split, image_column, caption_column, label_column, label_from_folder, limit]
        page = BuildPage(archive, status, gallery, result, build_button, cancel_button, switch, publish)
        shown = _wire_build(ctx, handlers, page, inputs)
        _wire_cancel(ctx, handlers, cancel_button, status)

        def on_load(request: gr.Request, profile: gr.OAuthProfile | None) -> tuple[Any, ...]:
            return gr.update(visible=handlers.is_owner(profile)), *_publish_state(handlers, request, profile)

        gr.on(None, on_load, None, [owner, *publish], api_visibility="private", queue=False)  # on page load
    return shown


@dataclass
class BuildPage:
    """The Build tab's components that a build changes."""

    archive: gr.File
    status: gr.Markdown
    gallery: gr.Gallery
    result: gr.JSON
    build_button: gr.Button
    cancel_button: gr.Button
    switch: gr.Checkbox | None
    publish: list[Any]


def _wire_build(ctx: AppContext, handlers: BuildHandlers, page: BuildPage, inputs: list[Any]) -> Any:
    """Build: clear the old status and lock Build while one runs; a timer polls the session's progress line (place
    in line, then images/s and time left) onto the status line; Gradio's progress bar sits on the gallery."""
    ticker = gr.Timer(1.0, active=False)
    ticker.tick(handlers.build_status, None, [page.status], queue=False, show_progress="hidden",
                api_visibility="private")
    starting = page.build_button.click(
        lambda: (BUILDING, None, gr.update(interactive=False), gr.update(interactive=True), gr.Timer(active=True)),
        None, [page.status, page.result, page.build_button, page.cancel_button, ticker],
        api_visibility="private", queue=False)
    build_event = starting.then(
        not_an_mcp_tool(ctx.guard(handlers.build)), inputs, [page.result], api_name="build",
        api_visibility=NOT_FOR_MCP, show_progress_on=[page.gallery], **BUILD_LIMITS)
    outputs = [page.status, page.gallery, page.switch if page.switch is not None else gr.State(), page.archive,
               page.build_button, page.cancel_button, ticker, *page.publish]

    def preview(built: dict | None, upload: str | None, request: gr.Request,
                profile: gr.OAuthProfile | None) -> tuple[Any, ...]:
        shown = _preview(built, handlers.registry, request, handlers.last_failure(request))
        gone = bool(upload) and not Path(upload).is_file()  # its build ended, and the upload with it
        return (*shown, gr.update(value=None) if gone else gr.update(), gr.update(interactive=True),
                gr.update(interactive=False), gr.Timer(active=False), *_publish_state(handlers, request, profile))

    return build_event.then(preview, [page.result, page.archive], outputs, api_visibility="private", queue=False)


def _wire_cancel(ctx: AppContext, handlers: BuildHandlers, button: gr.Button, status: gr.Markdown) -> None:
    """Cancel (enabled only while a build runs) and what it answers, on the status line."""
    answer = gr.JSON(visible=False)
    button.click(not_an_mcp_tool(ctx.guard(handlers.cancel_build)), None, [answer], api_name="cancel_build",
                 queue=False, api_visibility=NOT_FOR_MCP).success(
        lambda said: f"⏳ {said['message']}" if said.get("cancelling") else said["message"], [answer], [status],
        api_visibility="private", queue=False)


def _dataset_form(settings: Settings) -> list[Any]:
    """The six fields of a Hub dataset build, folded away: most visitors upload an archive."""
    with gr.Accordion("…or from a Hub dataset", open=False, elem_id="build-dataset"):
        dataset = gr.Textbox(value="", label="Hub dataset (user/name)", placeholder="nlphuji/flickr30k")
        with gr.Row():
            split = gr.Textbox(label="split", value="train")
            limit = gr.Number(label=f"limit (0 = {settings.build_max_images})", value=0, precision=0)
        with gr.Row():
            image_column = gr.Textbox(value="", label="image column", placeholder="detect")
            caption_column = gr.Textbox(value="", label="caption column", placeholder="detect")
            label_column = gr.Textbox(value="", label="label column", placeholder="none")
    return [dataset, split, image_column, caption_column, label_column, limit]


def _publish_state(handlers: BuildHandlers, request: gr.Request, profile: gr.OAuthProfile | None) -> tuple[Any, ...]:
    """Publish and Create my own Space: enabled once signed in with a collection built, else a hint says why."""
    ready, hint = handlers.may_publish(request, profile)
    button = gr.update(interactive=ready)
    return button, button, gr.update(value=f"_{hint}_" if hint else "", visible=bool(hint))


def _keep_section(ctx: AppContext, handlers: BuildHandlers) -> list[Any]:
    """Sign in, publish to your dataset repo, create your own Space; returns the two buttons and their hint."""
    with gr.Accordion("Keep it: publish and get your own Space", open=False):
        gr.Markdown(SIGN_IN_NOTE)
        if sign_in_available():
            gr.LoginButton()
        else:
            gr.Markdown("_Sign-in appears when this app runs as a Hugging Face Space._")
        hint = gr.Markdown("_Sign in with Hugging Face to publish._", elem_id="publish-hint")
        with gr.Row():
            repo_id = gr.Textbox(value="", label="dataset repo", placeholder="your-name/my-rag-collection")
            private = gr.Checkbox(label="private", value=True)
            publish_button = gr.Button("Publish my collection", elem_id="publish-button", interactive=False)
        with gr.Row():
            space_id = gr.Textbox(value="", label="your new Space", placeholder="your-name/my-rag-space")
            space_private = gr.Checkbox(label="private", value=True)
            space_button = gr.Button("Create my own Space", elem_id="create-space-button", interactive=False)
        keep_result = gr.JSON(label="result", elem_id="keep-result")
        publish_button.click(not_an_mcp_tool(ctx.guard(handlers.publish)), [repo_id, private], [keep_result], api_name="publish",
                             api_visibility=NOT_FOR_MCP)
        space_button.click(not_an_mcp_tool(ctx.guard(handlers.create_space)), [space_id, space_private], [keep_result],
                           api_name="create_space", api_visibility=NOT_FOR_MCP)
    return [publish_button, space_button, hint]


def _owner_section(ctx: AppContext, handlers: BuildHandlers) -> gr.Accordion:
    """The Space owner's swap: serve a collection to everyone, and write it to the Space's variables. Shown only
    to a visitor signed in as the owner (is_owner, the check /serve_collection makes); without sign-in (a local
    run) nobody passes it, so nobody sees it; the endpoint itself stays and refuses everyone else."""
    with gr.Accordion("Owner: change what this Space serves", open=False, visible=False,
                      elem_id="owner-section") as section:
        gr.Markdown("Only the Space's author (or a user listed in `RAG_ADMINS`), signed in. Leave the collection "
                    "empty to serve the one you built in this session.")
        with gr.Row():
            collection = gr.Textbox(value="", label="collection (dataset repo id, or empty)")
            revision = gr.Textbox(value="", label="revision (optional)")
            serve_button = gr.Button("Serve it to everyone", elem_id="serve-button")
        serve_result = gr.JSON(label="result")
        serve_button.click(not_an_mcp_tool(ctx.guard(handlers.serve_collection)), [collection, revision], [serve_result],
                           api_name="serve_collection", api_visibility=NOT_FOR_MCP, **SERVE_LIMITS)
    return section


def attach_session_end(demo: gr.Blocks, ctx: AppContext) -> None:
    """Delete a session's collection as soon as its browser tab closes (the TTL catches the rest), and start the
    janitor of the page's uploads (ui.uploads)."""
    if ctx.sessions is not None:
        demo.unload(BuildHandlers(ctx.sessions, ctx.build_settings, ctx.uploads).end_session)
    if ctx.uploads is not None:
        ctx.uploads.watch(demo.upload_file_set)
        ctx.uploads.start()
