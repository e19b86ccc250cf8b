"""The README and docs/ run as written: every fenced example and every CLI command in them is extracted and executed.

* Every ```python block runs in a fresh interpreter against the test app (the Space id replaced by the local
  URL), once on a collection with captions and labels and once on one with neither: it must exit 0, print
  something and never print a traceback.
* Every ```bash block that calls curl runs as a script against the same two apps; every ```js block runs in
  Node with the pinned @gradio/client (tests/js; skipped where node or the package is missing).
* Every ``python index_build.py ...`` / ``python -m rag.evaluate ...`` line runs, in README order, through the
  real entry points (``runpy``, as ``python`` would) in one working folder, like a user following along. Hub
  dataset ids are rewritten to local folders with the same schema (testkit/hub_fixtures.py); Hub model ids load
  tiny models from a pre-filled offline HF cache; pushes land in that cache through a fake at the
  huggingface_hub function boundary, so a later ``--verify you/...`` or ``--collection you/...`` pulls them with
  the real ``snapshot_download``. Unknown flags, datasets or files fail loudly.

The blocks are read from README.md and docs/*.md (in the reading order of tests/readme_blocks.py; docs/library.md
is left to tests/test_library.py) at collection time, so an edited or added command is checked as written. Shell
lines that are not run are accounted for, each with its reason, by tests/test_docs.py and the run's summary.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import runpy
import shutil
import subprocess
import sys
import warnings
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import pytest
from testkit.fake_hub import FakeHub
from testkit.hub_fixtures import HUB_DATASETS, make_hub_fixtures
from readme_blocks import SKIP_MARK, Block, Command, cli_commands, doc_pages, read_all_blocks, uses_curl
from testkit.shapes import write_shape_folder
from test_app import launch_app, shapes_collection
from testkit.tiny_models import make_shape_images

from rag.ingest.builder import BuildOptions, build_collection
from rag.collection.reader import Collection
from rag.config import Settings
from rag.models.encoder import Encoder
from rag.ingest.sources import FolderSource
from rag.startup import open_pipeline

pytestmark = pytest.mark.slow  # one shared setup (tiny models, two apps, fixtures) then ~20 commands: > 60 s

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = read_all_blocks(ROOT)  # README.md, then docs/*.md in reading order
SPACE_ID, SPACE_URL = "you/multimodal-rag", "https://you-multimodal-rag.hf.space"
PYTHON_BLOCKS = [b for b in BLOCKS if b.lang == "python"]
CURL_BLOCKS = [b for b in BLOCKS if uses_curl(b)]
JS_BLOCKS = [b for b in BLOCKS if b.lang == "js"]
COMMANDS = [c for b in BLOCKS if b.lang == "bash" and not uses_curl(b) for c in cli_commands(b)]
COLLECTIONS = ("captioned", "bare")  # the examples must print something useful with and without captions/labels
JS_DIR = ROOT / "tests" / "js"
RAG_VARIABLES = ("RAG_COLLECTION", "RAG_REVISION", "RAG_TEXT_MODEL", "RAG_CAPTIONER", "RAG_CAPTIONER_MODEL",
                 "RAG_DEVICE", "HF_TOKEN")


def _ids(items: list) -> list[str]:
    return [item.name for item in items]


# -- offline Hub: models in the HF cache, pushes written into it -------------------------------------------


def _cache_repo(cache: Path, kind: str, repo_id: str, files: Path, revision: str = "main") -> str:
    """Lay ``files`` out as huggingface_hub caches a snapshot of ``repo_id`` at ``revision``; returns the commit."""
    digest = hashlib.sha1()
    for path in sorted(p for p in files.rglob("*") if p.is_file()):
        digest.update(path.relative_to(files).as_posix().encode() + path.read_bytes())
    commit = digest.hexdigest()
    repo = cache / f"{kind}s--{repo_id.replace('/', '--')}"
    shutil.copytree(files, repo / "snapshots" / commit, dirs_exist_ok=True)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / revision).write_text(commit)
    return commit


# -- the working folder a user would have ------------------------------------------------------------------


def _label_queries(labels: list[str | None]) -> str:
    """One JSONL query per label: the label's name, relevant = the rows carrying it."""
    rows = defaultdict(list)
    for row, label in enumerate(labels):
        if label:
            rows[label].append(row)
    return "".join(json.dumps({"query": label, "relevant": ids}) + "\n" for label, ids in sorted(rows.items()))


