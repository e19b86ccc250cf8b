"""The Build tab tells the truth (issue 23, items 1, 8, 9, 12): the place in line and the progress show in the
tab while a build runs, Cancel says what happened (and is off when nothing runs), skipped files are named, the
uploaded archive is gone once its build ends, the owner's section and Publish wait for the right sign-in.

Builds are held at a known point by a threading.Event gate on the encoder's progress (or on the map step), never
by a clock; each browser check waits on what a visitor would see.
"""

from __future__ import annotations

import os
import threading
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from test_app import launch_app, make_client
from test_browser import CHROMIUM, browser  # noqa: F401 - fixture
from test_build_tab import shapes_archive
from test_browser import DESKTOP, open_page
from testkit.shapes import build_shapes, write_shape_folder

import rag.space.session_build as session_build
from rag.config import Settings
from rag.explore import map_file
from rag.startup import open_pipeline
from ui.build_handlers import BuildHandlers

needs_chromium = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is missing: apt-get install -y chromium")
GATE_SECONDS = 180  # the longest a test waits for a build to reach its gate (2 shared cores can be slow)


@pytest.fixture(scope="module")
def served(tiny_clip_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("page-build")
    collection = build_shapes(write_shape_folder(root / "images", n=24), root / "collection", tiny_clip_dir)
    pipeline = open_pipeline(Settings(cache_dir=root / "cache"), collection_dir=collection, with_captioner=False)
    demo, url = launch_app(pipeline)
    yield SimpleNamespace(demo=demo, url=url)
    demo.close()


class Gate:
    """Holds the build that reaches it until opened; ``reached`` tells the test it is there."""

    def __init__(self) -> None:
        self.reached, self.opened = threading.Event(), threading.Event()

    def hold(self) -> None:
        self.reached.set()
        self.opened.wait(GATE_SECONDS)


@pytest.fixture
def encoding_gate(monkeypatch):
    """Holds a build after its first batch is encoded (the progress line has images/s by then)."""
    gate, real = Gate(), session_build._Meter.__call__

    def report_then_hold(meter, done: int, total: int) -> None:
        real(meter, done, total)
        if 0 < done < total and not gate.reached.is_set():
            gate.hold()

    monkeypatch.setattr(session_build._Meter, "__call__", report_then_hold)
    yield gate
    gate.opened.set()


@pytest.fixture
def map_gate(monkeypatch):
    """Holds a build at the start of its map step (after every image is encoded)."""
    gate, real = Gate(), map_file.compute_layout

    def hold_then_layout(*args, **kwargs):
        gate.hold()
        return real(*args, **kwargs)

    monkeypatch.setattr(map_file, "compute_layout", hold_then_layout)
    yield gate
    gate.opened.set()


def build_page(browser, url: str):  # noqa: F811
    """The Build tab, opened as test_page_truth opens the page (outside requests refused). Routed requests wait for
    this thread: a test blocks on a gate's threading.Event only once the page shows the build is at that gate."""
    context, page = open_page(browser, url, DESKTOP)
    page.set_default_timeout(GATE_SECONDS * 1000)
    page.get_by_role("tab", name="Build your own").click()
    page.locator("#build-button").wait_for()
    return context, page


def upload_and_open(browser, url: str, archive: Path):  # noqa: F811
    context, page = build_page(browser, url)
    page.locator("#build-archive input[type=file]").set_input_files(str(archive))
    # the file's name shows in two parts ("first", ".zip"), on one line or two: compare without the white space
    page.wait_for_function("n => document.querySelector('#build-archive').textContent.replace(/\\s/g, '').includes(n)",
                           arg=archive.name)
    return context, page


def status_says(page, text: str) -> None:
    page.wait_for_function("t => document.querySelector('#build-status').innerText.includes(t)", arg=text)


@pytest.mark.browser
@needs_chromium
def test_place_in_line_then_progress_show_in_the_tab(browser, served, encoding_gate, tmp_path):  # noqa: F811
    first, page = upload_and_open(browser, served.url, shapes_archive(tmp_path / "first.zip", n=120))
    second, waiting = upload_and_open(browser, served.url, shapes_archive(tmp_path / "second.zip", n=6))
    page.locator("#build-button").click()
    status_says(page, "images/s")  # "8 / 120 images · … images/s · about N s left", on the tab's status line
    assert encoding_gate.reached.wait(GATE_SECONDS)  # held right after that line was written
    line = page.locator("#build-status").inner_text()
    assert "/ 120 images" in line and "s left" in line, line
    assert page.locator("#build-status").is_visible() and page.locator("#build-button").is_disabled()
    page.screenshot(path=str(tmp_path / "mid-build.png"))
    waiting.locator("#build-button").click()
    status_says(waiting, "Waiting: 1 build ahead of yours")
    encoding_gate.opened.set()
    status_says(page, "120 images")
    status_says(waiting, "6 images")
    assert "Waiting" not in waiting.locator("#build-status").inner_text()
    first.close(), second.close()


@pytest.mark.browser
@needs_chromium
def test_cancel_is_off_until_a_build_runs(browser, served):  # noqa: F811
    context, page = build_page(browser, served.url)
    assert page.locator("#build-cancel").is_disabled()
    context.close()


@pytest.mark.browser
@needs_chromium
def test_cancel_during_the_map_says_the_build_was_cancelled(browser, served, map_gate, tmp_path):  # noqa: F811
    context, page = upload_and_open(browser, served.url, shapes_archive(tmp_path / "mapped.zip", n=12))
    page.locator("#build-button").click()
    status_says(page, "drawing their map")  # every image is encoded; the map step is next
    assert map_gate.reached.wait(GATE_SECONDS)
    page.locator("#build-cancel").click()
    status_says(page, "Cancelling")
    map_gate.opened.set()
    status_says(page, "Build cancelled; nothing was kept.")
    text = page.locator("#build-status").inner_text()
    assert "session ended" not in text
    assert page.locator("#build-cancel").is_disabled() and page.locator("#build-button").is_enabled()
    context.close()


@pytest.mark.browser
@needs_chromium
def test_skipped_files_are_named_with_their_reason(browser, served, tmp_path):  # noqa: F811
    context, page = upload_and_open(browser, served.url, shapes_archive(tmp_path / "skips.zip", n=6))
    page.locator("#build-button").click()
    status_says(page, "2 skipped")
    text = page.locator("#build-status").inner_text()
    assert "../escape.png (" in text and "__MACOSX/._circle (" in text, text
    assert "skips" not in page.locator("#build-archive").text_content()  # the upload is gone: not shown
    context.close()


@pytest.mark.browser
@needs_chromium
def test_owner_section_hidden_and_publish_off_for_a_visitor(browser, served):  # noqa: F811
    context, page = build_page(browser, served.url)
    page.get_by_text("Keep it: publish and get your own Space").click()
    page.get_by_text("Sign in with Hugging Face to publish").wait_for()
    assert page.locator("#publish-button").is_disabled()
    assert page.get_by_text("Owner: change what this Space serves").count() == 0
    assert not page.locator("#owner-section").is_visible()
    context.close()


def uploads_named(served, name: str) -> list[Path]:
    return list(Path(served.demo.GRADIO_CACHE).rglob(name))


def bomb(path: Path) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("a.bmp", b"\0" * 20_000_000)
    return path


def build_args(archive: Path) -> tuple:
    return (handle_file(str(archive)), "", "train", "", "", "", False, 0)


def test_the_upload_is_deleted_when_its_build_ends(served, tmp_path):
    client = make_client(served.url, tmp_path / "dl")
    assert client.predict(*build_args(shapes_archive(tmp_path / "up-ok.zip", n=4)), api_name="/build")["ok"]
    assert uploads_named(served, "up-ok.zip") == []
    broken = tmp_path / "up-broken.zip"
    with zipfile.ZipFile(broken, "w") as archive:
        archive.writestr("a.jpg", b"not a jpeg")
    assert client.predict(*build_args(broken), api_name="/build")["ok"] is False
    assert uploads_named(served, "up-broken.zip") == []
    with pytest.raises(AppError, match="compression bomb"):
        client.predict(*build_args(bomb(tmp_path / "up-bomb.zip")), api_name="/build")
    assert uploads_named(served, "up-bomb.zip") == []


def test_the_upload_is_deleted_when_its_build_is_cancelled(served, encoding_gate, tmp_path):
    client = make_client(served.url, tmp_path / "dl")
    assert client.predict(api_name="/cancel_build")["message"].startswith("Nothing is running")
    job = client.submit(*build_args(shapes_archive(tmp_path / "up-cancel.zip", n=40)), api_name="/build")
    assert encoding_gate.reached.wait(GATE_SECONDS)
    assert uploads_named(served, "up-cancel.zip"), "the upload went before its build ended"
    answer = client.predict(api_name="/cancel_build")
    assert answer["cancelling"] and answer["message"].startswith("Cancelling")
    encoding_gate.opened.set()
    result = job.result(timeout=GATE_SECONDS)
    assert result["cancelled"] and result["error"] == "Build cancelled; nothing was kept."
    assert uploads_named(served, "up-cancel.zip") == []


def test_owner_and_publish_checks_follow_the_sign_in(monkeypatch, tmp_path):
    from rag.space.sessions import SessionRegistry

    handlers = BuildHandlers(SessionRegistry(None, tmp_path), Settings(admins=("ada",)))
    monkeypatch.setenv("SPACE_AUTHOR_NAME", "owner")
    assert handlers.is_owner(SimpleNamespace(username="owner")) and handlers.is_owner(SimpleNamespace(username="ada"))
    assert not handlers.is_owner(SimpleNamespace(username="visitor")) and not handlers.is_owner(None)
    request = SimpleNamespace(session_hash="nobody-built", headers={}, query_params={})
    assert handlers.may_publish(request, None) == (False, "Sign in with Hugging Face to publish.")
    ready, hint = handlers.may_publish(request, SimpleNamespace(username="visitor"))
    assert not ready and "Build a collection" in hint


def test_the_status_names_the_first_skipped_files_and_counts_the_rest():
    from ui.build_help import skipped_line

    skipped = [{"source": f"bad{i}.jpg", "reason": "not an image"} for i in range(5)]
    line = skipped_line(skipped)
    assert line.startswith("5 skipped: `bad0.jpg` (not an image), `bad1.jpg` (not an image), `bad2.jpg`")
    assert "bad3.jpg" not in line and line.endswith("and 2 more (listed in the JSON below)")
    assert skipped_line([]) == "nothing skipped"
