"""The page tells the truth (issue 23, items 2, 10, 11, 12), in headless Chromium with the GIT captioner: examples
from the collection the session searches, a question box that says GIT cannot take questions, a Describe panel
that names its neighbours and the winning candidate, errors in words where the result would be (cleared by the
next success), and details that follow "More like this".

Each test waits on what a visitor would see (a message, a thumbnail, an enabled button), never on a clock.
"""

from __future__ import annotations

import os
import re

import pytest
from test_app import launch_app
from test_browser import CHROMIUM, LOCAL  # noqa: F401 - same browser set-up
from test_browser import browser  # noqa: F401 - fixture
from test_browser import DESKTOP, open_page
from testkit.shapes import build_shapes, write_shape_folder

from rag.config import Settings
from rag.startup import open_pipeline
from ui.describe_view import GIT_QUESTION



def in_chromium(test):
    """Mark a test as a browser test, skipped (by CI's rules) where Chromium is missing."""
    missing = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is missing: apt-get install -y chromium")
    return pytest.mark.browser(missing(test))


@pytest.fixture(scope="module")
def shapes(tiny_clip_dir, tiny_git_dir, tmp_path_factory):
    """24 shape images and a pipeline over them with the tiny GIT captioner."""
    root = tmp_path_factory.mktemp("page-describe")
    images = write_shape_folder(root / "images", n=24)
    collection = build_shapes(images, root / "collection", tiny_clip_dir)
    settings = Settings(captioner="git", captioner_model=tiny_git_dir, cache_dir=root / "cache")
    return images, open_pipeline(settings, collection_dir=collection)


@pytest.fixture(scope="module")
def served(shapes):
    images, pipeline = shapes
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAG_CONTEXT_COLUMNS", "photographer")  # the captioner's context brings this column along
        demo, url = launch_app(pipeline)
    yield url, images
    demo.close()


@pytest.fixture(scope="module")
def uploads(tmp_path_factory):
    folder = tmp_path_factory.mktemp("not-images")
    (folder / "notes.png").write_text("this is text, not an image")  # a text file renamed .png
    (folder / "notes.txt").write_text("this is text, not an image")
    return folder


def image_sources(page, selector: str) -> list[str]:
    """The src of every image in an element (example thumbnails: Gradio names each cached file by its content)."""
    return page.evaluate(f"() => [...document.querySelectorAll('{selector} img')].map(img => img.src)")



@in_chromium
def test_describe_with_git_explains_the_question_box_and_names_neighbours_and_winner(browser, served):  # noqa: F811
    url, images = served
    context, page = open_page(browser, url)
    page.get_by_role("tab", name="Describe").click()
    assert page.locator("#describe-question textarea").is_disabled()  # GIT cannot take a question...
    assert page.get_by_text(GIT_QUESTION).is_visible()  # ...and the page says so
    page.locator("#describe-image input[type=file]").set_input_files(str(images / "set_a" / "img_001.jpg"))
    page.locator("#describe-button").click()
    explained = page.locator("#describe-explained")
    explained.get_by_text("Chosen:").wait_for()
    text = explained.inner_text()
    rows = re.findall(r"Row (\d+) · ", text)
    assert len(rows) == 5 and re.search(r"Row \d+ · 1\.00 alike", text)  # five neighbours, the image itself first
    assert re.search(r"photographer: p[0-2]", text)  # RAG_CONTEXT_COLUMNS reached the context
    description = page.locator("#description textarea").input_value()
    assert f"Chosen: “{description}”" in text and "Why:" in text
    assert len(page.locator("#context-gallery img").all()) == 5
    context.close()


@in_chromium
def test_a_non_image_upload_is_named_in_words_where_the_results_would_be(browser, served, uploads):  # noqa: F811
    url, images = served
    context, page = open_page(browser, url)
    page.get_by_role("tab", name="Image → image").click()
    page.locator("#image-query input[type=file]").set_input_files(str(uploads / "notes.png"))
    status = page.locator("#image-status")
    status.get_by_text("That file is not an image (notes.png could not be read as an image").wait_for()
    body = page.evaluate("() => document.body.innerText")
    assert "UnidentifiedImageError" not in body and "Error" not in body  # no class name, no red badge or pop-up
    assert page.locator("#image-query img").count() == 0  # the broken preview is gone
    page.locator("#image-query input[type=file]").set_input_files(str(images / "set_a" / "img_001.jpg"))
    status.get_by_text(re.compile(r"^12 results")).wait_for()  # the next success replaces the message
    assert "not an image" not in status.inner_text()
    page.locator("#image-query input[type=file]").set_input_files(str(uploads / "notes.txt"))
    page.get_by_text("Invalid file type: notes.txt").wait_for()  # refused in the browser, in words
    page.get_by_role("tab", name="Describe").click()
    page.locator("#describe-image input[type=file]").set_input_files(str(uploads / "notes.png"))
    page.locator("#describe-button").click()
    page.locator("#describe-status").get_by_text("That file is not an image").wait_for()
    context.close()


