"""Create (retrieval-augmented image generation) end to end: the app served around the tiny CLIP and a tiny
random-weight latent-consistency pipeline (testkit.tiny_diffusion), driven through gradio_client and MCP.

What a user would notice: references that match the query (and their metadata) in the prompt, the best one
as the starting image, nothing of the collection when the switch is off, the same image for the same seed,
one clear sentence for each bad input, a flagged image replaced by a message, no Create at all when it is
switched off; and the prompt staying inside the text encoder's 77 tokens with what was cut reported.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import subprocess
import sys
from pathlib import Path

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import numpy as np
import pytest
import torch
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from PIL import Image
from test_app import launch_app, make_client, shapes_collection
from test_browser import CHROMIUM, browser  # noqa: F401 - the Chromium fixture
from testkit.tiny_diffusion import TINY_SIDE, force_flag, make_tiny_diffusion, make_tiny_taesd, unforce_flag

import app
from rag.config import Settings
from rag.create import FLAGGED_MESSAGE, CreateOptions, Creator, Generator, loaded_generators
from rag.create import generator as generator_module
from rag.create.fusion import fuse, prompt_parts, token_counter
from rag.errors import InvalidInput, ServiceError
from rag.pipeline import Hit
from rag.startup import open_pipeline

CREATE_PARAMETERS = ["query", "image", "k", "strength", "guidance", "steps", "seed", "use_context"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on a shared 2-core machine two OpenMP threads spin against each other (10x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_diffusion(tmp_path_factory) -> str:
    return make_tiny_diffusion(tmp_path_factory.mktemp("tiny-diffusion"))


@pytest.fixture(scope="module")
def create_env(tiny_diffusion):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAG_CREATE", "on")
        patch.setenv("RAG_CREATE_MODEL", tiny_diffusion)
        patch.setenv("RAG_CREATE_SIZE", str(TINY_SIDE))
        patch.setenv("RAG_CONTEXT_COLUMNS", "photographer, no_such_column")
        yield patch


@pytest.fixture(scope="module")
def shapes(tiny_clip_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("create-shapes")
    return root / "images", shapes_collection(root / "images", root / "collection", tiny_clip_dir, n=48)


@pytest.fixture(scope="module")
def pipeline(shapes, tmp_path_factory):
    return open_pipeline(Settings(cache_dir=tmp_path_factory.mktemp("create-cache")), collection_dir=shapes[1],
                         with_captioner=False)


@pytest.fixture(scope="module")
def served(pipeline, create_env):
    demo, url = launch_app(pipeline)
    yield url
    demo.close()


@pytest.fixture(scope="module")
def client(served, tmp_path_factory):
    return make_client(served, tmp_path_factory.mktemp("create-downloads"))


def create(client, **kwargs):
    return client.predict(**kwargs, api_name="/create")


def pixels(path: str) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


# -- through gradio_client ----------------------------------------------------------------------------------


def test_a_query_retrieves_references_fuses_their_metadata_and_starts_from_the_best(client):
    image, data = create(client, query="red circle")  # every other parameter has its default
    refs = data["references"]
    assert len(refs) == 3 and all({"id", "score", "captions"} <= set(r) for r in refs)
    assert [r["score"] for r in refs] == sorted((r["score"] for r in refs), reverse=True)
    assert refs[0]["label"] == "red circle"
    assert data["init_id"] == refs[0]["id"] and data["init"] == "reference"
    assert data["prompt"].startswith("red circle")
    for ref in refs:  # RAG_CONTEXT_COLUMNS=photographer: each reference's value reaches the prompt
        assert ref["metadata"]["photographer"] in data["prompt"].split(", ")
    assert data["context_columns"] == ["photographer"] and data["missing_context_columns"] == ["no_such_column"]
    assert data["prompt_tokens"] <= data["prompt_budget"] == 75
    assert data["seed"] == 0 and data["model"] == Path(os.environ["RAG_CREATE_MODEL"]).name  # a local folder: no server path and data["seconds"] > 0
    assert data["flagged"] is False and data["safety"]["method"] == "Stable Diffusion safety checker"
    assert pixels(image).shape == (TINY_SIDE, TINY_SIDE, 3)


def test_an_image_alone_finds_itself_first_and_its_neighbours_captions_make_the_prompt(client, shapes, pipeline):
    picture = shapes[0] / "set_a" / "img_001.jpg"
    _, data = create(client, query="", image=handle_file(str(picture)), k=4)
    refs = data["references"]
    assert len(refs) == 4 and refs[0]["score"] > 0.99  # the collection's own copy of the image
    assert data["init_id"] == refs[0]["id"]
    assert refs[0]["captions"][0] in data["prompt"] and not data["prompt"].startswith(",")


def test_without_context_the_prompt_is_the_query_alone_and_nothing_is_retrieved(client, shapes):
    _, data = create(client, query="red circle", use_context=False)
    assert data["prompt"] == "red circle" and data["references"] == []
    assert data["init_id"] is None and data["init"] is None  # text to image: the base generation
    assert not any(value in data["prompt"] for value in ("p0", "p1", "p2"))
    _, data = create(client, query="a blue square", image=handle_file(str(shapes[0] / "set_b" / "img_002.jpg")),
                     use_context=False)
    assert data["init"] == "your image" and data["init_id"] is None and data["prompt"] == "a blue square"


def test_the_same_seed_gives_the_same_image_and_another_seed_another(client):
    first, _ = create(client, query="green triangle", seed=7)
    again, _ = create(client, query="green triangle", seed=7)
    other, _ = create(client, query="green triangle", seed=8)
    assert np.array_equal(pixels(first), pixels(again))
    assert not np.array_equal(pixels(first), pixels(other))


@pytest.mark.parametrize("arguments, message", [
    ({"query": ""}, "Describe the picture to create, or add an image"),
    ({"query": "red circle", "k": 11}, "k must be between 1 and 10; got 11."),
    ({"query": "red circle", "strength": 0}, "strength must be a number above 0 and at most 1"),
    ({"query": "red circle", "strength": 1.5}, "strength must be a number above 0 and at most 1"),
    ({"query": "red circle", "guidance": -1}, "guidance must be a number from 0 to 20"),
    ({"query": "red circle", "steps": 0}, "steps must be between 1 and 50; got 0."),
    ({"query": "red circle", "seed": -3}, "seed must be between 0 and"),
    ({"query": "x" * 1001}, "the limit is 1,000"),
])
def test_bad_input_gets_one_clear_sentence(client, arguments, message):
    with pytest.raises(AppError) as caught:
        create(client, **arguments)
    assert message in str(caught.value) and "Traceback" not in str(caught.value)


def test_a_file_that_is_not_an_image_is_refused_and_the_app_keeps_serving(client, tmp_path):
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(AppError, match="could not be read as an image|not an image|cannot identify"):
        create(client, query="red circle", image=handle_file(str(tmp_path / "notes.png")))
    assert create(client, query="red circle", k=1)[1]["references"]


def test_a_flagged_image_is_replaced_by_a_message(client):
    create(client, query="red circle", k=1)  # the generator is loaded
    served_options = CreateOptions.from_env("cpu")
    checker = next(g.safety.checker for g in loaded_generators() if g.options == served_options)
    force_flag(checker)
    try:
        image, data = create(client, query="red circle", k=1)
    finally:
        unforce_flag(checker)
    assert image is None
    assert data["flagged"] is True and data["message"] == FLAGGED_MESSAGE
    assert data["safety"]["checked"] and data["safety"]["seconds"] > 0  # the check's cost is measured


def test_create_is_an_mcp_tool_whose_image_reaches_the_agent_inline(served):
    async def call():
        from mcp import ClientSession
        from mcp.client.streamable_http import streamablehttp_client

        async with streamablehttp_client(served.rstrip("/") + "/gradio_api/mcp/") as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                tools = {tool.name: tool for tool in (await session.list_tools()).tools}
                steps: list[float] = []

                async def progress(done: float, total: float | None, message: str | None) -> None:
                    steps.append(done)

                # With a progress token (agents that show progress send one) Gradio 6.31 returns each output as
                # its own content: the image inline. Without one it packs both outputs into one text literal.
                result = await session.call_tool("create", {"query": "yellow square"}, progress_callback=progress)
                return tools, result, steps

    tools, result, steps = asyncio.run(call())
    assert list(tools["create"].inputSchema["properties"]) == CREATE_PARAMETERS
    assert not result.isError, result.content
    inline = [c for c in result.content if c.type == "image"]
    assert len(inline) == 1 and Image.open(io.BytesIO(base64.b64decode(inline[0].data))).size == (TINY_SIDE,) * 2
    texts = [c.text for c in result.content if c.type == "text"]
    assert any("'prompt': 'yellow square" in text for text in texts) and steps


def test_the_endpoint_takes_the_contract_parameters_with_defaults(client):
    endpoint = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/create"]
    parameters = {p["parameter_name"]: p for p in endpoint["parameters"]}
    assert list(parameters) == CREATE_PARAMETERS
    assert all(parameters[name]["parameter_has_default"] for name in CREATE_PARAMETERS[1:])
    assert parameters["k"]["parameter_default"] == 3 and parameters["strength"]["parameter_default"] == 0.55
    assert parameters["use_context"]["parameter_default"] is True


def test_create_off_adds_neither_the_tab_nor_the_endpoint(pipeline, monkeypatch):
    monkeypatch.setenv("RAG_CREATE", "off")
    demo = app.build_demo(pipeline)
    names = {getattr(fn, "api_name", None) for fn in demo.fns.values()}
    assert "create" not in names and "search_text" in names
    labels = {block.label for block in demo.blocks.values() if type(block).__name__ == "Tab"}
    assert "Create" not in labels and "Describe" in labels


# -- the library ----------------------------------------------------------------------------------------------


def hit(row: int, captions: list[str], **metadata) -> Hit:
    return Hit(id=row, score=0.5, captions=captions, label=None, metadata=metadata, thumbnail="")


def test_the_fusion_prompt_keeps_priority_order_within_77_tokens_and_reports_what_was_cut(tiny_diffusion):
    from transformers import CLIPTokenizer

    count = token_counter(CLIPTokenizer.from_pretrained(tiny_diffusion, subfolder="tokenizer"))
    long = "a red circle on a white background " * 12  # 84 tokens: more than the whole window
    hits = [hit(5, ["blue square", "green triangle"], philosophy="patience and balance"), hit(9, [long], philosophy="x")]
    fusion = fuse(prompt_parts("red circle", hits, ["philosophy"]), count)
    assert count(fusion.text) == fusion.tokens == fusion.budget == 75  # filled, not over
    # the query, the best reference's caption and value, then the next reference's caption cut to what fits
    assert fusion.text.startswith("red circle, blue square, patience and balance, a red circle on a white")
    assert [p.source for p in fusion.used] == ["query", "caption of row 5", "philosophy of row 5", "caption of row 9"]
    assert [p.source for p in fusion.cut] == ["caption of row 9", "philosophy of row 9", "caption of row 5"]
    assert fusion.used[3].text + " " + fusion.cut[0].text == long.strip()
    assert fusion.cut[2].text == "green triangle"
    endless = " ".join(["circle"] * 200)
    only = fuse(prompt_parts(endless, hits), count)
    assert only.used[0].source == "query" and only.tokens == 75 and only.cut[0].source == "query"


def test_a_model_without_a_safety_checker_gets_the_clip_concept_check(pipeline, tmp_path):
    folder = make_tiny_diffusion(tmp_path / "unchecked", safety_checker=False)
    creator = Creator(CreateOptions(model=folder, size=TINY_SIDE))
    creation = creator.create(pipeline, "red circle", k=1)
    assert creation.image is not None and creation.safety.method.startswith("CLIP concept check")
    concept = next(iter(creator._concept_checks.values()))
    concept.threshold = 0.0  # forced: every image's unsafe share is >= 0
    flagged = creator.create(pipeline, "red circle", k=1)
    assert flagged.image is None and flagged.to_dict()["message"] == FLAGGED_MESSAGE


def test_a_tiny_autoencoder_can_replace_the_models_own(pipeline, tiny_diffusion, tmp_path):
    vae = make_tiny_taesd(tmp_path / "taesd")
    creator = Creator(CreateOptions(model=tiny_diffusion, vae=vae, size=TINY_SIDE))
    creation = creator.create(pipeline, "red circle", k=1)
    assert creation.image.size == (TINY_SIDE, TINY_SIDE) and creation.to_dict()["vae"] == vae
    assert type(creator.generator.text2img.vae).__name__ == "AutoencoderTiny"


def test_memory_short_refuses_the_load_and_frees_a_loaded_generator(pipeline, tiny_diffusion, monkeypatch):
    options = CreateOptions(model=tiny_diffusion, size=TINY_SIDE, safety=False)
    creator = Creator(options, generator=Generator(options))  # its own generator: this test frees it
    monkeypatch.setattr(generator_module, "available_gb", lambda: 0.5)
    with pytest.raises(ServiceError, match="Not enough free memory to load the image generator"):
        creator.create(pipeline, "red circle", k=1)
    monkeypatch.setattr(generator_module, "available_gb", lambda: 64.0)
    messages: list[str] = []
    creator.create(pipeline, "red circle", k=1, status=messages.append)
    assert creator.loaded and messages and "Loading the image generator" in messages[0]
    monkeypatch.setattr(generator_module, "available_gb", lambda: 0.9)  # short after a creation: freed
    monkeypatch.setattr(generator_module, "WORKING_GB", 0.0)
    monkeypatch.setattr(generator_module, "weights_gb", lambda folder: 0.0)
    creation = creator.create(pipeline, "red circle", k=1)
    assert creation.image is not None and not creator.loaded
    assert creation.safety.method.startswith("off")


def test_a_classic_scheduler_with_too_few_steps_for_the_strength_is_refused(pipeline, tiny_diffusion):
    from diffusers import DDIMScheduler

    options = CreateOptions(model=tiny_diffusion, size=TINY_SIDE, safety=False)
    creator = Creator(options, generator=Generator(options))  # its own generator: this test changes its scheduler
    creator.warm()
    generator = creator.generator
    generator.img2img.scheduler = DDIMScheduler.from_config(generator.img2img.scheduler.config)
    generator.text2img.scheduler = generator.img2img.scheduler
    with pytest.raises(InvalidInput, match="needs at least 4 steps"):
        creator.create(pipeline, "red circle", k=1, steps=1, strength=0.3)


# -- the evaluation task --------------------------------------------------------------------------------------


def test_cmmd_is_zero_for_the_same_set_and_grows_with_the_distance_between_sets():
    from rag.evaluate.image_metrics import cmmd

    rng = np.random.default_rng(0)
    centre = rng.standard_normal(16)
    near = lambda shift: centre + shift + 0.3 * rng.standard_normal((200, 16))  # noqa: E731
    a, b, moved = near(0.0), near(0.0), near(1.5 * rng.standard_normal(16))
    assert cmmd(a, a) == pytest.approx(0.0, abs=1e-9)
    assert 0 <= cmmd(a, b) < cmmd(a, moved)
    x, y = a[:3] / np.linalg.norm(a[:3], axis=1, keepdims=True), b[:2] / np.linalg.norm(b[:2], axis=1, keepdims=True)
    k = lambda u, v: np.exp(-np.sum((u - v) ** 2) / (2 * 10.0**2))  # noqa: E731 - the definition, term by term
    direct = (np.mean([k(u, v) for u in x for v in x]) + np.mean([k(u, v) for u in y for v in y])
              - 2 * np.mean([k(u, v) for u in x for v in y]))
    assert cmmd(x, y) == pytest.approx(1000 * direct)


def test_evaluate_create_compares_the_base_model_with_the_collection_as_context(shapes, create_env, tmp_path):
    from rag import evaluate

    out = tmp_path / "report.json"
    code = evaluate.main(["--collection", str(shapes[1]), "--tasks", "create", "--sample", "2", "--seed", "3",
                          "--no-progress", "--out", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    result = report["results"]["create"]
    assert result["rows"] == 2 and set(result["by_context"]) == {"false", "true"}
    for row in result["by_context"].values():
        assert row["images"] + row["flagged"] == 2
        assert -1 <= row["clip_score"] <= 1 and row["cmmd"] >= 0
        assert row["fid"]["available"] or row["fid"]["reason"]  # offline: unavailable, with the reason
    assert result["init_from_reference"] == 1.0 and result["seeds"] == "3..4"
    assert all(example["init_id"] != example["row"] for example in result["examples"])  # held out
    assert "| no (base model) |" in report["table"] and "| yes |" in report["table"]
    default = evaluate.parse_args(["--collection", str(shapes[1])])
    assert default.tasks is None and not evaluate.TASKS["create"].by_default  # never in the default run


# -- ZeroGPU (emulated: tests/zerogpu_emulation.py's environment, device API and worker patches) --------------

ZEROGPU_SCRIPT = r'''
import json, os, sys
from pathlib import Path
spec = json.loads(sys.argv[1])
sys.path[:0] = [spec["root"], spec["root"] + "/tests"]
import zerogpu_emulation as z
work = Path(spec["work"])
z.emulate_environment(work)
os.environ.update(RAG_COLLECTION=spec["collection"], RAG_CREATE_MODEL=spec["model"], RAG_CREATE_SIZE="32",
                  RAG_CACHE_DIR=str(work / "cache"), GRADIO_TEMP_DIR=str(work / "gradio"), RAG_CAPTIONER="git",
                  RAG_CAPTIONER_MODEL=str(work / "no-captioner"))
import app
z.patch_worker()
from test_app import free_port, make_client
pipeline, captioner_error = app.load_pipeline()
demo = app.build_demo(pipeline, captioner_error=captioner_error)
_, url, _ = app.launch(demo, server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
result = {"packed_bytes": z.packed_bytes(), "startup_report": "/startup-report" in z.CALLS}
image, data = make_client(url, work / "downloads").predict(query="red circle", api_name="/create")
result.update(data={k: data[k] for k in ("init_id", "references", "flagged", "safety", "dtype", "device")},
              image=image, schedules=z.CALLS.count("/schedule"), durations=sorted(set(z.DURATIONS)))
demo.close()
print("RESULT " + json.dumps(result, default=str), flush=True)
'''


@pytest.mark.slow
def test_on_zerogpu_the_generator_is_packed_at_start_up_and_runs_inside_the_gpu_function(shapes, tiny_diffusion, tmp_path):
    from rag.create.creator import CREATE_GPU_DURATION

    root = str(app.__file__).rsplit("/", 1)[0]
    spec = {"root": root, "work": str(tmp_path), "collection": str(shapes[1]), "model": tiny_diffusion}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPACES_", "ZEROGPU_", "RAG_"))}
    env.update(HOME=str(tmp_path), HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False")
    done = subprocess.run([sys.executable, "-c", ZEROGPU_SCRIPT, json.dumps(spec)], env=env, capture_output=True,
                          text=True, timeout=540, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, done.stderr[-4000:]
    result = json.loads(lines[-1][len("RESULT "):])
    weights = sum(p.stat().st_size for p in Path(tiny_diffusion).rglob("*.safetensors"))
    assert result["startup_report"] and result["packed_bytes"] >= 0.45 * weights  # bf16 copies of the fp32 files
    assert result["schedules"] >= 1 and str(CREATE_GPU_DURATION) in result["durations"]  # inside @spaces.GPU
    data = result["data"]
    assert data["init_id"] == data["references"][0]["id"] and data["device"] == "cuda" and data["dtype"] == "bfloat16"
    assert data["safety"]["method"] == "Stable Diffusion safety checker" and not data["flagged"]
    assert pixels(result["image"]).shape == (TINY_SIDE, TINY_SIDE, 3)


# -- the tab in Chromium --------------------------------------------------------------------------------------

WATCH_PROGRESS = """() => { window.seen = [];
  new MutationObserver(() => { const t = document.body.innerText;
    for (const m of t.matchAll(/Generating: step \\d+ of \\d+[^\\n]*/g)) window.seen.push(m[0]); })
  .observe(document.body, {subtree: true, childList: true, characterData: true}); }"""


@pytest.mark.browser
@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is missing: apt-get install -y chromium")
def test_the_create_tab_in_chromium_shows_progress_and_the_result_and_passes_axe(browser, served):  # noqa: F811
    from test_accessibility import violations

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        page.goto(served)
        page.get_by_role("tab", name="Create").click()
        page.locator("#create-button").wait_for()
        found = {"empty": violations(page)}
        page.locator("#create-query textarea").fill("red circle")
        page.evaluate(WATCH_PROGRESS)
        page.locator("#create-button").click()
        page.locator("#create-status").get_by_text("Image created").wait_for()
        assert page.locator("#create-result img").count() == 1
        assert page.locator("#create-prompt textarea").input_value().startswith("red circle, ")
        assert page.locator("#create-references img").count() == 3 and page.locator("#create-init img").count() == 1
        assert "tokens." in page.locator("#create-cut").inner_text()
        seen = page.evaluate("window.seen")
        assert any("s left" in text for text in seen), seen  # the progress bar's step and time estimate
        found["result"] = violations(page)
    finally:
        context.close()
    assert not any(found.values()), found
