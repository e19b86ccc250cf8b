"""The Space: a Gradio Blocks UI over rag.pipeline (text -> image, image -> image, describe with RAG).

UI only: every search, prompt and check lives in rag/. This module loads the pipeline once at start-up,
builds the page around it (or around the start-up error, so the page still opens and says what to fix),
and names the API endpoints /search_text, /search_image, /similar_to, /describe and /info.

    python app.py [--host 0.0.0.0] [--port 7860]     (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT also work)
"""

from __future__ import annotations

try:  # ZeroGPU: `spaces` must be imported before torch initialises CUDA.
    import spaces
except ImportError:
    spaces = None

import argparse
import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr

from rag.config import Settings
from rag.errors import InvalidInput, RagError
from rag.pipeline import MAX_CONTEXT_K, MAX_K, Hit, Pipeline

log = logging.getLogger("app")

TITLE = "Multimodal RAG image search"
MAX_FILE_SIZE = "20mb"
CAPTION_CHARS = 90
TEXT_EXAMPLES = [
    "a dog running on the beach",
    "two people riding bicycles on a street",
    "a child eating ice cream",
    "kucing mesir",
    "anjing bermain di pantai",
]
# Concurrency. A CPU-basic Space has 2 vCPUs. Searches are short (one CLIP forward pass, which rag.encoder
# serialises behind a lock anyway, a FAISS lookup and thumbnail file I/O), so up to 4 run at once across all
# search events (shared concurrency_id): decoding uploads, FAISS and Gradio's file handling overlap while
# no more threads than that fight over 2 cores. Describe runs one at a time: GIT beam search (or Qwen2-VL
# on the one GPU) already saturates the hardware, so two in parallel would each take twice as long and use
# twice the memory; serial gives the same throughput with better latency for whoever is first in line.
SEARCH_CONCURRENCY = 4
DESCRIBE_CONCURRENCY = 1
QUEUE_MAX_SIZE = 64  # beyond this, new requests are told the queue is full instead of waiting for minutes

FIX_COLLECTION = (
    "Set the **RAG_COLLECTION** variable to a collection built with `index_build.py` "
    "(a Hub dataset repo `user/name` or a local folder); **RAG_REVISION** pins a branch/tag/commit and "
    "**HF_TOKEN** gives access to a private repo."
)
FIX_EMBEDDING = (
    "The embedding model comes from the collection's manifest; check that it can be downloaded "
    "(**HF_TOKEN** for gated/private models) and that **RAG_TEXT_MODEL**, if set, is a text model aligned "
    "with it (e.g. `sentence-transformers/clip-ViT-B-32-multilingual-v1` for `clip-ViT-B-32`)."
)
FIX_CAPTIONER = (
    "Set **RAG_CAPTIONER** (`auto`, `git` or `qwen2-vl`) and **RAG_CAPTIONER_MODEL** to a captioner this "
    "hardware can run (e.g. `git` / `microsoft/git-base-coco` on CPU). Search still works."
)


# -- start-up -------------------------------------------------------------------------------------------


class StartupError(RagError):
    """What went wrong at start-up, with the variable to set; shown on the page and raised by every handler."""


def _stage_error(exc: BaseException, stage: str) -> StartupError:
    from rag.default_collection import DEFAULT_DATASET

    fix = {"captioner": FIX_CAPTIONER, "embedding model": FIX_EMBEDDING}.get(stage, FIX_COLLECTION)
    detail = str(exc) if isinstance(exc, RagError) else f"{type(exc).__name__}: {exc}"
    what = f"load the {stage}"
    if stage == "default collection":
        what = f"build the default collection from {DEFAULT_DATASET} (RAG_COLLECTION is not set)"
    return StartupError(f"Could not {what}: {detail}\n\n{fix}")


