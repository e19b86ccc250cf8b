"""Usable by everyone: axe-core finds no WCAG 2.1 A/AA violation in any state of any tab, light and dark; the
whole journey works from the keyboard with a visible focus; screen readers get names and announcements; a
390-px phone gets a full-width query box, readable captions, 44-px tap targets and no horizontal scrolling.

axe-core runs inside the page (axe-playwright-python bundles axe.min.js; nothing is downloaded).
"""

from __future__ import annotations

import os

import pytest
from axe_playwright_python.sync_playwright import Axe
from test_browser import CHROMIUM, browser, served  # noqa: F401 - pytest fixtures shared with test_browser

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is missing: apt-get install -y chromium"),
]

WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
AXE = Axe()
# Gradio's own markup that the app cannot change (see README, "Accessibility"): only this rule, only there.
# The error toast's header is a role="button" that contains its close <button>.
GRADIO_EXCEPTIONS = {("nested-interactive", ".toast-header")}


def violations(page) -> list[str]:
    """axe-core's WCAG 2.1 A/AA violations on the page as it is now: 'rule: elements' per violation."""
    result = AXE.run(page, options={"runOnly": {"type": "tag", "values": WCAG_TAGS}})
    found = []
    for violation in result.response["violations"]:
        nodes = [
            n["target"] for n in violation["nodes"]
            if not any(violation["id"] == rule and n["target"][-1].endswith(where) for rule, where in GRADIO_EXCEPTIONS)
        ]
        if nodes:
            found.append(f"{violation['id']} ({violation['impact']}): {nodes[:5]}")
    return found


# Settled: for QUIET_FRAMES animation frames in a row no event is running (Gradio's status trackers hidden, no block
# marked pending: a chained .then() event starts a moment after the one before it ends) and no finite animation or
# CSS transition is running (a transition starts on the frame after its cause); infinite ones (spinners) and the
# toast's 10-s auto-close countdown bar (its width moves, not its colours) do not count.
QUIET_FRAMES = 10
SETTLED_JS = """frames => new Promise(done => {
    const idle = () => !document.querySelector('.pending')
        && ![...document.querySelectorAll('[data-testid=status-tracker]')].some(e => !e.classList.contains('hide')
                                                                                && e.offsetParent !== null)
        && document.getAnimations().every(a => a.playState !== 'running' || !a.effect
            || a.effect.getComputedTiming().endTime === Infinity || /countdown/.test(a.animationName || ''));
    // and the buttons' colours stopped changing (a transition may be missing from getAnimations() for a frame)
    const look = () => [...document.querySelectorAll('button')].map(b => { const c = getComputedStyle(b);
        return c.color + c.backgroundColor + c.opacity + c.filter; }).join('|');
    let last = look();
    const step = left => requestAnimationFrame(() => {
        const now = look(), same = now === last; last = now;
        !idle() || !same ? done(false) : left <= 1 ? done(true) : step(left - 1); });
    step(frames); })"""


def enabled(page, selector: str) -> None:
    """Wait until a button is enabled and its fade from the disabled look (opacity, grayscale) has ended."""
    page.wait_for_function("""s => { const b = document.querySelector(s), c = b && getComputedStyle(b);
        return !!b && !b.disabled && c.opacity === '1' && c.filter === 'none'; }""", arg=selector)


def settle(page) -> None:
    """Wait until the page's events are done and no transition or animation is changing what axe would measure."""
    page.wait_for_function(SETTLED_JS, arg=QUIET_FRAMES, polling=100)


def close_toasts(page) -> None:
    """Close every toast (those not already leaving: Svelte makes a leaving one inert) and wait until none is left,
    so that the next state starts clean."""
    page.wait_for_function("""() => {
        document.querySelectorAll('[data-testid=toast-close]').forEach(b => { if (!b.closest('[inert]')) b.click(); });
        return !document.querySelector('[data-testid=toast-body]'); }""", polling=200)


def wait_for_error(page, status: str) -> None:
    """Wait until a failed action says so: a toast, or a "⚠️" message in the tab's status line ``status``."""
    page.wait_for_function("""s => document.querySelector('[data-testid=toast-body]')
        || (document.querySelector(s)?.innerText || '').includes('⚠')""", arg=status)


def open_tab(page, tab_id: str) -> None:
    """Select a tab by its stable id (gr.Tab(id=...)), whatever its label says, and wait until it is shown."""
    page.locator(f"[role=tab][data-tab-id={tab_id}]").click()
    page.locator(f"[role=tab][data-tab-id={tab_id}][aria-selected=true]").wait_for()


