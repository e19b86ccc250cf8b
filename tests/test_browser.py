"""The page in a real browser (Debian's headless Chromium via Playwright): search, select, describe, screenshot.

Run alone with ``pytest -m browser``. Needs /usr/bin/chromium (``apt-get install chromium``); Playwright's own
browser downloads are never used. Every request to anything but the local app is blocked and recorded, so the
page must work with no internet (no web fonts or CDN scripts).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from test_app import launch_app, shapes_collection

from app import StartupError
from rag.config import Settings
from rag.startup import open_pipeline

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
LOCAL = ("http://127.0.0.1", "http://localhost", "data:", "blob:")


DESKTOP, PHONE = {"width": 1280, "height": 900}, {"width": 390, "height": 844}


def open_page(browser, url: str, viewport: dict = DESKTOP, touch: bool = False):  # noqa: F811
    """A fresh browser context on the app (nothing outside this machine reachable), once its first tab shows."""
    context = browser.new_context(viewport=viewport, has_touch=touch, is_mobile=touch)
    new = context.new_page()
    new.route("**/*", lambda route: route.continue_() if route.request.url.startswith(LOCAL) else route.abort())
    new.set_default_timeout(60_000)
    new.goto(url)
    new.get_by_role("tab", name="Text → image").wait_for()
    return context, new


def serve_shapes(root, clip_dir: str, n: int):
    """The app over a shapes collection of ``n`` images built with ``clip_dir``, without a captioner: (demo, url)."""
    from testkit.shapes import build_shapes, write_shape_folder

    from rag.config import Settings
    from rag.startup import open_pipeline
    from test_app import launch_app

    collection = build_shapes(write_shape_folder(root / "images", n=n), root / "collection", clip_dir)
    pipeline = open_pipeline(Settings(cache_dir=root / "cache"), collection_dir=collection, with_captioner=False)
    return launch_app(pipeline)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is missing: apt-get install -y chromium"),
]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.outside_requests = []

    def only_local(route):
        if route.request.url.startswith(LOCAL):
            route.continue_()
        else:
            page.outside_requests.append(route.request.url)
            route.abort()

    page.route("**/*", only_local)
    page.set_default_timeout(60_000)
    yield page
    context.close()


@pytest.fixture(scope="module")
def served(tiny_clip_dir, tiny_git_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    collection = shapes_collection(root / "images", root / "collection", tiny_clip_dir, n=48)
    pipeline = open_pipeline(
        Settings(captioner="git", captioner_model=tiny_git_dir, cache_dir=root / "cache"), collection_dir=collection
    )
    demo, url = launch_app(pipeline)
    yield url, root / "images"
    demo.close()


def test_search_select_and_describe_in_the_browser(page, served, tmp_path):
    url, images = served
    page.goto(url)
    page.get_by_role("tab", name="Text → image").wait_for()
    assert "48 images" in page.locator("#info-footer").inner_text()

    # text search: the gallery fills with thumbnails captioned "score · caption"
    page.locator("#query textarea").fill("red circle")
    page.locator("#search-text-button").click()
    thumbnails = page.locator("#text-gallery img")
    thumbnails.first.wait_for()
    assert thumbnails.count() == 12
    assert "·" in page.locator("#text-gallery").inner_text()

    # selecting a result shows its details and enables "More like this"
    thumbnails.first.click()
    details = page.locator("#text-details")
    details.get_by_text("Label:").wait_for()
    assert "Label:" in details.inner_text() and "photographer" in details.inner_text()
    assert page.locator("#text-more").is_enabled()
    text_shot = tmp_path / "text_search.png"
    page.screenshot(path=str(text_shot), full_page=True)

    # describe: upload an image, get a description and its context
    page.get_by_role("tab", name="Describe").click()
    page.locator("#describe-image input[type=file]").set_input_files(str(images / "set_a" / "img_001.jpg"))
    page.locator("#describe-image img").first.wait_for()
    page.locator("#describe-button").click()
    description = page.locator("#description textarea")
    page.wait_for_function("el => el.value.trim().length > 0", arg=description.element_handle())
    assert any(shape in description.input_value() for shape in ("circle", "square", "triangle"))
    page.locator("#context-gallery img").first.wait_for()
    assert page.locator("#context-gallery img").count() == 5
    describe_shot = tmp_path / "describe.png"
    page.screenshot(path=str(describe_shot), full_page=True)

    # bad input shows a readable error in the page, and the page keeps working
    page.get_by_role("tab", name="Text → image").click()
    page.locator("#query textarea").fill("   ")
    page.locator("#search-text-button").click()
    page.locator("#text-status").get_by_text("Type a text query: it is empty.").wait_for()
    page.locator("#query textarea").fill("blue square")
    page.locator("#search-text-button").click()
    page.locator("#text-gallery").get_by_text("blue").first.wait_for()

    assert page.outside_requests == [], page.outside_requests
    shutil.copy(text_shot, "/tmp/app_screenshot.png")
    shutil.copy(describe_shot, "/tmp/app_screenshot_describe.png")
    assert Path("/tmp/app_screenshot.png").stat().st_size > 10_000


def test_page_explains_a_startup_error(page):
    demo, url = launch_app(StartupError("Could not load the collection: nope.\n\nSet the **RAG_COLLECTION** variable."))
    try:
        page.goto(url)
        banner = page.locator("#startup-error")
        banner.get_by_text("RAG_COLLECTION").wait_for()
        assert "The Space could not start" in banner.inner_text()
        page.locator("#query textarea").fill("red circle")
        page.locator("#search-text-button").click()
        page.locator("#text-status").get_by_text("Could not load the collection: nope.").wait_for()
    finally:
        demo.close()
