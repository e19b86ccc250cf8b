"""The Space end to end: app.py served on localhost around tiny models, driven by the real gradio_client.

What a user would notice: results that match the query, JSON aligned with the gallery, describe with and
without retrieved context, clean error messages for every kind of bad input (and the app still serving),
a burst of concurrent users, the Qwen2-VL path, and a page that still opens when nothing can be loaded.
"""

from __future__ import annotations

import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # the server and gradio_client would otherwise phone home
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import functools
import io
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image
from testkit.shapes import COLOURS, RGB, build_shapes, write_shape_folder
from testkit.tiny_models import make_shape_images

import app
from ui import components as ui_components
from ui import context as ui_context
from rag.ingest import default_collection
from rag.config import Settings
from rag.errors import CollectionError
from rag.pipeline import Pipeline
from rag.search.batching import MAX_BATCH
from rag.startup import open_pipeline

LABELS = [f"{c} {s}" for c in COLOURS for s in ("circle", "square", "triangle")]


# -- helpers shared with test_browser.py ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_app(pipeline_or_error, captioner_error: str | None = None):
    """Build the Space around a pipeline (or a start-up error) and serve it on a free localhost port."""
    demo = app.build_demo(pipeline_or_error, captioner_error=captioner_error)
    _, url, _ = app.launch(demo, server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    return demo, url


def make_client(url: str, download_dir: Path) -> Client:
    return Client(url, verbose=False, download_files=str(download_dir), analytics_enabled=False)


def shapes_collection(folder: Path, out: Path, clip_dir: str, n: int = 96) -> Path:
    write_shape_folder(folder, n=n)
    return build_shapes(folder, out, clip_dir)


def dominant_colour(path: str) -> str:
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64).reshape(-1, 3)
    saturated = pixels[(pixels.max(axis=1) - pixels.min(axis=1)) > 80]
    return min(COLOURS, key=lambda c: np.linalg.norm(saturated.mean(axis=0) - np.array(RGB[c])))


# -- fixtures -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shapes(tiny_clip_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("app-shapes")
    out = shapes_collection(root / "images", root / "collection", tiny_clip_dir)
    return root / "images", out


@pytest.fixture(scope="module")
def pipeline(shapes, tiny_git_dir, tmp_path_factory):
    settings = Settings(captioner="git", captioner_model=tiny_git_dir, cache_dir=tmp_path_factory.mktemp("app-cache"))
    return open_pipeline(settings, collection_dir=shapes[1])


@pytest.fixture(scope="module")
def served(pipeline):
    demo, url = launch_app(pipeline)
    yield url
    demo.close()


@pytest.fixture(scope="module")
def client(served, tmp_path_factory):
    return make_client(served, tmp_path_factory.mktemp("client-downloads"))


@pytest.fixture(scope="module")
def files(tmp_path_factory, shapes):
    """Good and bad uploads."""
    folder = tmp_path_factory.mktemp("uploads")
    paths = {"good": shapes[0] / "set_a" / "img_001.jpg"}
    (folder / "notes.png").write_text("this is text, not an image")
    paths["not_image"] = folder / "notes.png"
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buffer, format="JPEG")
    (folder / "truncated.jpg").write_bytes(buffer.getvalue()[:200])
    paths["truncated"] = folder / "truncated.jpg"
    (folder / "empty.jpg").write_bytes(b"")
    paths["empty"] = folder / "empty.jpg"
    Image.new("RGB", (1, 1), (215, 35, 35)).save(folder / "pixel.png")
    paths["pixel"] = folder / "pixel.png"
    Image.new("1", (12_000, 12_000)).save(folder / "huge.png")  # 144 Mpx, a few KB on disk
    paths["huge"] = folder / "huge.png"
    (folder / "big.jpg").write_bytes(os.urandom(21 * 1024 * 1024))  # over the 20 MB upload limit
    paths["too_big"] = folder / "big.jpg"
    return paths


# -- results a user sees --------------------------------------------------------------------------------


def test_text_search_finds_matching_shapes_with_aligned_gallery_and_json(client, shapes):
    precisions = []
    for label in LABELS:
        gallery, result = client.predict(label, 5, api_name="/search_text")
        hits = result["hits"]
        assert result["query"] == label and result["k"] == 5
        assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
        assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
        assert len(gallery) == len(hits) == 5
        for item, hit in zip(gallery, hits):
            # the gallery image, its caption and the JSON row all describe the same collection row
            assert item["caption"] == f"{hit['score']:.3f} · {hit['captions'][0]}"
            assert dominant_colour(item["image"]) == hit["label"].split()[0]
            assert hit["metadata"]["photographer"] in ("p0", "p1", "p2")
            assert hit["source"].startswith(("set_a/", "set_b/")) and "thumbnail" not in hit
        assert hits[0]["label"].split()[0] == label.split()[0], (label, hits[0])  # right colour first
        precisions.append(np.mean([h["label"] == label for h in hits]))
    assert np.mean(precisions) >= 0.5, precisions


