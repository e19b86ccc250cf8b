"""The Advanced search and Duplicates tabs in headless Chromium: parsed terms, filters, threshold, Load more.

Run alone with ``pytest -m browser``; same browser set-up as test_browser.py (no request leaves localhost).
"""

from __future__ import annotations

import json
import os
import re
import shutil

import pytest
from test_app import launch_app, shapes_collection
from test_browser import CHROMIUM, browser, page  # noqa: F401 - shared fixtures

from rag.config import Settings
from rag.startup import open_pipeline

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is missing: apt-get install -y chromium"),
]


@pytest.fixture(scope="module")
def served(tiny_clip_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("search-browser")
    collection = shapes_collection(root / "images", root / "collection", tiny_clip_dir, n=48)
    pipeline = open_pipeline(Settings(cache_dir=root / "cache"), collection_dir=collection,
                                      with_captioner=False)
    demo, url = launch_app(pipeline)
    yield url
    demo.close()


def test_search_tab_controls_in_the_browser(page, served, tmp_path):  # noqa: F811
    page.goto(served)
    page.get_by_role("tab", name="Advanced search").click()

    # the parsed query shows under the box while typing, and a malformed one says what is wrong
    box = page.locator("#search-query textarea")
    box.fill('red circle - 0.5*"blue"')
    page.locator("#search-terms").get_by_text('+1 × "red circle" −0.5 × "blue"').wait_for()
    box.fill("red +")
    page.locator("#search-terms").get_by_text("empty term").wait_for()

    # a label filter from the collection's labels writes the filters JSON that /search receives
    box.fill("red circle")
    page.get_by_text("Filters", exact=True).click()
    page.locator("#filter-labels input").click()
    page.get_by_role("option", name="blue square").click()
    filters = page.locator("#search-filters textarea")
    page.wait_for_function("el => el.value.includes('blue square')", arg=filters.element_handle())
    assert json.loads(filters.input_value()) == {"label": ["blue square"]}

    page.locator("#search-button").click()
    thumbnails = page.locator("#search-gallery img")
    thumbnails.first.wait_for()
    first_count = thumbnails.count()
    assert 1 <= first_count <= 12
    assert page.locator("#search-gallery").inner_text().count("blue square") == first_count  # every hit passes
    page.screenshot(path=str(tmp_path / "search_tab.png"), full_page=True)

    # without the filter, Load more appends the next page to the gallery
    page.locator("#filter-labels").get_by_role("button").first.click()  # remove the chosen label
    page.wait_for_function("el => el.value === ''", arg=filters.element_handle())
    page.locator("#search-button").click()
    page.wait_for_function("() => document.querySelectorAll('#search-gallery img').length === 12")
    page.locator("#search-load-more").click()
    page.wait_for_function("() => document.querySelectorAll('#search-gallery img').length === 24")

    # the duplicates panel shows groups as rows of thumbnails
    page.get_by_role("tab", name="Duplicates").click()
    page.locator("#duplicates-threshold input[type=number]").fill("0.9")
    page.locator("#duplicates-threshold input[type=number]").press("Enter")
    page.locator("#duplicates-button").click()
    page.locator("#duplicates-groups .duplicate-group img").first.wait_for()
    header = re.compile(r"^\d+ near-identical images · similarity ≥ ")
    assert page.locator("#duplicates-groups").get_by_text(header).count() >= 1
    page.screenshot(path=str(tmp_path / "duplicates_tab.png"), full_page=True)
    shutil.copy(tmp_path / "search_tab.png", "/tmp/search_tab_screenshot.png")
    assert page.outside_requests == [], page.outside_requests