def _write_inputs(work: Path, shapes: Path, fixtures: dict[str, Path]) -> None:
    """The files the README's commands name: photos/ (+ .zip) + captions.csv, photo.jpg, image folders, query files."""
    write_shape_folder(work / "photos", n=24)
    shutil.move(work / "photos" / "captions.csv", work / "captions.csv")
    for i, (image, _, label) in enumerate(make_shape_images(24, seed=11)):
        (work / "tiny-imagenet" / "train" / label.replace(" ", "_")).mkdir(parents=True, exist_ok=True)
        image.save(work / "tiny-imagenet" / "train" / label.replace(" ", "_") / f"{i}.jpg")
        (work / "unlabelled").mkdir(exist_ok=True)
        image.save(work / "unlabelled" / f"img_{i:02d}.jpg")
    make_shape_images(1, seed=5)[0][0].save(work / "photo.jpg")
    shutil.make_archive(str(work / "photos"), "zip", work / "photos")  # photos.zip
    shutil.copytree(shapes, work / "shapes")
    (work / "labels.jsonl").write_text(_label_queries(Collection.open(shapes).all_labels()))
    import datasets

    valid = datasets.load_dataset(str(fixtures["zh-plus/tiny-imagenet"]), split="valid")
    names = valid.features["label"].names
    (work / "queries.jsonl").write_text(_label_queries([names[i] for i in valid["label"]]))


class Workspace:
    """Runs the README's CLI commands in order in one folder, each through its real entry point."""

    def __init__(self, root: Path, tokens: dict[str, str]) -> None:
        self.root, self.tokens, self.results = root, tokens, {}

    def rewrite(self, command: Command) -> tuple[list[str], str | None]:
        """The argv with Hub ids mapped to fixtures, or an error when the command names a dataset we cannot fake."""
        argv = [self.tokens.get(token, token) for token in command.argv[1:]]
        if "--dataset" in argv:
            dataset = argv[argv.index("--dataset") + 1]
            if not (self.root / dataset).exists() and not Path(dataset).exists():
                return argv, (f"{command.source} line {command.line} uses dataset {dataset!r}, which has no offline fixture: "
                              "add its schema to testkit/hub_fixtures.py (or mark the line '# readme-test: skip ...')")
        return argv, None

    def _execute(self, command: Command) -> tuple[int, str, str]:
        argv, problem = self.rewrite(command)
        if problem:
            return 1, "", problem
        out, err = io.StringIO(), io.StringIO()
        code = 0
        with contextlib.chdir(self.root), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
                warnings.catch_warnings(), pytest.MonkeyPatch.context() as patch:
            for name, value in command.env:  # `RAG_X=... python index_build.py ...`
                patch.setenv(name, self.tokens.get(value, value))
            warnings.filterwarnings("ignore", category=RuntimeWarning, module="runpy")
            saved, sys.argv = sys.argv, argv
            try:
                if argv[0] == "-m":
                    sys.argv = argv[1:]
                    runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
                else:
                    sys.argv = [str(ROOT / argv[0]), *argv[1:]]
                    runpy.run_path(str(ROOT / argv[0]), run_name="__main__")
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
            finally:
                sys.argv = saved
        return code, out.getvalue(), err.getvalue()

    def run(self, command: Command) -> tuple[int, str, str]:
        """Run every earlier README command not yet run (their outputs are this one's inputs), then this one."""
        for earlier in COMMANDS[: COMMANDS.index(command) + 1]:
            if earlier not in self.results and SKIP_MARK not in earlier.text:
                self.results[earlier] = self._execute(earlier)
        return self.results[command]