def test_red_circle_query_returns_red_circles_first(client):
    _, result = client.predict("red circle", 10, api_name="/search_text")
    labels = [h["label"] for h in result["hits"]]
    assert all(label.startswith("red") for label in labels[:3]), labels
    assert "red circle" in labels[:5], labels


def test_emoji_and_right_to_left_queries_work(client):
    for query in ("red circle 🔴😀", "دائرة حمراء", "עיגול אדום red", "👍"):
        gallery, result = client.predict(query, 4, api_name="/search_text")
        assert len(gallery) == len(result["hits"]) == 4 and result["query"] == query


def test_queries_that_look_like_image_urls_or_paths_are_searched_as_text(client, files):
    # a multimodal encoder would otherwise try to download/open them as images
    for query in ("https://example.com/red_circle.jpg", str(files["good"]), "data:image/png;base64,AAAA"):
        gallery, result = client.predict(query, 3, api_name="/search_text")
        assert len(gallery) == len(result["hits"]) == 3


def test_image_search_finds_the_image_itself_then_more_like_this(client, files):
    gallery, result = client.predict(handle_file(files["good"]), 4, api_name="/search_image")
    top = result["hits"][0]
    assert top["source"] == "set_a/img_001.jpg" and top["score"] > 0.99
    assert len(gallery) == 4 and result["k"] == 4
    gallery, similar = client.predict(top["id"], 6, api_name="/similar_to")
    ids = [h["id"] for h in similar["hits"]]
    assert similar["row_id"] == top["id"] and top["id"] not in ids and len(ids) == len(gallery) == 6
    colour = top["label"].split()[0]
    assert sum(h["label"].startswith(colour) for h in similar["hits"]) >= 4, similar["hits"]


def test_one_pixel_image_is_searchable(client, files):
    gallery, result = client.predict(handle_file(files["pixel"]), 3, api_name="/search_image")
    assert len(gallery) == 3 and result["hits"][0]["label"].startswith("red")


def test_describe_without_context_is_plain_captioning(client, files):
    text, context, prompt, result = client.predict(handle_file(files["good"]), "", 0, api_name="/describe")
    assert text and text == result["text"]
    assert context == [] and result["context"] == [] and result["k"] == 0
    assert "no retrieved context" in prompt and prompt == result["prompt"]
    assert result["captioner"].startswith("git (")


def test_describe_with_context_shows_neighbours_in_prompt(client, files):
    text, context, prompt, result = client.predict(handle_file(files["good"]), "", 5, api_name="/describe")
    assert len(context) == len(result["context"]) == 5
    assert text == result["text"] and any(shape in text for shape in ("circle", "square", "triangle"))
    for item, hit in zip(context, result["context"]):
        assert item["caption"] == f"{hit['score']:.3f} · {hit['captions'][0]}"
        assert hit["captions"][0] in prompt  # the captioner was given exactly these captions
    assert "retrieved neighbours" in prompt and result["context"][0]["source"] == "set_a/img_001.jpg"
    # a question is accepted and echoed back
    _, _, _, asked = client.predict(handle_file(files["good"]), "  what colour  ", 2, api_name="/describe")
    assert asked["question"] == "what colour" and len(asked["context"]) == 2


def test_info_endpoint_describes_the_collection(client, pipeline, tiny_clip_dir, tiny_git_dir):
    info = client.predict(api_name="/info")
    assert info["ok"] is True and info["rows"] == 96 and info["embedding_model"] == tiny_clip_dir
    assert "Flat" in info["index"] and info["captioner"] == f"git ({tiny_git_dir})"
    assert info["columns"] == ["photographer"] and info["collection"] == pipeline.name


def test_page_opens_with_tabs_and_footer(served, pipeline):
    page = httpx.get(served, timeout=30)
    assert page.status_code == 200 and app.TITLE in page.text
    config = httpx.get(served.rstrip("/") + "/config", timeout=30).json()
    texts = " ".join(str(c.get("props", {}).get("value", "")) + str(c.get("props", {}).get("label", ""))
                     for c in config["components"])
    for expected in ("Text → image", "Image → image", "Describe", "96 images", "More like this"):
        assert expected in texts, expected
    names = {d.get("api_name") for d in config["dependencies"] if d.get("api_visibility", "public") == "public"}
    assert {"search_text", "search_image", "similar_to", "describe", "info"} <= names


