"""The Explore tab in headless Chromium: every point drawn, a search's hits ringed, a picked point's details."""

from __future__ import annotations

import os

import pytest
from test_app import launch_app
from test_browser import CHROMIUM, CHROMIUM_ARGS, LOCAL  # noqa: F401 - same browser set-up
from test_browser import browser, page  # noqa: F401 - fixtures
from testkit.shapes import build_shapes, write_shape_folder

from rag.config import Settings
from rag.startup import open_pipeline

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is missing: apt-get install -y chromium"),
]
GRAPH = "#explore-map .js-plotly-plot"
POINTS_JS = f"""() => {{
  const traces = document.querySelector('{GRAPH}')._fullData;
  const count = keep => traces.filter(keep).reduce((n, t) => n + (t.x ? t.x.length : 0), 0);
  return {{all: count(t => t.name !== 'last search'), hits: count(t => t.name === 'last search'), type: traces[0].type}};
}}"""


@pytest.fixture(scope="module")
def served(tiny_clip_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("explore-browser")
    collection = build_shapes(write_shape_folder(root / "images", n=48), root / "collection", tiny_clip_dir)
    pipeline = open_pipeline(Settings(cache_dir=root / "cache"), collection_dir=collection,
                                      with_captioner=False)
    demo, url = launch_app(pipeline)
    yield url
    demo.close()


def test_explore_tab_draws_every_point_rings_hits_and_opens_details(page, served):  # noqa: F811
    page.goto(served)
    page.locator("#query textarea").fill("red circle")
    page.locator("#search-text-button").click()
    page.locator("#text-gallery img").first.wait_for()
    page.get_by_role("tab", name="Explore").click()
    page.locator(GRAPH).wait_for()
    page.wait_for_function(f"() => document.querySelector('{GRAPH}')._fullData")
    drawn = page.evaluate(POINTS_JS)
    assert drawn == {"all": 48, "hits": 12, "type": "scattergl"}
    assert page.locator(f"{GRAPH} canvas").count() > 0
    # A click on a point (what plotly emits for it) shows that row in the details panel.
    page.wait_for_function(f"() => document.querySelector('{GRAPH}').__ragBridge")
    page.evaluate(f"() => document.querySelector('{GRAPH}').emit('plotly_click', {{points: [{{customdata: 5}}]}})")
    page.locator("#explore-details").get_by_text("Row 5").wait_for()
    assert page.locator("#explore-more").is_enabled()
    page.locator("#explore-more").click()
    page.locator("#explore-gallery img").nth(3).wait_for()
    assert not page.outside_requests
