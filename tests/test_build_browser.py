"""The Build tab in headless Chromium: upload an archive, watch the build, see the new collection's gallery,
search it in the Text tab, and switch back to the Space's collection."""

from __future__ import annotations

import os
import shutil
import threading

import pytest
from test_app import launch_app, shapes_collection
from test_browser import CHROMIUM, browser, page  # noqa: F401 - shared fixtures
from test_accessibility import violations
from test_build_tab import shapes_archive

import rag.space.sessions as session_registry
from rag.config import Settings
from rag.startup import open_pipeline

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is missing: apt-get install -y chromium"),
]


@pytest.fixture(scope="module")
def served(tiny_clip_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("build-browser")
    collection = shapes_collection(root / "images", root / "collection", tiny_clip_dir, n=24)
    pipeline = open_pipeline(Settings(cache_dir=root / "cache"), collection_dir=collection,
                                      with_captioner=False)
    demo, url = launch_app(pipeline)
    yield url, root / "cache" / "sessions"
    demo.close()


def test_upload_an_archive_build_and_search_it(page, served, tmp_path, monkeypatch):  # noqa: F811
    url, sessions = served
    removed, real_remove = threading.Event(), session_registry.remove_folder

    def remove_and_tell(folder):  # SessionRegistry.end (the tab's unload event) deletes the folder through this
        real_remove(folder)
        removed.set()

    monkeypatch.setattr(session_registry, "remove_folder", remove_and_tell)
    archive = shapes_archive(tmp_path / "my-shapes.zip", n=30)
    page.goto(url)
    page.get_by_role("tab", name="Build your own").click()
    page.locator("#build-button").wait_for()
    empty_tab_violations = violations(page)
    page.locator("#build-archive input[type=file]").set_input_files(str(archive))
    page.wait_for_function(  # the name shows in two parts ("my-shapes", ".zip"), on one line or two
        "() => document.querySelector('#build-archive').textContent.replace(/\\s/g, '').includes('my-shapes.zip')")
    page.get_by_label("Folder names are labels").check()
    page.locator("#build-button").click()
    gallery = page.locator("#build-gallery img")
    gallery.first.wait_for()
    assert gallery.count() == 24  # the first 24 of the 30 images
    status = page.locator("#build-status").inner_text()
    assert "30 images" in status and "images/s" in status and "2 skipped: " in status
    assert "../escape.png (" in status and "__MACOSX/._circle (" in status  # named with the reason, not only in JSON
    switch = page.locator("#use-space-collection input[type=checkbox]")
    assert not switch.is_checked()
    page.screenshot(path=str(tmp_path / "build_done.png"), full_page=True)
    assert (empty_tab_violations, violations(page)) == ([], [])  # WCAG 2.1 A/AA, as for the other tabs

    page.get_by_role("tab", name="Text → image").click()
    page.locator("#query textarea").fill("red circle")
    page.locator("#search-text-button").click()
    page.locator("#text-gallery img").first.wait_for()
    assert "mine: " in page.locator("#text-gallery").inner_text()

    # the Advanced search tab's label filter offers this session's labels (folder names), not the Space's
    page.get_by_role("tab", name="Advanced search", exact=True).click()
    page.locator("#search-filters-box").get_by_text("Filters").click()
    page.locator("#filter-labels input").click()
    options = page.get_by_role("option")
    options.first.wait_for()
    offered = set(options.all_inner_texts())
    assert offered and offered <= {"circle", "square", "triangle"}, offered
    page.keyboard.press("Escape")
    page.get_by_role("tab", name="Text → image").click()

    switch.check()  # back to the Space's collection
    page.locator("#search-text-button").click()
    page.wait_for_function("() => !document.querySelector('#text-gallery').innerText.includes('mine: ')")
    assert page.outside_requests == [], page.outside_requests
    assert any(sessions.iterdir())
    page.close()  # the tab closes: its collection is deleted at once (Gradio's unload event), not at the TTL
    assert removed.wait(60), "closing the tab did not delete its collection"
    assert not any(sessions.iterdir())
    shutil.copy(tmp_path / "build_done.png", "/tmp/build_tab_screenshot.png")
