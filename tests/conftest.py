"""Shared pytest setup: the Hugging Face Hub is off limits, test markers, and tiny models built once per session."""

from __future__ import annotations

import os
import pytest

# Never reach for the Hub: every model a test uses is built on the spot by testkit/tiny_models.py.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no "Loading weights" bars in test output

from testkit.fake_hub import fake_hub  # noqa: E402,F401  (the `fake_hub` fixture: one fake Hub for every test)
from testkit.tiny_models import make_tiny_clip, make_tiny_git, make_tiny_qwen2vl, to_legacy_clip_layout  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    """Register the markers used across the suite."""
    config.addinivalue_line("markers", "browser: headless Chromium tests")
    config.addinivalue_line("markers", "slow: slower tests")


# In CI (.ci/run sets RAG_TESTS_STRICT=1) a test skipped for a missing tool (Chromium, node, curl, Ray, ...) is a
# failure: a clean machine that lacks a tool must not pass green. Only skips by design, named here, stay skips.
STRICT_SKIPS = os.environ.get("RAG_TESTS_STRICT") == "1"
SKIPS_BY_DESIGN = ("needs a Ray cluster", "tested by tests/", "readme-test: skip")


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    return str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Under RAG_TESTS_STRICT=1, turn a skip that is not by design into a failure naming its reason."""
    outcome = yield
    report = outcome.get_result()
    if STRICT_SKIPS and report.skipped and not hasattr(report, "wasxfail"):
        reason = _skip_reason(report)
        if not any(allowed in reason for allowed in SKIPS_BY_DESIGN):
            report.outcome = "failed"
            report.longrepr = f"skipped under RAG_TESTS_STRICT=1 (CI must have every tool): {reason}"


DOC_TESTS = {"test_readme.py", "test_docs.py", "test_readme_blocks.py"}
_DOCS_COLLECTED = pytest.StashKey[bool]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Remember whether this run collected the README/docs tests (their summary is printed only then)."""
    config.stash[_DOCS_COLLECTED] = any(item.path.name in DOC_TESTS for item in items)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """List every shell line of README.md and docs/ that the tests do not run, with its reason, so CI logs show it."""
    if not config.stash.get(_DOCS_COLLECTED, False):
        return
    from readme_blocks import summary_lines

    terminalreporter.section("README.md and docs/: shell lines not run by the tests, and why")
    for line in summary_lines():
        terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny CLIP trained on shape images, saved as a SentenceTransformer folder (modern layout)."""
    return make_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))


@pytest.fixture(scope="session")
def tiny_clip_legacy_dir(tiny_clip_dir: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The same tiny CLIP in the legacy layout of sentence-transformers/clip-ViT-B-32 (0_CLIPModel/)."""
    return to_legacy_clip_layout(tiny_clip_dir, tmp_path_factory.mktemp("tiny_clip_legacy"))


@pytest.fixture(scope="session")
def tiny_git_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny GIT captioner trained on shape images, loadable like microsoft/git-base-coco."""
    return make_tiny_git(tmp_path_factory.mktemp("tiny_git"))


@pytest.fixture(scope="session")
def tiny_qwen2vl_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny random Qwen2-VL, laid out like Qwen/Qwen2-VL-2B-Instruct."""
    return make_tiny_qwen2vl(tmp_path_factory.mktemp("tiny_qwen2vl"))
