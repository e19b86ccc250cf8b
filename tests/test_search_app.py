"""/search and /duplicates served by the app (gradio_client), and every endpoint as an MCP tool (official mcp client).

What an API user or an agent notices: /search takes the contract's parameters (query, image, image_weight, k,
offset, threshold, filters) and reports the parsed terms; pages continue; /duplicates returns groups; the MCP
server lists the seven tools with documented parameters, and a filtered search through it returns hits
that pass the filter; examples on the page come from the collection.
"""

from __future__ import annotations

import ast
import asyncio
import base64
import io
import json
import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import httpx
import pytest
from PIL import Image
from gradio_client.exceptions import AppError
from test_app import launch_app, make_client, shapes_collection

from rag.config import Settings
from rag.startup import open_pipeline

TOOLS = {"search_text", "search_image", "search", "similar_to", "describe", "duplicates", "info", "thumbnail"}
SEARCH_PARAMETERS = ["query", "image", "image_weight", "k", "offset", "threshold", "filters"]


@pytest.fixture(scope="module")
def pipeline(tiny_clip_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("search-app")
    out = shapes_collection(root / "images", root / "collection", tiny_clip_dir)
    return open_pipeline(Settings(cache_dir=root / "cache"), collection_dir=out, with_captioner=False)


@pytest.fixture(scope="module")
def served(pipeline):
    demo, url = launch_app(pipeline)
    yield url
    demo.close()


@pytest.fixture(scope="module")
def client(served, tmp_path_factory):
    return make_client(served, tmp_path_factory.mktemp("search-downloads"))


def search(client, **kwargs):
    arguments = {"query": "", "image": None, "image_weight": 1, "k": 10, "offset": 0, "threshold": 0, "filters": "",
                 **kwargs}
    return client.predict(**arguments, api_name="/search")


def test_search_endpoint_takes_the_contract_parameters(client):
    endpoint = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/search"]
    assert [p["parameter_name"] for p in endpoint["parameters"]] == SEARCH_PARAMETERS


def test_search_returns_terms_filters_and_pages(client):
    gallery, data = search(client, query='red circle - 0.5*"blue"', k=6,
                           filters=json.dumps({"photographer": ["p0", "p1"]}))
    assert data["terms"] == [{"kind": "text", "value": "red circle", "weight": 1.0},
                             {"kind": "text", "value": "blue", "weight": -0.5}]
    assert data["filters"] == {"photographer": {"in": ["p0", "p1"]}} and data["k"] == 6 and data["offset"] == 0
    assert len(gallery) == len(data["hits"]) == 6 and [h["rank"] for h in data["hits"]] == list(range(1, 7))
    assert all(h["metadata"]["photographer"] in ("p0", "p1") for h in data["hits"])
    _, page2 = search(client, query='red circle - 0.5*"blue"', k=6, offset=6,
                      filters=json.dumps({"photographer": ["p0", "p1"]}))
    _, both = search(client, query='red circle - 0.5*"blue"', k=12, filters=json.dumps({"photographer": ["p0", "p1"]}))
    assert [h["id"] for h in data["hits"] + page2["hits"]] == [h["id"] for h in both["hits"]]
    assert [h["rank"] for h in page2["hits"]] == list(range(7, 13))


def test_search_errors_reach_the_api_user_as_messages(client):
    with pytest.raises(AppError, match="Unknown filter column 'colour'"):
        search(client, query="red", filters='{"colour": "red"}')
    with pytest.raises(AppError, match="no positive term"):
        search(client, query="- red")


def test_duplicates_endpoint_returns_groups(client, pipeline):
    data = client.predict(threshold=0.5, max_groups=3, api_name="/duplicates")
    assert set(data) >= {"groups", "threshold", "total_groups", "pairs"} and 1 <= len(data["groups"]) <= 3
    for group in data["groups"]:
        assert len(group["ids"]) >= 2 and 0.5 <= group["min_score"] <= 1.0
        assert [row["id"] for row in group["rows"]] == group["ids"]
    with pytest.raises(AppError, match="between 0.5 and 1"):
        client.predict(threshold=0.1, max_groups=3, api_name="/duplicates")


def test_examples_come_from_the_collection(served):
    config = httpx.get(served.rstrip("/") + "/config", timeout=30).json()
    dataset_samples = [str(c.get("props", {}).get("samples")) for c in config["components"]
                       if c.get("type") == "dataset"]
    text = " ".join(dataset_samples)
    assert "red circle" in text or "blue square" in text  # labels of this collection
    assert "anjing" not in text  # the tiny CLIP is not multilingual: no Indonesian examples


async def _mcp_round_trip(url: str) -> tuple[list, object, object]:
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    async with streamablehttp_client(url) as (read, write, _):
        async with ClientSession(read, write) as session:
            await session.initialize()
            tools = (await session.list_tools()).tools
            result = await session.call_tool(
                "search", {"query": "green triangle", "k": 5, "filters": '{"photographer": "p2"}',
                           "offset": 0, "threshold": 0, "image_weight": 1},
            )
            picture = await session.call_tool("thumbnail", {"row_id": 3})
            return tools, result, picture


def test_every_endpoint_is_an_mcp_tool_and_search_works_through_it(served):
    tools, result, picture = asyncio.run(_mcp_round_trip(served.rstrip("/") + "/gradio_api/mcp/"))
    by_name = {tool.name: tool for tool in tools}
    assert TOOLS <= set(by_name), sorted(by_name)
    search_tool = by_name["search"]
    assert list(search_tool.inputSchema["properties"]) == SEARCH_PARAMETERS
    assert "eq, in, contains, min, max" in search_tool.inputSchema["properties"]["filters"]["description"]
    assert search_tool.inputSchema["properties"]["k"]["type"] == "number"
    assert all(by_name[name].description for name in TOOLS)
    assert not result.isError, result.content
    texts = [c.text for c in result.content if c.type == "text"]
    gallery, data = ast.literal_eval(texts[0])  # Gradio's MCP server sends the outputs as one Python literal
    assert len(data["hits"]) == 5 and all(h["metadata"]["photographer"] == "p2" for h in data["hits"])
    assert len(gallery) == 5 and all("/gradio_api/file=" in item["image"]["url"] for item in gallery)
    assert httpx.get(gallery[0]["image"]["url"], timeout=30).headers["content-type"].startswith("image/")
    # /thumbnail gives a multimodal agent the image itself, inline, not a URL to fetch
    assert not picture.isError, picture.content
    inline = [c for c in picture.content if c.type == "image"]
    assert len(inline) == 1 and inline[0].mimeType.startswith("image/")
    assert Image.open(io.BytesIO(base64.b64decode(inline[0].data))).size[0] > 0


def test_filter_controls_write_the_json_that_search_takes():
    from ui.filter_controls import filters_json

    assert json.loads(filters_json(["dog"], "year", "min", "2000")) == {"label": ["dog"], "year": {"min": 2000}}
    assert json.loads(filters_json([], "photographer", "in", "p0, p1")) == {"photographer": {"in": ["p0", "p1"]}}
    assert json.loads(filters_json(None, "source", "contains", "2000")) == {"source": {"contains": "2000"}}
    assert filters_json(None, None, "contains", "") == "" and filters_json([], "year", "min", "  ") == ""