def open_page(browser, url: str, scheme: str, width: int = 1280, height: int = 900):  # noqa: F811
    context = browser.new_context(viewport={"width": width, "height": height}, color_scheme=scheme)
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(url)
    page.locator("[role=tab][data-tab-id=text]").wait_for()
    return context, page


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_no_wcag_violations_in_any_state(browser, served, scheme):  # noqa: F811
    url, images = served
    context, page = open_page(browser, url, scheme)
    found: dict[str, list[str]] = {}
    try:
        found["text tab, empty"] = violations(page)
        page.locator("#query textarea").fill("red circle")
        page.locator("#search-text-button").click()
        page.locator("#text-gallery img").first.wait_for()
        page.locator("#text-status").get_by_text("12 results").wait_for()
        found["text tab, results"] = violations(page)
        page.locator("#text-gallery img").first.click()
        page.locator("#text-details").get_by_text("Label:").wait_for()
        enabled(page, "#text-more")
        settle(page)  # the button's colours transition when it becomes enabled: measure them settled
        found["text tab, result selected"] = violations(page)
        page.locator("#query textarea").fill(" ")
        page.locator("#search-text-button").click()
        wait_for_error(page, "#text-status")
        settle(page)  # the toast fades and flies in: measure its colours once it is opaque and still
        found["text tab, error shown"] = violations(page)
        open_tab(page, "image")
        page.locator("#image-query").wait_for()
        found["image tab, empty"] = violations(page)
        page.locator("#image-query input[type=file]").set_input_files(str(images / "set_a" / "img_001.jpg"))
        page.locator("#image-gallery img").first.wait_for()
        page.locator("#image-status").get_by_text("12 results").wait_for()
        found["image tab, results"] = violations(page)
        open_tab(page, "describe")
        page.locator("#describe-button").wait_for()
        found["describe tab, empty"] = violations(page)
        page.locator("#describe-image input[type=file]").set_input_files(str(images / "set_a" / "img_001.jpg"))
        page.locator("#describe-image img").first.wait_for()
        page.locator("#describe-button").click()
        page.locator("#describe-status").get_by_text("Description ready").wait_for()
        page.locator("#context-gallery img").first.wait_for()
        found["describe tab, description with context"] = violations(page)
    finally:
        context.close()
    assert not any(found.values()), {state: v for state, v in found.items() if v}


def _focus_visible(page) -> bool:
    """The focused element draws an outline (or a box-shadow ring) that a sighted keyboard user can see."""
    return page.evaluate(
        """() => { const e = document.activeElement; if (!e || e === document.body) return false;
        const s = getComputedStyle(e);
        return (s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) >= 2) || s.boxShadow !== 'none'; }"""
    )


def tab_to(page, selector: str, limit: int = 80, backwards: bool = False, text: str = "") -> None:
    """Press Tab until the focused element matches ``selector`` (and contains ``text``); focus must be visible."""
    for _ in range(limit):
        page.keyboard.press("Shift+Tab" if backwards else "Tab")
        if page.evaluate(
            "([s, t]) => { const e = document.activeElement; return !!e && e.matches(s) && e.textContent.includes(t); }",
            [selector, text],
        ):
            assert _focus_visible(page), f"focus on {selector} is not visible"
            return
    raise AssertionError(f"Tab never reached {selector}")


def test_the_whole_journey_works_from_the_keyboard(browser, served):  # noqa: F811
    url, _ = served
    context, page = open_page(browser, url, "light")
    try:
        tab_to(page, "#query textarea")
        page.keyboard.type("red circle")
        page.keyboard.press("Enter")  # Enter in the query box searches
        page.locator("#text-gallery img").first.wait_for()
        tab_to(page, "#text-gallery button.thumbnail-item")
        name = page.evaluate("() => document.activeElement.getAttribute('aria-label')")
        assert name.startswith("Result 1 of 12: ") and "·" in name, name  # score and caption, not just a number
        page.keyboard.press("Enter")  # open the result's details
        page.locator("#text-details").get_by_text("Label:").wait_for()
        tab_to(page, "#text-more")
        page.keyboard.press("Enter")  # More like this
        page.locator("#text-status").get_by_text("like row").wait_for()
        tab_to(page, "[role=tab][data-tab-id=describe]", backwards=True)
        page.keyboard.press("Enter")
        page.locator("#describe-button").wait_for()
        tab_to(page, "#describe-examples button")
        page.keyboard.press("Enter")  # an example image from the collection
        page.locator("#describe-image img").first.wait_for()
        tab_to(page, "#describe-button")
        page.keyboard.press("Enter")
        page.locator("#describe-status").get_by_text("Description ready").wait_for()
        assert page.locator("#description textarea").input_value().strip()
    finally:
        context.close()


def test_screen_readers_get_names_and_announcements(browser, served):  # noqa: F811
    url, _ = served
    context, page = open_page(browser, url, "light")
    try:
        page.locator("#query textarea").fill("red circle")
        page.locator("#search-text-button").click()
        page.locator("#text-status").get_by_text("12 results").wait_for()
        status = page.locator("#text-status")
        assert status.get_attribute("role") == "status" and status.get_attribute("aria-live") == "polite"
        assert "Best:" in status.inner_text()  # the announcement says what was found, not only how many
        alts = page.locator("#text-gallery img").evaluate_all("imgs => imgs.map(i => i.alt)")
        assert len(alts) == 12 and all(" · " in alt and len(alt.split(" · ", 1)[1]) > 0 for alt in alts), alts
        unnamed = page.evaluate(
            """() => [...document.querySelectorAll('button, input, textarea, [role=tab]')]
            .filter(e => e.offsetParent !== null)
            .filter(e => !(e.getAttribute('aria-label') || e.labels?.length || e.textContent.trim()
                           || e.getAttribute('aria-labelledby') || e.title))
            .map(e => e.outerHTML.slice(0, 120))"""
        )
        assert unnamed == []
        page.locator("#query textarea").fill(" ")
        page.locator("#search-text-button").click()
        wait_for_error(page, "#text-status")
        toast = page.locator("[data-testid=toast-body]")
        where = toast.first if toast.count() else status  # a pop-up, or the message in the status line
        assert where.get_attribute("aria-live") in ("polite", "assertive")  # errors are announced
    finally:
        context.close()