def test_searches_share_a_concurrency_limit_and_describe_runs_alone(served, pipeline):
    demo = app.build_demo(pipeline)
    limits = {fn.api_name: (fn.concurrency_id, fn.concurrency_limit) for fn in demo.fns.values()}
    for name in ("search_image", "similar_to"):
        assert limits[name] == ("search", ui_context.SEARCH_CONCURRENCY), limits[name]
    assert limits["search_text"] == ("search_text", MAX_BATCH)  # a burst of texts is batched (rag.search.batching)
    assert limits["describe"] == ("describe", ui_context.DESCRIBE_CONCURRENCY)


def test_details_panel_shows_every_field():
    hit = {"id": 7, "score": 0.8123, "captions": ["a red circle", "picture *7*"], "label": "red circle",
           "metadata": {"photographer": "p1", "place": None}, "source": "set_a/img_007.jpg"}
    text = ui_components.details_markdown(hit)
    for fragment in ("Row 7", "0.812", "a red circle", "picture \\*7\\*", "red circle", "photographer", "p1",
                     "place", "set\\_a/img\\_007.jpg"):
        assert fragment in text, fragment


# -- bad input: a clear message through the client, and the app keeps serving ---------------------------

BAD_CALLS = {
    "empty query": (lambda f: ("   ", 5), "/search_text", "Type a text query: it is empty"),
    "100k query": (lambda f: ("x" * 100_000, 5), "/search_text", "100,000 characters long; the limit is 1,000"),
    "k too small": (lambda f: ("red circle", 0), "/search_text", "k must be between 1 and 50; got 0"),
    "k too large": (lambda f: ("red circle", 51), "/search_text", "k must be between 1 and 50; got 51"),
    "k fractional": (lambda f: ("red circle", 2.5), "/search_text", "k must be a whole number between 1 and 50"),
    "not an image": (lambda f: (handle_file(f["not_image"]), 5), "/search_image", "could not be read as an image"),
    "truncated jpeg": (lambda f: (handle_file(f["truncated"]), 5), "/search_image", "could not be read as an image"),
    "empty file": (lambda f: (handle_file(f["empty"]), 5), "/search_image", "is empty (0 bytes), not an image"),
    "huge image": (lambda f: (handle_file(f["huge"]), 5), "/search_image", "too large"),
    "no image": (lambda f: (None, 5), "/search_image", "Upload an image first"),
    "image k too large": (lambda f: (handle_file(f["good"]), 500), "/search_image", "between 1 and 50; got 500"),
    "describe not an image": (lambda f: (handle_file(f["not_image"]), "", 3), "/describe", "could not be read"),
    "describe truncated": (lambda f: (handle_file(f["truncated"]), "", 3), "/describe", "could not be read"),
    "describe huge": (lambda f: (handle_file(f["huge"]), "", 3), "/describe", "too large"),
    "describe no image": (lambda f: (None, "", 3), "/describe", "Upload an image to describe"),
    "context k too large": (lambda f: (handle_file(f["good"]), "", 21), "/describe",
                            "context size k must be between 0 and 20; got 21"),
    "context k negative": (lambda f: (handle_file(f["good"]), "", -1), "/describe", "between 0 and 20; got -1"),
    "long question": (lambda f: (handle_file(f["good"]), "why " * 200, 3), "/describe", "the limit is 500"),
    "more like this, no row": (lambda f: (-1, 5), "/similar_to", "Select an image in the results first"),
    "more like this, bad row": (lambda f: (10_000, 5), "/similar_to", "row id must be between 0 and 95"),
}


@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_bad_input_gives_a_clear_error_and_the_app_keeps_serving(client, files, case):
    make_args, endpoint, message = BAD_CALLS[case]
    with pytest.raises(AppError) as caught:
        client.predict(*make_args(files), api_name=endpoint)
    assert message in str(caught.value), str(caught.value)
    assert "Traceback" not in str(caught.value)
    _, result = client.predict("blue square", 2, api_name="/search_text")  # still serving
    assert len(result["hits"]) == 2


def test_upload_over_the_size_limit_is_refused(client, files):
    # The page's upload cap is RAG_BUILD_MAX_MB (Build-tab archives); an image over 20 MB is refused by its input.
    with pytest.raises((ValueError, AppError), match="exceeds the maximum file size|images up to 20 MB"):
        client.predict(handle_file(files["too_big"]), 5, api_name="/search_image")
    assert client.predict(api_name="/info")["ok"]


