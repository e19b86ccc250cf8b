"""The library as a researcher uses it: ``import rag``, open a collection, search, describe, score; docs/library.md
run block by block; and /score, the same score as an endpoint, through gradio_client against the running app.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import numpy as np
import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from huggingface_hub import constants
from PIL import Image
from test_app import launch_app, make_client, shapes_collection
from testkit.tiny_models import make_shape_images

import rag
from rag.pipeline import MAX_SCORE_TEXTS
from ui.score_tab import score_table

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "library.md"
FENCE = re.compile(r"^```(\w*)\s*\n(.*?)^```\s*$", re.M | re.S)
SPACE = '"user/space"'  # the page's Space id, replaced by the test app's address
# Every shell line of docs/library.md, with what tests it (none is run here: they install from PyPI).
SHELL_LINES = {
    "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu":
        "network; tests/test_packaging.py checks that torch==2.13.0 is the pinned torch",
    "pip install -e .": "tests/test_packaging.py installs the package this way into a fresh venv (--no-deps)",
    'pip install -e ".[space]"': "network; tests/test_packaging.py checks [space] against requirements.txt",
    'pip install -e ".[build]"': "network; tests/test_packaging.py checks [build] against requirements-build.txt",
    'pip install -e ".[test]"': "network; tests/test_packaging.py checks [test] against requirements-dev.txt",
}
TEXTS = ["a red circle", "a blue square", "a yellow triangle"]


def fenced_blocks(lang: str) -> list[str]:
    return [body for tag, body in FENCE.findall(PAGE.read_text(encoding="utf-8")) if tag == lang]


# -- fixtures -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shapes(tiny_clip_dir, tmp_path_factory):
    """(images folder, collection folder): 96 coloured shapes with captions, built with the tiny CLIP."""
    root = tmp_path_factory.mktemp("library-shapes")
    return root / "images", shapes_collection(root / "images", root / "collection", tiny_clip_dir)


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    """A red circle that is not in the collection."""
    image, _, label = make_shape_images(1, seed=5)[0]
    assert label == "red circle"
    path = tmp_path_factory.mktemp("library-photo") / "photo.jpg"
    image.save(path)
    return path


@pytest.fixture(scope="module")
def pipe(shapes, tiny_git_dir, tmp_path_factory):
    return rag.open(shapes[1], captioner="git", captioner_model=tiny_git_dir,
                    cache_dir=tmp_path_factory.mktemp("library-cache"))


@pytest.fixture(scope="module")
def served(pipe):
    demo, url = launch_app(pipe)
    yield url
    demo.close()


@pytest.fixture(scope="module")
def client(served, tmp_path_factory):
    return make_client(served, tmp_path_factory.mktemp("library-downloads"))


def _cache_model(cache: Path, repo_id: str, folder: str) -> None:
    """Lay a folder out as huggingface_hub caches a model snapshot, so the real id loads offline."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(folder, repo / "snapshots" / ("0" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)


