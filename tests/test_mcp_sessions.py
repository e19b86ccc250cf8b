"""MCP callers cannot change what other callers see (issue 22, item 2).

Gradio's MCP server calls the app through one loopback gradio_client, so every agent's queued call arrives in
the same session. The session-changing endpoints are therefore not MCP tools (still callable by name from
gradio_client), and a search that arrives through MCP, or without a session of its own, serves the Space's
collection, even when that shared session (or the caller's own) has built one.
"""

from __future__ import annotations

import ast
import asyncio

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from test_app import launch_app, make_client, shapes_collection
from test_build_tab import shapes_archive

from rag.config import Settings
from rag.startup import open_pipeline

SESSION_CHANGING = {"build", "cancel_build", "publish", "create_space", "serve_collection", "use_space_collection"}
SEARCHES = {"search_text", "search_image", "search", "similar_to", "duplicates", "info", "thumbnail"}


@pytest.fixture(scope="module")
def served(tiny_clip_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("mcp-sessions")
    collection = shapes_collection(root / "images", root / "collection", tiny_clip_dir, n=12)
    pipeline = open_pipeline(Settings(cache_dir=root / "cache"), collection_dir=collection, with_captioner=False)
    demo, url = launch_app(pipeline)
    yield url
    demo.close()


async def _as_an_agent(url: str) -> tuple[set[str], object, object, object]:
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    async with streamablehttp_client(url.rstrip("/") + "/gradio_api/mcp/") as (read, write, _):
        async with ClientSession(read, write) as session:
            await session.initialize()
            tools = {tool.name for tool in (await session.list_tools()).tools}
            build = await session.call_tool("build", {"archive": "x.zip", "dataset": "", "split": "train",
                                                      "image_column": "", "caption_column": "", "label_column": "",
                                                      "label_from_folder": True, "limit": 0})
            found = await session.call_tool("search_text", {"query": "red circle", "k": 5})
            info = await session.call_tool("info", {})
            return tools, build, found, info


def labels_of(result) -> set[str]:
    _, data = ast.literal_eval(result.content[0].text)  # Gradio's MCP server sends the outputs as one literal
    return {hit["label"] for hit in data["hits"]}


def test_agents_get_no_session_changing_tool_and_search_the_space(served, tmp_path):
    builder = make_client(served, tmp_path / "builder")
    built = builder.predict(handle_file(str(shapes_archive(tmp_path / "mine.zip", n=6))), "", "train", "", "", "",
                            True, 0, api_name="/build")  # still callable by name from gradio_client
    assert built["ok"] and builder.predict(api_name="/info")["rows"] == 6

    tools, build, found, info = asyncio.run(_as_an_agent(served))
    assert SEARCHES <= tools and not tools & SESSION_CHANGING, sorted(tools)
    assert build.isError  # not a tool: an agent cannot call it by name either
    assert not found.isError and all(" " in label for label in labels_of(found))  # "red circle": the Space's labels
    assert "'rows': 12" in info.content[0].text


def test_a_session_seen_through_mcp_serves_the_space_collection(served, tmp_path):
    """The MCP loopback client marks its calls (x-gradio-user: mcp): even in a session that built, they search
    the Space's collection, and they may not build."""
    owner_of_session = make_client(served, tmp_path / "own")
    owner_of_session.predict(handle_file(str(shapes_archive(tmp_path / "s.zip", n=6))), "", "train", "", "", "",
                             True, 0, api_name="/build")
    assert owner_of_session.predict(api_name="/info")["rows"] == 6
    as_mcp = Client(served, verbose=False, download_files=str(tmp_path / "mcp"), analytics_enabled=False,
                    headers={"x-gradio-user": "mcp"})
    as_mcp.session_hash = owner_of_session.session_hash  # the one session every agent shares
    _, found = as_mcp.predict("red circle", 5, api_name="/search_text")
    assert all(" " in hit["label"] for hit in found["hits"])
    with pytest.raises(AppError, match="not available through MCP"):
        as_mcp.predict(handle_file(str(shapes_archive(tmp_path / "t.zip", n=4))), "", "train", "", "", "", True, 0,
                       api_name="/build")
    assert owner_of_session.predict(api_name="/info")["rows"] == 6  # the caller's own session is unchanged
