"""One client cannot fill the queue (issue 22, item 3): a flood of /build joins never takes the slots searches need.

The reproduction of the issue: 72 /build joins from one client, each in a fresh session, with one uploaded
archive, while a build holds the line. Builds wait in their own bounded line (RAG_BUILD_LINE_MAX places,
RAG_BUILD_PER_CLIENT per client), so the flood is refused at once instead of filling Gradio's 64-slot queue;
another visitor's /search_text answers meanwhile, and the owner's /serve_collection is not stuck behind builds.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import threading
import time
import uuid

import httpx
import pytest
from gradio_client.exceptions import AppError
from test_app import launch_app, make_client, shapes_collection
from test_build_tab import shapes_archive

from rag.config import Settings
from rag.space import session_build
from rag.startup import open_pipeline

FLOOD = 72  # the count: 8 builds running + 64 queued filled the queue before


@pytest.fixture(scope="module")
def served(tiny_clip_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("flood")
    collection = shapes_collection(root / "images", root / "collection", tiny_clip_dir, n=12)
    pipeline = open_pipeline(Settings(cache_dir=root / "cache"), collection_dir=collection, with_captioner=False)
    demo, url = launch_app(pipeline)
    yield url.rstrip("/") + "/"
    demo.close()


def build_fn_index(url: str) -> int:
    config = httpx.get(url + "config", timeout=30).json()
    return next(d["id"] for d in config["dependencies"] if d.get("api_name") == "build")


async def _join_and_wait(client: httpx.AsyncClient, url: str, body: dict, flood: dict) -> None:
    """One /build in a fresh session, as the page's client sends it: queue/join, then the session's stream."""
    session = uuid.uuid4().hex
    started = time.perf_counter()
    joined = await client.post(url + "gradio_api/queue/join", json={**body, "session_hash": session})
    flood["joins"] += 1
    if flood["joins"] == FLOOD:
        flood["all_joined"].set()
    if joined.status_code != 200:
        flood["outcomes"].append({"ok": False, "error": joined.text, "seconds": time.perf_counter() - started})
        return
    async with client.stream("GET", url + "gradio_api/queue/data", params={"session_hash": session}) as stream:
        async for line in stream.aiter_lines():
            message = json.loads(line[5:]) if line.startswith("data:") else {}
            if message.get("msg") == "process_completed":
                output = message.get("output") or {}
                built = (output.get("data") or [{}])[0] or {}
                flood["outcomes"].append({"ok": bool(message.get("success")) and bool(built.get("ok")),
                                          "error": str(output.get("error") or built.get("error") or ""),
                                          "seconds": time.perf_counter() - started})
                return


def start_flood(url: str, body: dict) -> tuple[threading.Thread, dict]:
    """Send FLOOD joins at once from one client, in a background thread; ``all_joined`` is set once every join
    has been answered (accepted into the queue, or refused)."""
    flood = {"joins": 0, "outcomes": [], "all_joined": threading.Event()}

    async def send() -> None:
        limits = httpx.Limits(max_connections=FLOOD * 2, max_keepalive_connections=FLOOD * 2)
        async with httpx.AsyncClient(timeout=300, limits=limits) as client:
            await asyncio.gather(*(_join_and_wait(client, url, body, flood) for _ in range(FLOOD)))

    thread = threading.Thread(target=lambda: asyncio.run(send()), daemon=True)
    thread.start()
    return thread, flood


def test_a_build_flood_is_refused_at_once_and_searches_keep_answering(served, tmp_path, monkeypatch, capsys):
    held, release = threading.Event(), threading.Event()
    real_build = session_build.build_collection

    def slow_build(*args, **kwargs):  # the build at the head of the line takes as long as the test needs
        held.set()
        release.wait(300)
        return real_build(*args, **kwargs)

    monkeypatch.setattr(session_build, "build_collection", slow_build)
    archive = tmp_path / "flood.zip"
    shapes_archive(archive, n=4)
    with archive.open("rb") as handle:
        uploaded = httpx.post(served + "gradio_api/upload", files=[("files", ("flood.zip", handle))], timeout=60).json()[0]
    body = {"data": [{"path": uploaded, "orig_name": "flood.zip", "meta": {"_type": "gradio.FileData"}},
                     "", "train", "", "", "", False, 0],
            "fn_index": build_fn_index(served), "event_data": None, "trigger_id": None}
    visitor = make_client(served, tmp_path / "visitor")
    quiet = []
    for query in ("red circle", "blue square", "green triangle"):
        started = time.perf_counter()
        visitor.predict(query, 5, api_name="/search_text")
        quiet.append(time.perf_counter() - started)
    flood, state = start_flood(served, body)
    outcomes = state["outcomes"]
    try:
        assert held.wait(120) and state["all_joined"].wait(120)
        latencies = []
        for query in ("red circle", "blue square", "green triangle", "red square", "blue circle"):
            started = time.perf_counter()
            _, found = visitor.predict(query, 5, api_name="/search_text")
            latencies.append(time.perf_counter() - started)
            assert len(found["hits"]) == 5
        started = time.perf_counter()
        with pytest.raises(AppError, match="Sign in as the Space's owner"):
            visitor.submit("", "", api_name="/serve_collection").result(timeout=60)  # not behind the builds
        serve_seconds = time.perf_counter() - started
    finally:
        release.set()
        flood.join(300)
    refused = [o for o in outcomes if not o["ok"]]
    assert len(outcomes) == FLOOD and len(refused) == FLOOD - 2, [o["error"] for o in outcomes][:5]
    assert all("You already have 2 builds" in o["error"] for o in refused), {o["error"] for o in refused}
    assert not any("Queue is full" in o["error"] for o in outcomes)
    refusals = [o["seconds"] for o in refused]
    with capsys.disabled():
        print(f"\nflood of {FLOOD} /build joins: {len(refused)} refused in {statistics.median(refusals):.2f} s "
              f"median, {max(refusals):.2f} s max; /search_text {statistics.median(quiet) * 1000:.0f} ms median "
              f"before the flood, {statistics.median(latencies) * 1000:.0f} ms median / "
              f"{max(latencies) * 1000:.0f} ms max during it; /serve_collection answered in {serve_seconds:.2f} s")