@pytest.fixture
def workspace(shapes, photo, tiny_clip_legacy_dir, tiny_git_dir, tmp_path, monkeypatch):
    """A notebook's folder (collections/photos, photo.jpg) and an HF cache holding the page's model ids."""
    cache = tmp_path / "hub"
    _cache_model(cache, "sentence-transformers/clip-ViT-B-32", tiny_clip_legacy_dir)
    _cache_model(cache, "microsoft/git-base-coco", tiny_git_dir)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("RAG_CACHE_DIR", str(tmp_path / "rag-cache"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    shutil.copytree(shapes[1], tmp_path / "collections" / "photos")
    shutil.copy(photo, tmp_path / "photo.jpg")
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    rag._encoder.cache_clear()  # the page's rag.score loaded the tiny CLIP under the real id


# -- the page -------------------------------------------------------------------------------------------


def test_library_page_runs_in_order(workspace, served):
    """Every python block of docs/library.md, in order, in one namespace, as a notebook runs them."""
    blocks = fenced_blocks("python")
    assert len(blocks) >= 8 and sum(SPACE in block for block in blocks) == 1
    namespace: dict = {"__name__": "__main__"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for number, block in enumerate(blocks, 1):
            try:
                exec(compile(block.replace(SPACE, repr(served)), f"docs/library.md block {number}", "exec"), namespace)
            except Exception as exc:  # name the block that broke
                raise AssertionError(f"docs/library.md python block {number} failed: {exc!r}\n{block}") from exc
    printed = out.getvalue()
    ns = namespace
    assert isinstance(ns["pipe"], rag.Pipeline) and ns["info"]["rows"] == 96 and "96 images" in printed
    assert [hit.label for hit in ns["hits"][:3]] == ["red circle"] * 3
    assert ns["similar"][0].label == "red circle" and len(ns["more"]) == 3
    assert ns["description"].text and len(ns["description"].context) == 3
    texts, scores = ns["texts"], ns["scores"]
    assert texts[int(np.argmax(scores))] == "a red circle" and len(scores) == len(texts)
    assert ns["bare"] == pytest.approx(scores, abs=1e-4)  # the same CLIP weights, loaded by id from the HF cache
    assert "Give at least one text" in printed
    assert ns["vectors"].shape == (len(texts), ns["pipe"].encoder.dim)
    assert [item["text"] for item in ns["answer"]] == ["a red circle", "a blue square"]
    assert [item["score"] for item in ns["answer"]] == pytest.approx(scores[:2], abs=1e-4)


def test_every_shell_line_of_the_page_is_accounted_for():
    lines = [line.split(" #", 1)[0].strip() for block in fenced_blocks("bash") for line in block.splitlines()]
    lines = [line for line in lines if line]
    assert sorted(lines) == sorted(SHELL_LINES), "a shell line of docs/library.md is not in SHELL_LINES, with its test"


# -- the library API -------------------------------------------------------------------------------------


def test_import_rag_is_light_and_its_names_load_on_first_use():
    code = ("import sys, rag, rag.errors; heavy = ('torch', 'faiss', 'transformers', 'gradio', 'numpy');"
            "print(sorted(m for m in heavy if m in sys.modules)); print(rag.InvalidInput.__module__)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["[]", "rag.errors"]
    for name in rag.__all__:
        assert getattr(rag, name) is not None and name in dir(rag)
    assert rag.Pipeline is __import__("rag.pipeline").pipeline.Pipeline
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        rag.nothing_here


def test_opened_collection_searches_describes_and_scores(pipe, photo):
    assert {hit.label for hit in pipe.search_text("red circle", k=4)} == {"red circle"}
    assert pipe.search_image(photo, k=1)[0].label == "red circle"
    described = pipe.describe(photo, k=2)
    assert described.text and len(described.context) == 2 and described.captioner
    scores = pipe.score(photo, TEXTS)
    assert len(scores) == 3 and all(-1 <= s <= 1 for s in scores) and int(np.argmax(scores)) == 0
    assert pipe.score(Image.open(photo), "  a   red circle ") == [scores[0]]  # one string = one text, spaces collapsed
    assert pipe.score(photo.read_bytes(), TEXTS) == scores


def test_a_score_is_the_cosine_that_search_ranks_by(pipe, shapes):
    """For an image of the collection, score(image, [query]) is the score search_text gives its row."""
    for query in ("blue square", "a photo of a yellow triangle"):
        for hit in pipe.search_text(query, k=3):
            assert pipe.score(shapes[0] / hit.source, [query])[0] == pytest.approx(hit.score, abs=1e-4)


BAD_SCORES = {
    "no texts": (lambda p: (p, []), "Give at least one text"),
    "texts not a list": (lambda p: (p, {"a": 1}), "Give at least one text"),
    "too many texts": (lambda p: (p, ["red"] * (MAX_SCORE_TEXTS + 1)), "101 texts were given; at most 100"),
    "an empty text": (lambda p: (p, ["red circle", "   "]), "Text 2 of 2 is empty"),
    "a number": (lambda p: (p, ["red circle", 7]), "Text 2 of 2 is not a string"),
    "a long text": (lambda p: (p, ["x" * 1001]), "Text 1 is 1,001 characters long; the limit is 1,000"),
    "no image": (lambda p: (None, TEXTS), "Upload an image to score"),
    "empty bytes": (lambda p: (b"", TEXTS), r"empty \(0 bytes\), not an image"),
    "not an image": (lambda p: (b"not an image at all", TEXTS), "could not be read as an image"),
}


@pytest.mark.parametrize("case", list(BAD_SCORES))
def test_bad_score_input_is_one_clear_sentence(pipe, photo, case):
    make_args, message = BAD_SCORES[case]
    with pytest.raises(rag.InvalidInput, match=message) as caught:
        pipe.score(*make_args(photo))
    assert "\n" not in str(caught.value) and str(photo.parent) not in str(caught.value)


def test_rag_score_with_a_bare_model_or_a_pipeline(pipe, photo, tiny_clip_dir):
    try:
        assert rag.score(photo, TEXTS, model=tiny_clip_dir) == pytest.approx(pipe.score(photo, TEXTS), abs=1e-5)
        assert rag.score(photo, TEXTS, model=pipe) == pipe.score(photo, TEXTS)
        assert rag._encoder.cache_info().currsize == 1  # loaded once, kept for the next call
        rag.score(photo, TEXTS[:1], model=Path(tiny_clip_dir))
        assert rag._encoder.cache_info().hits == 1
    finally:
        rag._encoder.cache_clear()
    with pytest.raises(rag.InvalidInput, match="model must be a CLIP model id or folder"):
        rag.score(photo, TEXTS, model=42)
    with pytest.raises(rag.InvalidInput, match="Give at least one text"):
        rag.score(photo, [], model="no-such/model")  # checked before any model loads
    with pytest.raises(rag.EmbeddingModelError, match="no-such/model"):
        rag.score(photo, TEXTS, model="no-such/model")


def test_open_refuses_bad_arguments_and_missing_collections(tmp_path):
    with pytest.raises(rag.InvalidInput, match="captioner must be None or one of auto, git, qwen2-vl; got 'blip'"):
        rag.open(tmp_path, captioner="blip")
    with pytest.raises(rag.InvalidInput, match="quantize must be one of auto, int8, none"):
        rag.open(tmp_path, quantize="fp8")
    with pytest.raises(rag.InvalidInput, match="collection must be"):
        rag.open(None)
    with pytest.raises(rag.CollectionError, match="'gone' is neither a local collection folder nor a Hub"):
        rag.open(tmp_path / "nested" / "gone", cache_dir=tmp_path / "cache")
    with pytest.raises(rag.CollectionError, match="nobody/nothing"):  # a Hub id: offline and not cached here
        rag.open("nobody/nothing", cache_dir=tmp_path / "cache")


# -- /score through gradio_client ------------------------------------------------------------------------


def test_score_endpoint_takes_image_and_texts_by_name(client, pipe, photo):
    endpoint = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/score"]
    parameters = {p["parameter_name"]: p for p in endpoint["parameters"]}
    assert list(parameters) == ["image", "texts"]
    assert parameters["texts"]["python_type"]["type"] == "list[str] | str"
    answer = client.predict(image=handle_file(photo), texts=TEXTS, api_name="/score")
    assert answer == [{"text": t, "score": s} for t, s in zip(TEXTS, pipe.score(photo, TEXTS))]
    assert max(answer, key=lambda item: item["score"])["text"] == "a red circle"


def test_score_endpoint_reads_the_pages_one_text_per_line(client, pipe, photo):
    """The page's textbox sends one string; each non-blank line is a text."""
    answer = client.predict(image=handle_file(photo), texts="a red circle\n\n   \n a  blue square \n", api_name="/score")
    assert [item["text"] for item in answer] == ["a red circle", "a blue square"]
    assert [item["score"] for item in answer] == pipe.score(photo, TEXTS[:2])
    table = score_table(list(reversed(answer)))
    assert table.splitlines()[2].startswith("| 1 | a red circle |") and "| 2 | a blue square |" in table


BAD_CALLS = {
    "no texts": (lambda f: {"texts": []}, "Give at least one text"),
    "only blank lines": (lambda f: {"texts": "\n  \n"}, "Give at least one text"),
    "too many texts": (lambda f: {"texts": ["red"] * 101}, "101 texts were given; at most 100"),
    "an empty text": (lambda f: {"texts": ["red circle", ""]}, "Text 2 of 2 is empty"),
    "not an image": (lambda f: {"image": handle_file(f["text"])}, "could not be read as an image"),
    "empty file": (lambda f: {"image": handle_file(f["empty"])}, "is empty (0 bytes), not an image"),
    "no image": (lambda f: {"image": None}, "Upload an image to score"),
}


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("library-bad")
    (folder / "notes.png").write_text("this is text, not an image")
    (folder / "empty.jpg").write_bytes(b"")
    return {"text": folder / "notes.png", "empty": folder / "empty.jpg"}


@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_bad_score_calls_get_one_sentence_and_the_app_keeps_serving(client, photo, bad_files, case):
    make_arguments, message = BAD_CALLS[case]
    arguments = {"image": handle_file(photo), "texts": TEXTS, **make_arguments(bad_files)}
    with pytest.raises(AppError) as caught:
        client.predict(**arguments, api_name="/score")
    assert message in str(caught.value) and "Traceback" not in str(caught.value), str(caught.value)
    assert len(client.predict(image=handle_file(photo), texts=TEXTS[:1], api_name="/score")) == 1


def test_score_is_an_mcp_tool_whose_texts_are_a_list_of_strings(served):
    import httpx

    tools = {tool["name"]: tool for tool in httpx.get(served.rstrip("/") + "/gradio_api/mcp/schema", timeout=30).json()}
    score = next(tool for name, tool in tools.items() if name.endswith("score"))
    texts = score["inputSchema"]["properties"]["texts"]
    assert {"type": "array", "items": {"type": "string"}} in texts["anyOf"], texts
    assert "CLIP cosine similarity" in score["description"]
