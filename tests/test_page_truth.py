"""The page tells the truth (issue 23), in headless Chromium: one Explore tab, every tab labelled on a phone, no
server path or jargon in the visible text, an empty search that says why, examples that run.

Each test waits on what a visitor would see (a tab, a message, a thumbnail), never on a clock.
"""

from __future__ import annotations

import os
import re

import pytest
from test_browser import CHROMIUM, CHROMIUM_ARGS, LOCAL  # noqa: F401 - same browser set-up
from test_browser import browser  # noqa: F401 - fixture
from test_browser import DESKTOP, PHONE, open_page, serve_shapes

from ui.errors import SERVER_PATH

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is missing: apt-get install -y chromium"),
]
TABS = ["Text → image", "Image → image", "Advanced search", "Describe", "Duplicates", "Build your own", "Explore"]


@pytest.fixture(scope="module")
def served(tiny_clip_dir, tmp_path_factory):
    demo, url = serve_shapes(tmp_path_factory.mktemp("page-truth"), tiny_clip_dir, n=24)
    yield url
    demo.close()



@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_opening_explore_shows_one_explore_tab(browser, served, viewport):  # noqa: F811
    context, page = open_page(browser, served, viewport)
    page.get_by_role("tab", name="Explore").click()
    page.locator("#explore-map .js-plotly-plot").wait_for()
    names = page.get_by_role("tab").all_inner_texts()
    assert names.count("Explore") == 1, names
    context.close()


def test_every_tab_has_a_visible_label_on_a_phone(browser, served, tmp_path):  # noqa: F811
    context, page = open_page(browser, served, PHONE)
    width = page.evaluate("() => document.documentElement.clientWidth")
    for name in TABS:
        tab = page.get_by_role("tab", name=name, exact=True)
        assert tab.is_visible(), name
        box = tab.bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= width, (name, box, width)
    assert page.locator(".overflow-menu:visible").count() == 0  # no unlabelled "⋯" menu
    page.screenshot(path=str(tmp_path / "phone-tabs.png"))
    context.close()


def test_no_server_path_or_jargon_in_the_visible_text(browser, served):  # noqa: F811
    context, page = open_page(browser, served, DESKTOP)
    footer = page.locator("#info-footer")
    footer.get_by_text("24 images").wait_for()
    text = page.evaluate("() => document.body.innerText")
    assert SERVER_PATH.findall(text) == []
    for jargon in ("IndexFlatIP", "onnxruntime", "quantize"):
        assert jargon not in footer.inner_text()
    context.close()


def test_an_empty_search_says_why_and_load_more_only_when_there_is_more(browser, served, tmp_path):  # noqa: F811
    context, page = open_page(browser, served, DESKTOP)
    page.get_by_role("tab", name="Advanced search", exact=True).click()
    more = page.locator("#search-load-more")
    assert more.is_disabled()  # nothing searched yet
    threshold = page.locator("#search-threshold input[type=number]")
    threshold.fill("0.99")
    threshold.press("Enter")
    page.locator("#search-query textarea").fill("red circle")
    page.locator("#search-button").click()
    page.locator("#search-status").get_by_text("No image scores above 0.99 — lower the minimum similarity.").wait_for()
    assert more.is_disabled()
    page.screenshot(path=str(tmp_path / "search-empty.png"))
    threshold.fill("0")
    threshold.press("Enter")
    page.locator("#search-button").click()
    page.locator("#search-gallery img").nth(11).wait_for()
    page.wait_for_function("() => !document.querySelector('#search-load-more').disabled")
    more.click()  # 12 of 24 shown: the next 12, then nothing more to load
    page.locator("#search-gallery img").nth(23).wait_for()
    page.wait_for_function("() => document.querySelector('#search-load-more').disabled")
    assert "24 results" in page.locator("#search-status").inner_text()
    context.close()


def test_clicking_an_example_runs_its_search(browser, served):  # noqa: F811
    context, page = open_page(browser, served, DESKTOP)
    # the examples are drawn per session on load: wait until the first one shows its text
    page.wait_for_function("() => (document.querySelector('#text-examples .gallery-item')?.innerText || '').trim()")
    example = page.locator("#text-examples .gallery-item").first
    wanted = example.inner_text().strip()
    example.click()
    page.locator("#text-gallery img").first.wait_for()
    assert page.locator("#query textarea").input_value() == wanted
    page.locator("#text-status").get_by_text(re.compile(r"^12 results for")).wait_for()
    page.get_by_role("tab", name="Image → image").click()
    page.locator(".gallery-item:visible").first.click()
    page.locator("#image-gallery img").first.wait_for()
    assert page.locator("#image-gallery img").count() == 12
    context.close()


def test_the_page_says_which_collection_it_searches(browser, served, tmp_path):  # noqa: F811
    from test_build_tab import shapes_archive

    context, page = open_page(browser, served, DESKTOP)
    indicator = page.locator("#collection-indicator")
    indicator.get_by_text("Searching: collection (24 images)").wait_for()
    assert not page.locator("#use-space-collection").is_visible()  # nothing of its own to switch to yet
    page.get_by_role("tab", name="Build your own").click()
    page.locator("#build-archive input[type=file]").set_input_files(str(shapes_archive(tmp_path / "mine.zip", n=9)))
    page.get_by_text("mine.zip").first.wait_for()
    page.evaluate("""() => {  // record what the Build tab shows while the build runs
      window.seen = {locked: false, building: false};
      new MutationObserver(() => {
        window.seen.locked ||= document.querySelector('#build-button').disabled;
        window.seen.building ||= /Starting your build|images ·|Waiting:/.test(document.querySelector('#build-status').innerText);
      }).observe(document.body, {subtree: true, childList: true, attributes: true, characterData: true});
    }""")
    page.locator("#build-button").click()
    indicator.get_by_text("Searching: your collection (9 images, only in this browser tab)").wait_for()
    page.locator("#info-footer").get_by_text("9 images").wait_for()
    switch = page.locator("#use-space-collection input[type=checkbox]")
    assert switch.is_visible() and not switch.is_checked()
    assert page.evaluate("() => window.seen") == {"locked": True, "building": True}  # mid-build: locked, says so
    page.wait_for_function("() => !document.querySelector('#build-button').disabled")  # Build again once done
    assert "9 images" in page.locator("#build-status").inner_text()
    page.screenshot(path=str(tmp_path / "own-collection.png"))
    switch.check()
    indicator.get_by_text("Searching: collection (24 images)").wait_for()
    page.locator("#info-footer").get_by_text("24 images").wait_for()
    context.close()
