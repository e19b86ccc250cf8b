"""Advanced search, Duplicates and Explore tell the truth (issue 23, items 5, 7 and 12), in headless Chromium:
Load more's rows are on the page, the map works by touch on a phone, the tabs speak plainly, duplicate
thumbnails open their row, and the power-search tab says what it adds.

Each browser test waits on what a visitor would see (a thumbnail, a message, a row's details), never on a clock.
"""

from __future__ import annotations

import os
import re

import pytest
from playwright.sync_api import expect
from test_browser import CHROMIUM, LOCAL
from test_browser import browser  # noqa: F401 - fixture
from test_browser import DESKTOP, PHONE, open_page, serve_shapes

from ui.search_tab import TAB_LABEL

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is missing: apt-get install -y chromium"),
]
GRAPH = "#explore-map .js-plotly-plot"
JARGON = re.compile(r"\bRAG\b|cosine|FAISS|range search|\(k\)|\bk\b|IndexFlat|embedding", re.IGNORECASE)
# Is the element's centre on screen and the topmost thing there (not clipped by a scroll box nor covered)?
SHOWN_JS = """(e) => {
  const r = e.getBoundingClientRect(), x = r.left + r.width / 2, y = r.top + r.height / 2;
  if (x < 0 || y < 0 || x > innerWidth || y > innerHeight) return false;
  const top = document.elementFromPoint(x, y);
  return !!top && (e === top || e.contains(top));
}"""


@pytest.fixture(scope="module")
def served(tiny_clip_dir, tmp_path_factory):
    demo, url = serve_shapes(tmp_path_factory.mktemp("page-search"), tiny_clip_dir, n=48)
    yield url
    demo.close()



def box(page, selector: str) -> dict:
    return page.locator(selector).first.evaluate("e => e.getBoundingClientRect().toJSON()")


def overlap(a: dict, b: dict) -> bool:
    return a["left"] < b["right"] and b["left"] < a["right"] and a["top"] < b["bottom"] and b["top"] < a["bottom"]


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_load_more_sits_under_the_results_and_its_rows_are_seen(browser, served, viewport):  # noqa: F811
    context, page = open_page(browser, served, viewport)
    page.get_by_role("tab", name=TAB_LABEL).click()
    page.locator("#search-query textarea").fill("red circle")
    page.locator("#search-button").click()
    thumbnails = page.locator("#search-gallery button.thumbnail-item")
    thumbnails.nth(11).wait_for()
    more = page.locator("#search-load-more")
    page.wait_for_function("() => !document.querySelector('#search-load-more').disabled")
    gallery, button = box(page, "#search-gallery"), box(page, "#search-load-more")
    assert gallery["bottom"] <= button["top"] < gallery["bottom"] + 80  # right where the results end
    json_box = page.locator("#search-tab").get_by_text("Result as JSON (what the API returns)")
    assert button["bottom"] <= json_box.bounding_box()["y"]  # above the JSON, not under it
    last = thumbnails.nth(11)  # the third row of 12 is not hidden in a scroll box: scrolled to, it is seen
    last.scroll_into_view_if_needed()
    assert last.evaluate(SHOWN_JS)
    more.click()
    thumbnails.nth(23).wait_for()
    page.wait_for_function(SHOWN_JS, arg=thumbnails.nth(12).element_handle())  # the first new one comes into view
    for row in (12, 23):
        thumbnails.nth(row).scroll_into_view_if_needed()
        assert thumbnails.nth(row).evaluate(SHOWN_JS), row
    thumbnails.nth(23).click()  # "More like this" replaces the results: no next page of the query to load
    page.locator("#search-more").click()
    page.locator("#search-status").get_by_text("like row").wait_for()
    expect(more).to_be_disabled()
    context.close()



# The most isolated point of the map (farthest from its nearest neighbour, in screen pixels) and where it is.
ISOLATED_POINT_JS = f"""() => {{
  const gd = document.querySelector('{GRAPH}'), L = gd._fullLayout, r = gd.getBoundingClientRect();
  const points = [];
  for (const t of gd._fullData) {{
    if (t.name === 'last search' || !t.x) continue;
    for (let i = 0; i < t.x.length; i++) points.push({{id: t.customdata[i],
      x: r.left + L.xaxis._offset + L.xaxis.l2p(t.x[i]), y: r.top + L.yaxis._offset + L.yaxis.l2p(t.y[i])}});
  }}
  let best = null;
  for (const p of points) {{
    const gap = Math.min(...points.filter(q => q !== p).map(q => Math.hypot(q.x - p.x, q.y - p.y)));
    if (!best || gap > best.gap) best = {{...p, gap}};
  }}
  return best;
}}"""