def test_good_on_a_phone(browser, served, tmp_path):  # noqa: F811
    url, _ = served
    context, page = open_page(browser, url, "light", width=390, height=844)
    try:
        page.locator("#query textarea").fill("red circle")
        page.locator("#search-text-button").click()
        page.locator("#text-gallery img").first.wait_for()
        page.locator("#text-gallery img").first.scroll_into_view_if_needed()
        query = page.locator("#query").bounding_box()
        assert query["width"] >= 0.85 * 390 - 40, query  # the query box spans the screen (minus the padding)
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 390  # no horizontal scrolling
        captions = page.locator("#text-gallery .caption-label")
        first = captions.first
        assert first.evaluate("e => e.scrollWidth <= e.clientWidth + 1")  # nothing cut off sideways
        assert " · " in first.inner_text() and len(first.inner_text()) > 10  # the score and the caption's start
        for selector in ("#search-text-button", "#text-gallery button.thumbnail-item", "[role=tab]"):
            box = page.locator(selector).first.bounding_box()
            assert box["height"] >= 44, (selector, box)
        page.screenshot(path=str(tmp_path / "phone.png"), full_page=False)
        if os.environ.get("RAG_KEEP_SCREENSHOTS"):
            page.screenshot(path="/tmp/phone_screenshot.png", full_page=True)
    finally:
        context.close()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_tab_passes_axe_when_opened(browser, served, scheme):  # noqa: F811
    """Every tab the page has (search, duplicates, build, explore... as they are added), empty, light and dark."""
    url, _ = served
    context, page = open_page(browser, url, scheme)
    found: dict[str, list[str]] = {}
    try:
        tab_ids = page.locator("[role=tab]").evaluate_all("tabs => tabs.map(t => t.dataset.tabId)")
        assert len(tab_ids) >= 3, tab_ids
        for tab_id in tab_ids:
            open_tab(page, tab_id)
            if tab_id == "explore":  # the map is drawn after the tab opens, without a pending marker
                page.locator(GRAPH).wait_for()
            settle(page)
            found[tab_id] = violations(page)
    finally:
        context.close()
    assert not any(found.values()), {tab: v for tab, v in found.items() if v}


GRAPH = "#explore-map .js-plotly-plot"


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_search_duplicates_explore_and_build_pass_axe_with_results_and_errors(browser, served, scheme):  # noqa: F811
    """The other tabs in the states a visitor sees after using them: results, a selected result, an error."""
    url, _ = served
    context, page = open_page(browser, url, scheme)
    found: dict[str, list[str]] = {}

    def check(state: str) -> None:
        page.mouse.move(0, 0)  # the pointer left on a clicked thumbnail may rest over a button after the layout moves
        settle(page)
        found[state] = violations(page)

    try:
        open_tab(page, "search")
        page.locator("#search-query textarea").fill("red circle")
        page.locator("#search-button").click()
        page.locator("#search-gallery img").first.wait_for()
        page.wait_for_function("() => document.querySelector('#search-status').innerText.trim() !== ''")
        check("search, results")
        page.locator("#search-gallery img").first.click()
        page.locator("#search-details").get_by_text("Label:").wait_for()
        enabled(page, "#search-more")
        check("search, result selected")
        page.locator("#search-query textarea").fill(" ")
        page.locator("#search-button").click()
        wait_for_error(page, "#search-status")
        check("search, error shown")
        close_toasts(page)
        open_tab(page, "duplicates")
        page.locator("#duplicates-button").click()
        page.locator("#duplicates-groups .duplicate-group img").first.wait_for()
        check("duplicates, groups")
        open_tab(page, "explore")
        page.wait_for_function(f"() => document.querySelector('{GRAPH}')?._fullData && "
                               f"document.querySelector('{GRAPH}').__ragBridge")
        check("explore, map")
        page.evaluate(f"() => document.querySelector('{GRAPH}').emit('plotly_click', {{points: [{{customdata: 5}}]}})")
        page.locator("#explore-details").get_by_text("Row 5").wait_for()
        page.wait_for_function("() => !document.querySelector('#explore-more').disabled")
        check("explore, point selected")
        open_tab(page, "build")
        page.locator("#build-button").click()  # neither an archive nor a dataset
        wait_for_error(page, "#build-status")
        check("build, error shown")
    finally:
        context.close()
    assert not any(found.values()), {state: v for state, v in found.items() if v}