def load_pipeline(settings: Settings | None = None) -> tuple[Pipeline | StartupError, str | None]:
    """Load everything once: (pipeline, None), (pipeline, captioner problem) or (StartupError, None).

    With RAG_COLLECTION unset, the default collection is built once into RAG_CACHE_DIR and reused.
    A captioner that fails to load leaves search working; the Describe tab then explains the problem.
    """
    from rag.captioner import load_captioner
    from rag.default_collection import describe_default, ensure_default_collection

    stage = ["configuration"]

    def status(message: str) -> None:
        log.info(message)
        if message.startswith("loading embedding model"):
            stage[0] = "embedding model"

    try:
        settings = settings or Settings.from_env()
    except ValueError as exc:
        return StartupError(f"Bad configuration: {exc}"), None
    try:
        collection_dir = None
        if not settings.collection:
            stage[0] = "default collection"
            collection_dir = ensure_default_collection(settings, status=log.info)
        stage[0] = "collection"
        pipeline = Pipeline.from_settings(settings, collection_dir=collection_dir, with_captioner=False, status=status)
        if not settings.collection:
            pipeline.name = describe_default()
    except Exception as exc:  # anything here is shown on the page instead of crashing
        error = _stage_error(exc, stage[0])
        log.error("start-up failed: %s", error, exc_info=not isinstance(exc, RagError))
        return error, None
    try:
        log.info("loading captioner (%s)", settings.captioner)
        pipeline.captioner = load_captioner(
            settings.captioner, settings.captioner_model, pipeline.encoder, device=settings.device,
            token=settings.hf_token,
        )
    except Exception as exc:
        error = _stage_error(exc, "captioner")
        log.error("%s", error, exc_info=not isinstance(exc, RagError))
        return pipeline, str(error)
    log.info("ready: %s", pipeline.info())
    return pipeline, None


# -- presentation helpers -------------------------------------------------------------------------------


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
    return [hit_json(hit, rank) for rank, hit in enumerate(hits, 1)]


def _md(text: Any) -> str:
    """User data inside Markdown: no accidental formatting, tables or HTML."""
    text = " ".join(str(text).split())
    for char in "\\`*_{}[]<>#|":
        text = text.replace(char, "\\" + char)
    return text


def details_markdown(hit: dict[str, Any]) -> str:
    """Everything we know about one result: captions, label, metadata columns, score, source."""
    lines = [f"### Row {hit['id']} · score {hit['score']:.3f}", ""]
    lines.append(f"**Label:** {_md(hit['label']) if hit.get('label') else '—'}  ")
    lines.append(f"**Source:** {_md(hit.get('source') or '—')}  ")
    generated = " (written by the captioner at build time)" if hit.get("captions_generated") else ""
    lines += ["", f"**Captions**{generated}:"]
    lines += [f"- {_md(c)}" for c in hit.get("captions") or []] or ["- —"]
    metadata = hit.get("metadata") or {}
    if metadata:
        lines += ["", "| column | value |", "| --- | --- |"]
        lines += [f"| {_md(k)} | {_md(v) if v not in (None, '') else '—'} |" for k, v in metadata.items()]
    return "\n".join(lines)


def info_markdown(info: dict[str, Any]) -> str:
    captioner = info.get("captioner") or "none loaded"
    return (
        f"**Collection:** {_md(info['collection'])} @ `{info['revision']}` · **{info['rows']:,} images** · "
        f"**embedding:** `{info['embedding_model']}`"
        + (f" (text: `{info['text_model']}`)" if info.get("text_model") != info.get("embedding_model") else "")
        + f" · **index:** {_md(info['index'])} · **captioner:** {_md(captioner)} · device: {info['device']}"
    )


