"""Shared pytest setup: the Hugging Face Hub is off limits, test markers, and tiny models built once per session."""

from __future__ import annotations

import os
import pytest

# Never reach for the Hub: every model a test uses is built on the spot by testkit/tiny_models.py.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no "Loading weights" bars in test output

from testkit.tiny_models import make_tiny_clip, make_tiny_git, make_tiny_qwen2vl, to_legacy_clip_layout  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    """Register the markers used across the suite."""
    config.addinivalue_line("markers", "browser: headless Chromium tests")
    config.addinivalue_line("markers", "slow: slower tests")


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