def test_burst_of_concurrent_calls_all_succeed(client, files):
    jobs = []
    for i in range(12):
        if i % 4 == 3:
            jobs.append(("describe", client.submit(handle_file(files["good"]), "", 3, api_name="/describe")))
        elif i % 4 == 2:
            jobs.append(("image", client.submit(handle_file(files["good"]), 5, api_name="/search_image")))
        else:
            label = LABELS[i % len(LABELS)]
            jobs.append((label, client.submit(label, 5, api_name="/search_text")))
    for kind, job in jobs:
        outputs = job.result(timeout=120)
        if kind == "describe":
            assert outputs[0] and len(outputs[3]["context"]) == 3
        elif kind == "image":
            assert outputs[1]["hits"][0]["source"] == "set_a/img_001.jpg"
        else:
            assert outputs[1]["query"] == kind and len(outputs[1]["hits"]) == 5


def test_separate_clients_in_threads(served, tmp_path):
    def one(i: int):
        c = make_client(served, tmp_path / f"c{i}")
        return c.predict(LABELS[i], 3, api_name="/search_text")[1]["query"]

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(one, range(4))) == LABELS[:4]


# -- Qwen2-VL path ---------------------------------------------------------------------------------------


def test_qwen2vl_describe_gets_the_context_in_its_prompt(pipeline, tiny_qwen2vl_dir, files, tmp_path, monkeypatch):
    from rag.models.captioner import Qwen2VLCaptioner

    qwen = Pipeline(collection=pipeline.collection, encoder=pipeline.encoder, cache_dir=pipeline.cache_dir,
                    captioner=Qwen2VLCaptioner(tiny_qwen2vl_dir, device="cpu"), name="shapes (qwen)")
    demo, url = launch_app(qwen)
    try:
        c = make_client(url, tmp_path)
        text, context, prompt, result = c.predict(handle_file(files["good"]), "", 4, api_name="/describe")
        assert isinstance(text, str) and result["captioner"] == f"qwen2-vl ({Path(tiny_qwen2vl_dir).name})"  # no server path
        assert len(context) == len(result["context"]) == 4
        assert prompt.startswith("[system]") and "Images in the collection that look similar" in prompt
        for hit in result["context"]:
            assert hit["captions"][0] in prompt
        _, none, plain, _ = c.predict(handle_file(files["good"]), "", 0, api_name="/describe")
        assert none == [] and "look similar" not in plain
        assert c.predict(api_name="/info")["captioner"].startswith("qwen2-vl")
    finally:
        demo.close()


# -- start-up problems: the page still opens and says what to set ----------------------------------------


def test_missing_collection_page_opens_and_explains(tmp_path):
    error, captioner_error = app.load_pipeline(Settings(collection=str(tmp_path / "nowhere"), cache_dir=tmp_path))
    assert isinstance(error, app.StartupError) and captioner_error is None
    assert "RAG_COLLECTION" in str(error) and "nowhere" in str(error)
    demo, url = launch_app(error)
    try:
        page = httpx.get(url, timeout=30)
        assert page.status_code == 200
        config = httpx.get(url.rstrip("/") + "/config", timeout=30).json()
        banner = next(c for c in config["components"] if c.get("props", {}).get("elem_id") == "startup-error")
        assert banner["props"]["visible"] is True and "RAG_COLLECTION" in banner["props"]["value"]
        c = make_client(url, tmp_path)
        for args, endpoint in ((("red circle", 5), "/search_text"), ((None, 5), "/search_image"),
                               ((None, "", 3), "/describe")):
            with pytest.raises(AppError, match="RAG_COLLECTION"):
                c.predict(*args, api_name=endpoint)
        info = c.predict(api_name="/info")
        assert info["ok"] is False and "RAG_COLLECTION" in info["error"]
    finally:
        demo.close()


def test_any_collection_error_becomes_the_page_message(tmp_path):
    demo, url = launch_app(CollectionError("The collection is missing index.faiss (listed in manifest.json)."))
    try:
        with pytest.raises(AppError, match="missing index.faiss"):
            make_client(url, tmp_path).predict("red circle", 5, api_name="/search_text")
    finally:
        demo.close()


def test_broken_captioner_keeps_search_and_explains_describe(shapes, tmp_path, files):
    pipeline, captioner_error = app.load_pipeline(
        Settings(collection=str(shapes[1]), captioner="git", captioner_model=str(tmp_path / "no-model"),
                 cache_dir=tmp_path)
    )
    assert isinstance(pipeline, Pipeline) and "RAG_CAPTIONER" in captioner_error
    demo, url = launch_app(pipeline, captioner_error)
    try:
        c = make_client(url, tmp_path / "dl")
        assert len(c.predict("red circle", 3, api_name="/search_text")[1]["hits"]) == 3
        with pytest.raises(AppError, match="RAG_CAPTIONER_MODEL"):
            c.predict(handle_file(files["good"]), "", 3, api_name="/describe")
        assert "RAG_CAPTIONER" in c.predict(api_name="/info")["captioner_error"]
    finally:
        demo.close()