# -- fixtures ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def offline_hub(tmp_path_factory, tiny_clip_legacy_dir, tiny_git_dir, tiny_qwen2vl_dir):
    """An HF cache holding the README's model ids (tiny stand-ins), the fake Hub, and a clean RAG_* environment."""
    from huggingface_hub import constants

    import datasets

    root = tmp_path_factory.mktemp("offline-hub")
    cache = root / "hub"
    for repo_id, folder in {"sentence-transformers/clip-ViT-B-32": tiny_clip_legacy_dir,
                            "sentence-transformers/clip-ViT-B-32-multilingual-v1": tiny_clip_legacy_dir,
                            "microsoft/git-base-coco": tiny_git_dir,
                            "Qwen/Qwen2-VL-2B-Instruct": tiny_qwen2vl_dir}.items():
        _cache_repo(cache, "model", repo_id, Path(folder))
    fake = FakeHub()  # testkit's one fake Hub: pulls write the pushed files into this HF cache
    fake.login("you")  # the README's `you/...` repos: pushed as a user who ran `hf auth login`
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(constants, "HF_HUB_CACHE", str(cache))
        patch.setattr(constants, "HF_HUB_OFFLINE", True, raising=False)
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setattr(datasets.config, "HF_DATASETS_CACHE", root / "datasets")
        patch.setenv("RAG_CACHE_DIR", str(root / "rag-cache"))
        patch.setenv("GRADIO_TEMP_DIR", str(root / "gradio"))
        for name in RAG_VARIABLES:
            patch.delenv(name, raising=False)
        fake.install(patch)
        yield fake


@pytest.fixture(scope="module")
def shapes(tiny_clip_dir, tmp_path_factory):
    """The one fixture collection shared by the app and the README's offline evaluation (96 shapes, 12 labels)."""
    root = tmp_path_factory.mktemp("readme-shapes")
    return shapes_collection(root / "images", root / "shapes", tiny_clip_dir)


@pytest.fixture(scope="module")
def apps(shapes, tiny_clip_dir, tiny_git_dir, tmp_path_factory, offline_hub):
    """The Space served twice: on the shapes collection and on one with no captions and no labels."""
    root = tmp_path_factory.mktemp("readme-apps")
    for i, (image, _, _) in enumerate(make_shape_images(24, seed=9)):
        (root / "bare-images").mkdir(exist_ok=True)
        image.save(root / "bare-images" / f"{i:02d}.jpg")
    build_collection(FolderSource(root / "bare-images"), root / "bare", Encoder(tiny_clip_dir), BuildOptions(progress=False))
    urls, demos = {}, []
    for name, collection in (("captioned", shapes), ("bare", root / "bare")):
        settings = Settings(captioner="git", captioner_model=tiny_git_dir, cache_dir=root / f"cache-{name}")
        demo, urls[name] = launch_app(open_pipeline(settings, collection_dir=collection))
        demos.append(demo)
    make_shape_images(1, seed=5)[0][0].save(root / "photo.jpg")
    shutil.make_archive(str(root / "photos"), "zip", root / "bare-images")  # photos.zip, for the in-page build example
    yield SimpleNamespace(urls=urls, cwd=root)
    for demo in demos:
        demo.close()


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from OpenMP threads, and on a busy machine their barriers cost minutes."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, shapes, offline_hub, tiny_git_dir, one_torch_thread):
    root = tmp_path_factory.mktemp("readme-work")
    fixtures = make_hub_fixtures(tmp_path_factory.mktemp("hub-datasets"))
    _write_inputs(root, shapes, fixtures)
    tokens = {dataset_id: str(path) for dataset_id, path in fixtures.items()}
    tokens["tiny-git"] = tiny_git_dir  # the placeholder name of the offline-results command
    return Workspace(root, tokens)


def _example(block: Block, url: str) -> str:
    """The block with the example Space (id or URL) pointing at the local app; any other Space fails loudly.

    A Python fragment that uses ``client`` without making one continues the client example: it gets one.
    """
    text = block.text.replace(SPACE_URL, url.rstrip("/"))
    if block.lang == "python" and re.search(r"\bclient\.", text) and "Client(" not in text:
        text = f'from gradio_client import Client, handle_file\nclient = Client("{SPACE_ID}")\n' + text
    text = re.sub(r"([\"'])[\w-]+/" + re.escape(SPACE_ID.split("/")[1]) + r"\1", lambda m: f'"{url}"', text)  # any owner's copy
    leftover = re.search(r"[\w-]+\.hf\.space|(Client|Client\.connect)\(\s*[\"'][\w.-]+/[\w.-]+[\"']", text)
    if leftover:
        pytest.fail(f"{block.source} block at line {block.line} calls {leftover.group(0)!r}: use {SPACE_ID!r} / {SPACE_URL!r}")
    return text