@in_chromium
def test_a_text_search_error_shows_in_place_and_clears_on_success(browser, served):  # noqa: F811
    context, page = open_page(browser, served[0])
    page.locator("#search-text-button").click()  # nothing typed
    status = page.locator("#text-status")
    status.get_by_text("Type a text query: it is empty.").wait_for()
    assert "Error" not in page.evaluate("() => document.body.innerText")
    page.locator("#query textarea").fill("red circle")
    page.locator("#search-text-button").click()
    status.get_by_text(re.compile(r"^12 results for")).wait_for()
    assert "empty" not in status.inner_text()
    context.close()


@in_chromium
def test_details_follow_more_like_this(browser, served):  # noqa: F811
    context, page = open_page(browser, served[0])
    page.locator("#query textarea").fill("red circle")
    page.locator("#search-text-button").click()
    page.locator("#text-gallery img").nth(3).wait_for()
    page.locator("#text-gallery .thumbnail-item").nth(2).click()
    details = page.locator("#text-details")
    source = re.search(r"Row (\d+)", details.get_by_text(re.compile(r"^Row \d+")).inner_text()).group(1)
    page.locator("#text-more").click()
    details.get_by_text(f"Images like row {source}").wait_for()  # not the source row's details any more
    page.locator("#text-status").get_by_text(f"like row {source}").wait_for()
    assert page.locator("#text-gallery .thumbnail-item.selected").count() == 0  # nothing highlighted
    assert page.locator("#text-more").is_disabled()
    page.locator("#text-gallery .thumbnail-item").nth(1).click()  # a new selection shows its own row
    details.get_by_text(re.compile(r"^Row \d+")).wait_for()
    assert f"Row {source} " not in details.inner_text()  # the source itself is excluded from its neighbours
    page.locator("#query textarea").fill("blue square")  # a new search: no thumbnail stays highlighted
    page.locator("#search-text-button").click()
    page.locator("#text-status").get_by_text("for “blue square”").wait_for()
    assert page.locator("#text-gallery .thumbnail-item.selected").count() == 0
    assert details.inner_text().startswith("Each result shows")
    context.close()


@in_chromium
def test_an_own_collection_brings_its_own_examples_and_they_run(browser, served, tmp_path):  # noqa: F811
    from test_build_tab import shapes_archive

    context, page = open_page(browser, served[0])
    examples = page.locator("#text-examples")
    first_item = examples.locator(".gallery-item").first
    first_item.get_by_text(re.compile(r"(circle|square|triangle)$")).wait_for()  # the session's examples are drawn
    space_first = first_item.inner_text().strip()  # one of the Space's labels
    space_pictures = image_sources(page, "#image-examples")
    page.get_by_role("tab", name="Build your own").click()
    page.locator("#build-archive input[type=file]").set_input_files(str(shapes_archive(tmp_path / "mine.zip", n=9)))
    page.get_by_text("mine.zip").first.wait_for()
    page.locator("#build-button").click()
    page.locator("#collection-indicator").get_by_text("your collection (9 images").wait_for()
    page.get_by_role("tab", name="Text → image").click()
    mine = examples.get_by_text(re.compile(r"^mine: ")).first  # captions of the collection just built
    mine.wait_for()
    wanted = mine.inner_text().strip()
    mine.click()
    page.locator("#text-status").get_by_text(re.compile(r"^9 results for")).wait_for()  # it ran, on 9 images
    assert page.locator("#query textarea").input_value() == wanted
    page.get_by_role("tab", name="Image → image").click()
    page.locator("#image-examples img").first.wait_for()
    mine_pictures = image_sources(page, "#image-examples")
    assert mine_pictures and not set(mine_pictures) & set(space_pictures)  # thumbnails of the session's own images
    page.locator("#image-examples img").first.click()
    page.locator("#image-status").get_by_text(re.compile(r"Best: mine: ")).wait_for()
    page.get_by_role("tab", name="Describe").click()
    assert image_sources(page, "#describe-examples") == mine_pictures
    page.locator("#use-space-collection input[type=checkbox]").check()  # back to the Space's: its examples too
    page.get_by_role("tab", name="Text → image").click()
    examples.get_by_text(space_first, exact=True).wait_for()
    assert examples.get_by_text(re.compile(r"^mine: ")).count() == 0
    context.close()