def test_python_app_py_opens_the_page_when_nothing_can_be_loaded(tmp_path):
    """`python app.py` offline with RAG_COLLECTION unset: the default collection cannot be downloaded, yet the
    page opens on GRADIO_SERVER_NAME/GRADIO_SERVER_PORT and explains what to set."""
    import subprocess
    import sys
    import threading

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", RAG_CACHE_DIR=str(tmp_path),
               HF_HOME=str(tmp_path / "hf"), GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port),
               GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1")
    root = Path(__file__).resolve().parents[1]
    process = subprocess.Popen([sys.executable, "app.py"], cwd=root, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    log, listening = [], threading.Event()

    def read_log() -> None:  # Gradio prints "Running on local URL" once its server accepts connections
        for line in process.stdout:
            log.append(line)
            if "Running on" in line:
                listening.set()
        listening.set()  # the process ended: stop waiting (the assertion below says so)

    threading.Thread(target=read_log, daemon=True).start()
    try:
        assert listening.wait(120) and process.poll() is None, "".join(log)[-3000:]
        config = httpx.get(f"http://127.0.0.1:{port}/config", timeout=30).json()
        banner = next(c for c in config["components"] if c.get("props", {}).get("elem_id") == "startup-error")
        message = banner["props"]["value"]
        assert banner["props"]["visible"] and "royokong/flickr30k_test" in message and "RAG_COLLECTION" in message
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_bad_captioner_variable_is_reported(monkeypatch):
    monkeypatch.setenv("RAG_CAPTIONER", "blip")
    error, _ = app.load_pipeline()
    assert "RAG_CAPTIONER must be one of" in str(error)


# -- the default collection (RAG_COLLECTION unset) -------------------------------------------------------


@pytest.fixture(scope="module")
def shapes_parquet(tmp_path_factory):
    """A small `datasets` parquet file shaped like royokong/flickr30k_test (image + caption list)."""
    import datasets

    images, captions = [], []
    for image, caption, label in make_shape_images(24, seed=3):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        images.append({"bytes": buffer.getvalue(), "path": None})
        captions.append([caption, f"a picture of a {label}"])
    ds = datasets.Dataset.from_dict({"image": images, "caption": captions},
                                    features=datasets.Features({"image": datasets.Image(),
                                                                "caption": datasets.Sequence(datasets.Value("string"))}))
    path = tmp_path_factory.mktemp("flickr-like") / "test.parquet"
    ds.to_parquet(str(path))
    return str(path)


def test_default_collection_is_built_once_then_reused(shapes_parquet, tiny_clip_dir, tiny_git_dir, tmp_path,
                                                      monkeypatch):
    settings = Settings(collection=None, captioner="git", captioner_model=tiny_git_dir, cache_dir=tmp_path)
    build = functools.partial(default_collection.ensure_default_collection, dataset=shapes_parquet, split="train",
                              limit=20, model=tiny_clip_dir)
    monkeypatch.setattr(default_collection, "ensure_default_collection", build)
    pipeline, captioner_error = app.load_pipeline(settings)
    assert captioner_error is None and isinstance(pipeline, Pipeline)
    assert len(pipeline.collection) == 20 and pipeline.collection.directory == tmp_path / "default-collection"
    assert pipeline.info()["collection"].startswith("royokong/flickr30k_test")
    assert pipeline.search_text("a green square", 3)[0].captions  # flickr-style caption lists arrive as captions

    def must_not_build(*args, **kwargs):
        raise AssertionError("the default collection was built again")

    monkeypatch.setattr(default_collection, "build_collection", must_not_build)
    again = build(settings)
    assert again == tmp_path / "default-collection"


def test_default_collection_that_cannot_be_built_asks_for_rag_collection(tmp_path, monkeypatch, tiny_clip_dir):
    build = functools.partial(default_collection.ensure_default_collection, dataset=str(tmp_path / "none.parquet"),
                              model=tiny_clip_dir)
    monkeypatch.setattr(default_collection, "ensure_default_collection", build)
    error, _ = app.load_pipeline(Settings(collection=None, cache_dir=tmp_path))
    assert isinstance(error, app.StartupError)
    assert "default collection" in str(error) and "RAG_COLLECTION" in str(error)
    assert not (tmp_path / "default-collection").exists()