def _check_output(block: Block, proc: subprocess.CompletedProcess) -> None:
    shown = f"{block.source} {block.lang} block at line {block.line} ({block.heading}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0, shown
    assert proc.stdout.strip(), "printed nothing: " + shown
    assert "Traceback" not in proc.stdout + proc.stderr, shown


# -- tests -------------------------------------------------------------------------------------------------


def test_readme_shows_every_way_in_and_the_schemas_of_its_datasets():
    front = [b for b in BLOCKS if b.source == "README.md"]  # the front door itself shows one example of each way in
    assert any(b.lang == "python" and "gradio_client" in b.text for b in front), "no Python client example"
    assert any(uses_curl(b) and "/gradio_api/call/" in b.text for b in front), "no raw HTTP (curl) example"
    assert any(b.lang == "js" and "@gradio/client" in b.text for b in front), "no JavaScript client example"
    assert any(b.lang == "python" and "/gradio_api/mcp/" in b.text for b in front), "no MCP example"
    assert any(c.argv[1] == "index_build.py" for c in COMMANDS) and any("rag.evaluate" in c.argv for c in COMMANDS)
    text = "\n".join(page.read_text(encoding="utf-8") for page in doc_pages(ROOT))
    used = {c.argv[c.argv.index("--dataset") + 1] for c in COMMANDS if "--dataset" in c.argv and SKIP_MARK not in c.text}
    assert used <= set(HUB_DATASETS), f"datasets without an offline fixture: {used - set(HUB_DATASETS)}"
    for dataset_id, (kind, splits) in HUB_DATASETS.items():
        row = next((line for line in text.splitlines() if line.startswith(f"| `{dataset_id}`")), None)
        assert row, f"neither README.md nor docs/ has a schema row for {dataset_id}"
        columns, listed_splits = row.split("|")[2], row.split("|")[3]
        for split in splits:
            assert f"`{split}`" in listed_splits, (dataset_id, split)
        assert "`image`" in columns and ("`text`" in columns or "`caption_0`" in columns or "`label`" in columns)


@pytest.mark.parametrize("collection", COLLECTIONS)
@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=_ids(PYTHON_BLOCKS))
def test_python_example_runs_against_the_app(block, collection, apps):
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", _example(block, apps.urls[collection])], cwd=apps.cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    _check_output(block, proc)


@pytest.mark.parametrize("collection", COLLECTIONS)
@pytest.mark.parametrize("block", CURL_BLOCKS, ids=_ids(CURL_BLOCKS))
def test_curl_example_runs_against_the_app(block, collection, apps):
    if not shutil.which("curl"):
        pytest.skip("curl is not installed")
    script = "set -euo pipefail\n" + _example(block, apps.urls[collection])
    proc = subprocess.run(["bash", "-c", script], cwd=apps.cwd, capture_output=True, text=True, timeout=300)
    _check_output(block, proc)
    for line in proc.stdout.splitlines():  # each "data:" payload is the endpoint's JSON output
        json.loads(line)


@pytest.mark.parametrize("collection", COLLECTIONS)
@pytest.mark.parametrize("block", JS_BLOCKS, ids=_ids(JS_BLOCKS))
def test_javascript_example_runs_against_the_app(block, collection, apps, tmp_path):
    if not shutil.which("node") or not (JS_DIR / "node_modules" / "@gradio" / "client").is_dir():
        pytest.skip("node or tests/js/node_modules missing (scripts/setup.sh --dev installs @gradio/client)")
    (tmp_path / "node_modules").symlink_to(JS_DIR / "node_modules")
    (tmp_path / "example.mjs").write_text(_example(block, apps.urls[collection]))
    proc = subprocess.run(["node", str(tmp_path / "example.mjs")], cwd=apps.cwd, capture_output=True, text=True,
                          timeout=300)
    _check_output(block, proc)


@pytest.mark.parametrize("command", COMMANDS, ids=_ids(COMMANDS))
def test_cli_command_runs_as_written(command, workspace):
    if SKIP_MARK in command.text:  # e.g. a command that needs a cluster: `... # readme-test: skip (needs a Ray cluster)`
        pytest.skip("readme-test: skip " + (command.text.split(SKIP_MARK, 1)[1].strip() or "marked in the README"))
    code, out, err = workspace.run(command)
    assert code == 0, f"{command.source} line {command.line}: {command.text}\nexit {code}\n{out[-3000:]}\n{err[-3000:]}"
