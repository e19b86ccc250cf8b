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


def open_page(browser, url: str, scheme: str, width: int = 1280, height: int = 900):  # noqa: F811
    context = browser.new_context(viewport={"width": width, "height": height}, color_scheme=scheme)
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(url)
    page.get_by_role("tab", name="Text → image").wait_for()
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
        page.wait_for_function("() => !document.querySelector('#text-more').disabled")
        page.wait_for_timeout(600)  # the button's colours transition when it becomes enabled: measure them settled
        found["text tab, result selected"] = violations(page)
        page.locator("#query textarea").fill(" ")
        page.locator("#search-text-button").click()
        page.locator("[data-testid=toast-text]").get_by_text("Type a text query").wait_for()
        page.wait_for_function(  # the toast fades and flies in: measure its colours once it and its wrappers are opaque
            """() => [...document.querySelectorAll('[data-testid=toast-body]')].every(e => {
                for (let n = e; n; n = n.parentElement) if (getComputedStyle(n).opacity !== '1') return false;
                return true; })"""
        )
        page.wait_for_function(  # and no animation is still running inside or around it
            """() => document.getAnimations().every(a => a.playState !== 'running' || !a.effect || !a.effect.target
                || !(a.effect.target.closest('[data-testid=toast-body]') || a.effect.target.querySelector?.('[data-testid=toast-body]')))"""
        )
        page.wait_for_timeout(300)  # colour transitions (not animations) settle too
        found["text tab, error shown"] = violations(page)
        page.get_by_role("tab", name="Image → image").click()
        page.locator("#image-query").wait_for()
        found["image tab, empty"] = violations(page)
        page.locator("#image-query input[type=file]").set_input_files(str(images / "set_a" / "img_001.jpg"))
        page.locator("#image-gallery img").first.wait_for()
        page.locator("#image-status").get_by_text("12 results").wait_for()
        found["image tab, results"] = violations(page)
        page.get_by_role("tab", name="Describe").click()
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
        tab_to(page, "[role=tab]", backwards=True, text="Describe")
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
        toast = page.locator("[data-testid=toast-body]").first
        toast.wait_for()
        assert toast.get_attribute("aria-live") in ("polite", "assertive")  # errors are announced
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
        names = [n.strip() for n in page.get_by_role("tab").all_inner_texts() if n.strip()]
        assert len(names) >= 3, names
        for name in names:
            page.get_by_role("tab", name=name, exact=True).click()
            page.wait_for_timeout(500)
            found[name] = violations(page)
    finally:
        context.close()
    assert not any(found.values()), {tab: v for tab, v in found.items() if v}