def collection_examples(pipeline: Pipeline, count: int = 4) -> list[str]:
    """A few thumbnails spread over the collection, as example inputs for the image tabs."""
    rows = len(pipeline.collection)
    ids = sorted({i * rows // count for i in range(count)}) if rows else []
    try:
        return [str(pipeline.collection.thumbnail_path(i, pipeline.cache_dir)) for i in ids]
    except Exception:  # examples are a nicety; never block start-up on them
        log.warning("could not extract example thumbnails", exc_info=True)
        return []


NO_SELECTION = "*Each result shows its cosine similarity to the query · its first caption. Select one to see all its captions, label and metadata.*"


def image_input(**kwargs: Any) -> gr.Image:
    """gr.Image(type="filepath") that hands the uploaded file's path to rag.images.load_image unopened.

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
            return str(payload.path)
        try:
            return original(payload)
        except Exception as exc:  # noqa: BLE001 - Gradio's decoders raise anything
            raise gr.Error(f"This file could not be read as an image ({type(exc).__name__}).", print_exception=False)

    image.preprocess = preprocess
    return image


def k_slider(minimum: int, maximum: int, **kwargs: Any) -> gr.Slider:
    """A slider whose value the pipeline checks (check_k), so an out-of-range k sent through the API gets the
    same message as everywhere else ("k must be between 1 and 50; got 100.") instead of Gradio's."""
    slider = gr.Slider(minimum, maximum, step=1, **kwargs)
    slider.preprocess = lambda payload: payload
    return slider


# -- the app --------------------------------------------------------------------------------------------


def build_demo(pipeline_or_error: Pipeline | BaseException | str, captioner_error: str | None = None) -> gr.Blocks:
    """The Blocks app around a loaded Pipeline, or around a start-up error (the page then says what to set)."""
    pipeline = pipeline_or_error if isinstance(pipeline_or_error, Pipeline) else None
    startup_error = None if pipeline is not None else str(pipeline_or_error)
    if pipeline is not None and pipeline.captioner is None and captioner_error is None:
        captioner_error = "No captioner is loaded in this Space. " + FIX_CAPTIONER
    example_images = collection_examples(pipeline) if pipeline is not None else []

    def guarded(fn: Callable) -> Callable:
        """InvalidInput/RagError -> gr.Error(message); anything unexpected -> a short gr.Error, logged."""

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if startup_error:
                raise gr.Error(startup_error, title="The Space is not configured", print_exception=False)
            try:
                return fn(*args, **kwargs)
            except gr.Error:
                raise
            except InvalidInput as exc:
                raise gr.Error(str(exc), title="Invalid input", print_exception=False) from None
            except RagError as exc:
                log.warning("%s failed: %s", fn.__name__, exc)
                raise gr.Error(str(exc), print_exception=False) from None
            except Exception as exc:  # never a traceback to the user
                log.exception("%s failed", fn.__name__)
                raise gr.Error(
                    f"Something went wrong on our side ({type(exc).__name__}); it has been logged. Please try again.",
                    print_exception=False,
                ) from None

        return wrapper

    # -- handlers (the API functions) --

    @guarded
    def search_text(query: str, k: float):
        """Images best matching a text query (any language the text encoder reads).

        Returns the gallery (thumbnail files, "score · caption") and a dict:
        {"query", "k", "hits": [{"rank", "id", "score", "captions", "label", "metadata", "source", ...}]}.
        """
        hits = pipeline.search_text(query, k)
        return gallery_items(hits), {"query": query, "k": int(k), "hits": hits_json(hits)}

    @guarded
    def search_image(image: str, k: float, progress=gr.Progress()):
        """Images most similar to an uploaded image. Returns the gallery and {"k", "hits": [...]}."""
        progress(0, desc="Reading the image and searching")
        hits = pipeline.search_image(image, k)
        return gallery_items(hits), {"k": int(k), "hits": hits_json(hits)}

    @guarded
    def similar_to(row_id: float, k: float):
        """ "More like this": neighbours of a collection row (itself excluded). Returns the gallery and
        {"row_id", "k", "hits": [...]}."""
        if row_id is None or row_id == "" or (isinstance(row_id, (int, float)) and row_id < 0):
            raise InvalidInput("Select an image in the results first.")
        hits = pipeline.similar_to(row_id, k)
        return gallery_items(hits), {"row_id": int(row_id), "k": int(k), "hits": hits_json(hits)}

    @guarded
    def describe(image: str, question: str, k: float, progress=gr.Progress()):
        """Describe an image with the captions of its k nearest neighbours as context (k = 0: no retrieval).

        Returns the description, the context gallery, the exact prompt/context given to the captioner and a
        dict {"text", "captioner", "seconds", "k", "question", "prompt", "context": [hits]}.
        """
        if captioner_error:
            raise RagError(captioner_error)
        progress(0, desc="Retrieving neighbours and writing the description")
        result = pipeline.describe(image, question or None, k)
        data = result.to_dict()
        data["context"] = hits_json(result.context)
        data.update(k=int(k), question=" ".join((question or "").split()) or None)
        return result.text, gallery_items(result.context), result.prompt, data

    def info() -> dict:
        """What this Space serves: collection, revision, rows, embedding model, index, captioner."""
        if startup_error:
            return {"ok": False, "error": startup_error}
        data = {"ok": True, **pipeline.info()}
        if captioner_error:
            data["captioner_error"] = captioner_error
        return data

    def select_hit(result: dict | None, evt: gr.SelectData):
        hits = (result or {}).get("hits") or []
        if evt.index is None or not 0 <= evt.index < len(hits):
            return NO_SELECTION, -1, gr.update(interactive=False)
        hit = hits[evt.index]
        return details_markdown(hit), hit["id"], gr.update(interactive=True)

    def clear_selection():
        return NO_SELECTION, -1, gr.update(interactive=False)

    # -- layout --

    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        gr.Markdown(
            f"# {TITLE}\n"
            "Search the collection by text (in any language the text encoder reads) or by image, or let the "
            "captioner describe your image using the captions of its nearest neighbours as context."
        )
        gr.Markdown(
            f"### ⚠️ The Space could not start\n\n{startup_error}" if startup_error else "",
            visible=bool(startup_error),
            elem_id="startup-error",
        )

        def results_panel(name: str, k_slider: gr.Slider, api_name: str | None):
            with gr.Row(equal_height=False):
                with gr.Column(scale=3):
                    gallery = gr.Gallery(
                        label="Results", columns=4, height="auto", object_fit="contain",
                        allow_preview=False, show_label=True, elem_id=f"{name}-gallery", format="jpeg",
                    )
                with gr.Column(scale=2):
                    details = gr.Markdown(NO_SELECTION, elem_id=f"{name}-details")
                    more = gr.Button("More like this", interactive=False, elem_id=f"{name}-more")
                    row_id = gr.Number(value=-1, visible=False, precision=0, label="row id")
            with gr.Accordion("Result as JSON (what the API returns)", open=False):
                result = gr.JSON(label="result")
            gallery.select(select_hit, [result], [details, row_id, more], api_visibility="private", queue=False)
            # The details keep showing the row whose neighbours are now in the gallery.
            more.click(
                similar_to, [row_id, k_slider], [gallery, result],
                api_name=api_name or f"{name}_similar_to", api_visibility="public" if api_name else "private",
                concurrency_id="search", concurrency_limit=SEARCH_CONCURRENCY,
            )
            return gallery, result, [details, row_id, more]

        def wire_search(trigger, fn, inputs, outputs, selection, api_name=None):
            """Clear the old selection, then search; only api_name'd triggers are public endpoints."""
            trigger(clear_selection, None, selection, api_visibility="private", queue=False).then(
                fn, inputs, outputs, api_name=api_name, api_visibility="public" if api_name else "private",
                concurrency_id="search", concurrency_limit=SEARCH_CONCURRENCY,
            )

        with gr.Tabs():
            with gr.Tab("Text → image", id="text"):
                with gr.Row():
                    query = gr.Textbox(
                        label="Query", placeholder="a dog running on the beach · anjing bermain di pantai",
                        scale=4, max_lines=3, elem_id="query",
                    )
                    k_text = k_slider(1, MAX_K, value=12, label="Number of results (k)", scale=1)
                search_button = gr.Button("Search", variant="primary", elem_id="search-text-button")
                gr.Examples([[q] for q in TEXT_EXAMPLES], [query], label="Examples (the last two are Indonesian)")
                gallery_t, result_t, selection_t = results_panel("text", k_text, "similar_to")
                # The button is the API endpoint; pressing Enter runs the same function, privately.
                wire_search(search_button.click, search_text, [query, k_text], [gallery_t, result_t], selection_t,
                            api_name="search_text")
                wire_search(query.submit, search_text, [query, k_text], [gallery_t, result_t], selection_t)

            with gr.Tab("Image → image", id="image"):
                with gr.Row():
                    image_query = image_input(
                        label="Image (upload, paste or webcam)", sources=["upload", "clipboard", "webcam"],
                        height=280, elem_id="image-query",
                    )
                    with gr.Column():
                        k_image = k_slider(1, MAX_K, value=12, label="Number of results (k)")
                        image_button = gr.Button("Search", variant="primary", elem_id="search-image-button")
                        if example_images:
                            gr.Examples([[p] for p in example_images], [image_query],
                                        label="Try an image from the collection")
                gallery_i, result_i, selection_i = results_panel("image", k_image, None)
                wire_search(image_button.click, search_image, [image_query, k_image], [gallery_i, result_i],
                            selection_i, api_name="search_image")
                wire_search(image_query.upload, search_image, [image_query, k_image], [gallery_i, result_i],
                            selection_i)

            with gr.Tab("Describe", id="describe"):
                if captioner_error and not startup_error:
                    gr.Markdown(f"⚠️ {captioner_error}", elem_id="captioner-error")
                with gr.Row(equal_height=False):
                    with gr.Column():
                        describe_image = image_input(
                            label="Image to describe", sources=["upload", "clipboard", "webcam"],
                            height=280, elem_id="describe-image",
                        )
                        question = gr.Textbox(
                            label="Question (optional)", value="", placeholder="e.g. what is the dog doing?", max_lines=2,
                        )
                        k_context = k_slider(
                            0, MAX_CONTEXT_K, value=5,
                            label="Context: neighbours given to the captioner (0 = plain captioning, no RAG)",
                        )
                        describe_button = gr.Button("Describe", variant="primary", elem_id="describe-button")
                        if example_images:
                            gr.Examples([[p] for p in example_images], [describe_image],
                                        label="Try an image from the collection (it will find itself first)")
                    with gr.Column():
                        description = gr.Textbox(
                            label="Description", lines=3, interactive=False, elem_id="description",
                            buttons=["copy"],
                        )
                        with gr.Accordion("Prompt / context given to the captioner", open=False):
                            prompt = gr.Textbox(label="prompt", lines=14, interactive=False, show_label=False,
                                                elem_id="prompt")
                context_gallery = gr.Gallery(
                    label="Context neighbours", columns=5, height=240,
                    object_fit="contain", elem_id="context-gallery", format="jpeg",
                )
                with gr.Accordion("Result as JSON (what the API returns)", open=False):
                    describe_result = gr.JSON(label="result")
                describe_button.click(
                    describe, [describe_image, question, k_context],
                    [description, context_gallery, prompt, describe_result], api_name="describe",
                    concurrency_id="describe", concurrency_limit=DESCRIBE_CONCURRENCY,
                )

        if pipeline is not None:
            footer = info_markdown(pipeline.info())
        else:
            footer = "**Collection:** not loaded (see the message at the top)."
        gr.Markdown(footer, elem_id="info-footer")
        gr.api(info, api_name="info", concurrency_limit=None, queue=False)

    demo.queue(default_concurrency_limit=SEARCH_CONCURRENCY, max_size=QUEUE_MAX_SIZE)
    demo.rag_allowed_paths = [str(Path(pipeline.cache_dir) / "thumbnails")] if pipeline is not None else []
    return demo


THEME_FONTS = ["ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "sans-serif"]
MONO_FONTS = ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"]


def launch(demo: gr.Blocks, **kwargs: Any):
    """demo.launch with this Space's settings (upload limit, thumbnail folder, local fonts); kwargs override."""
    options: dict[str, Any] = {
        "max_file_size": MAX_FILE_SIZE,
        "allowed_paths": getattr(demo, "rag_allowed_paths", []),
        # System fonts: the default theme would fetch Google Fonts on every page view.
        "theme": gr.themes.Soft(font=THEME_FONTS, font_mono=MONO_FONTS),
        "footer_links": ["api", "gradio"],
    }
    options.update(kwargs)
    return demo.launch(**options)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", help="address to listen on (default: $GRADIO_SERVER_NAME or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: $GRADIO_SERVER_PORT or 7860)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    pipeline, captioner_error = load_pipeline()
    demo = build_demo(pipeline, captioner_error=captioner_error)
    launch(demo, server_name=args.host, server_port=args.port)


if __name__ == "__main__":
    main()