# -- without a browser: the context columns, the readable account, errors in words ------------------------------


def test_describe_gives_the_captioner_the_configured_metadata_columns(shapes):
    images, pipeline = shapes
    result = pipeline.describe(images / "set_a" / "img_001.jpg", None, 3, columns=["photographer", "no_such_column"])
    assert result.context_columns == ["photographer"]  # the columns this collection has
    for hit in result.context:  # each neighbour's value is in the context the captioner was given
        assert f"photographer: {hit.metadata['photographer']}" in result.prompt
    plain = pipeline.describe(images / "set_a" / "img_001.jpg", None, 3)
    assert "photographer:" not in plain.prompt and plain.context_columns == []
    assert result.candidates[0].text == result.text  # GIT's winner comes first, with where it came from
    rows = {hit.id for hit in result.context}
    assert all(c.row in rows for c in result.candidates if c.source == "neighbour")


def test_qwen_prompt_carries_the_configured_columns():
    from rag.models.qwen2vl import qwen_user_text
    from rag.pipeline import Hit

    hit = Hit(id=4, score=0.9, captions=["a batik cloth"], label="kawung", metadata={"region": "Yogyakarta", "year": None},
              thumbnail="")
    text = qwen_user_text([hit], "where is it from?", columns=["region", "year", "missing"])
    assert "region: Yogyakarta" in text and "year:" not in text and "missing" not in text
    assert "region:" not in qwen_user_text([hit], None)  # no columns configured: captions and label only


def test_the_account_names_neighbours_and_why_the_winner_won():
    from ui.describe_view import explanation

    result = {
        "captioner": "git (/srv/models/git-base)", "question": "what colour?", "context_columns": ["photographer"],
        "context": [{"id": 7, "score": 0.93, "label": "red circle", "captions": ["a red circle"],
                     "metadata": {"photographer": "Ann"}}],
        "candidates": [
            {"text": "a red circle", "source": "neighbour", "row": 7, "image_match": 0.31, "agreement": 0.8, "score": 0.71},
            {"text": "a circle", "source": "captioner", "row": None, "image_match": 0.3, "agreement": 0.6, "score": 0.6},
        ],
    }
    text = explanation(result)
    assert "**Row 7** · 0.93 alike · label red circle · photographer: Ann · “a red circle”" in text
    assert "**Chosen:** “a red circle”, a caption of neighbour row 7." in text
    assert "matches your image (0.31" in text and "(0.40)" in text and "(0.71) won" in text
    assert "Questions need the Qwen2-VL captioner" in text  # GIT was asked a question it cannot take
    assert "/srv/" not in text  # no server path


def test_an_unreadable_file_is_named_in_words_and_its_message_waits_for_its_session(tmp_path):
    from types import SimpleNamespace

    from rag.errors import InvalidInput
    from rag.images.decode import load_image
    from ui.errors import ErrorBoard, guarded

    (tmp_path / "notes.png").write_text("not an image")
    board = ErrorBoard()

    def search_image(image, request=None):
        return load_image(image)

    handler = guarded(search_image, None, board)
    with pytest.raises(Exception) as raised:
        handler(str(tmp_path / "notes.png"), SimpleNamespace(session_hash="abc"))
    message = raised.value.message
    assert message.startswith("That file is not an image (notes.png could not be read as an image")
    assert "Error" not in message and not raised.value.visible  # no class name; no pop-up, the tab shows it
    assert board.take(SimpleNamespace(session_hash="other"), "search_image")[0] != message
    assert board.take(SimpleNamespace(session_hash="abc"), "search_image") == (message, True)
    with pytest.raises(InvalidInput):
        load_image(str(tmp_path / "notes.png"))  # the library still raises its own InvalidInput