def test_the_map_on_a_phone_shows_its_legend_apart_and_answers_a_tap(browser, served):  # noqa: F811
    context, page = open_page(browser, served, PHONE, touch=True)
    page.get_by_role("tab", name="Explore").tap()
    page.locator(GRAPH).wait_for()
    page.wait_for_function(f"() => document.querySelector('{GRAPH}')._fullData")
    page.locator(GRAPH).scroll_into_view_if_needed()
    graph, plot = box(page, GRAPH), box(page, f"{GRAPH} .nsewdrag")
    legend, toolbar = box(page, f"{GRAPH} .legend"), box(page, f"{GRAPH} .modebar")
    assert not overlap(legend, plot), (legend, plot)  # the legend covers no point
    assert not overlap(toolbar, legend), (toolbar, legend)
    assert graph["top"] <= legend["top"] and legend["bottom"] <= graph["bottom"] + 1  # all of it shown
    assert plot["bottom"] - plot["top"] >= 0.5 * (graph["bottom"] - graph["top"])  # the map keeps most room
    point = page.evaluate(ISOLATED_POINT_JS)
    off = 5  # a finger lands a little off the point's centre (7 px away), still nearer it than any other point
    assert point["gap"] > 2 * off * 2**0.5, point
    page.touchscreen.tap(point["x"] + off, point["y"] + off)
    expect(page.locator("#explore-gallery img").first).to_be_visible(timeout=3_000)  # filled within 3 s
    expect(page.locator("#explore-gallery img").first).to_be_in_viewport()  # and brought up from under the map
    expect(page.locator("#explore-details")).to_contain_text(f"Row {point['id']}")
    context.close()


def visible_text(page, panel: str) -> str:
    return page.locator(panel).inner_text()


def test_the_tabs_speak_plainly(browser, served):  # noqa: F811
    context, page = open_page(browser, served, DESKTOP)
    page.get_by_role("tab", name=TAB_LABEL).click()
    page.locator("#search-query textarea").fill("red circle")
    page.locator("#search-button").click()
    page.locator("#search-gallery img").first.wait_for()
    page.locator("#search-gallery button.thumbnail-item").first.click()
    page.locator("#search-details").get_by_text("Label:").wait_for()
    page.get_by_text("Filters", exact=True).click()
    page.get_by_text("Image (optional)", exact=True).click()
    texts = {TAB_LABEL: visible_text(page, "#search-tab")}
    page.get_by_role("tab", name="Duplicates").click()
    page.locator("#duplicates-button").click()
    page.locator("#duplicates-groups p").first.wait_for()
    texts["Duplicates"] = visible_text(page, "#duplicates-tab")
    page.get_by_role("tab", name="Explore").click()
    page.locator(GRAPH).wait_for()
    texts["Explore"] = visible_text(page, "#explore-tab")
    for tab, text in texts.items():
        assert JARGON.findall(text) == [], (tab, JARGON.findall(text))
    context.close()


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_result_captions_leave_the_thumbnail_visible(browser, served, viewport):  # noqa: F811
    context, page = open_page(browser, served, viewport)
    page.locator("#query textarea").fill("red circle")
    page.locator("#search-text-button").click()
    page.locator("#text-gallery img").nth(11).wait_for()
    sizes = page.locator("#text-gallery button.thumbnail-item").evaluate_all(
        "items => items.map(b => [b.getBoundingClientRect().height,"
        " b.querySelector('.caption-label').getBoundingClientRect().height])")
    assert all(caption < thumb / 4 for thumb, caption in sizes), sizes  # a strip, not a third of the picture
    context.close()


def test_duplicates_say_how_alike_and_a_thumbnail_opens_its_row(browser, served):  # noqa: F811
    context, page = open_page(browser, served, DESKTOP)
    page.get_by_role("tab", name="Duplicates").click()
    threshold = page.locator("#duplicates-threshold input[type=number]")
    threshold.fill("0.9")
    threshold.press("Enter")
    page.locator("#duplicates-button").click()
    headers = page.locator("#duplicates-groups .duplicate-group b")
    headers.first.wait_for()
    for header in headers.all_inner_texts():
        assert re.fullmatch(r"\d+ near-identical images · similarity ≥ 0\.\d\d", header), header  # no id wall
    thumb = page.locator("#duplicates-groups button.duplicate-thumb").nth(1)
    row = thumb.get_attribute("data-row")
    thumb.click()
    page.locator("#duplicates-details").get_by_text(f"Row {row}").wait_for()
    assert "Captions" in page.locator("#duplicates-details").inner_text()
    assert thumb.get_attribute("aria-pressed") == "true"
    context.close()


def test_the_power_search_tab_says_what_it_adds(browser, served):  # noqa: F811
    context, page = open_page(browser, served, DESKTOP)
    assert page.get_by_role("tab", name="Search", exact=True).count() == 0  # not a twin of "Text → image"
    page.get_by_role("tab", name=TAB_LABEL, exact=True).click()
    intro = page.locator("#search-intro")
    intro.wait_for()
    first = page.locator("#search-tab").inner_text().strip().splitlines()[0]
    assert first == intro.inner_text().strip()  # the description is the tab's first line
    for adds in ("Combine", "filter", "Load more", "Text → image"):
        assert adds in first, adds
    context.close()
