"""One way to open what a build reads: open_source(SourceSpec), for the CLI, the Build tab and the default collection.

Who asks decides the rules (rag.ingest.spec): the owner may name local folders and use the machine's token;
a visitor reads an upload or a Hub dataset, streamed, with their own token or none.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from testkit.hub_fixtures import make_hub_fixture

from rag.errors import InvalidInput, UsageError
from rag.ingest.dataset_source import DatasetSource
from rag.ingest.dataset_stream import StreamingDatasetSource
from rag.ingest.open_source import OWNER, VISITOR, SourceSpec, open_source

ROOT = Path(__file__).resolve().parents[1]
APP_CODE = [ROOT / "app.py", ROOT / "index_build.py", *sorted((ROOT / "rag").rglob("*.py")),
            *sorted((ROOT / "ui").rglob("*.py"))]
OPENERS = {  # a call of this name may appear only in these modules
    "load_dataset": {"rag/ingest/dataset_source.py"},
    "load_from_disk": {"rag/ingest/dataset_source.py"},
    "DatasetSource": {"rag/ingest/open_source.py"},
    "StreamingDatasetSource": {"rag/ingest/open_source.py"},
    "FolderSource": {"rag/ingest/open_source.py"},
    "ArchiveSource": {"rag/ingest/open_source.py"},
    "open_dataset_source": set(),
}


def _calls(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            func = node.func
            names.add(func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", ""))
    return names


def test_every_caller_opens_its_source_through_open_source() -> None:
    """No second way in: the CLI, the Build tab, the default collection and the Ray engine all call open_source."""
    stray = [f"{path.relative_to(ROOT)} calls {name}" for path in APP_CODE for name in sorted(_calls(path) & set(OPENERS))
             if str(path.relative_to(ROOT)) not in OPENERS[name]]
    assert not stray, "; ".join(stray)
    for caller in ("rag/ingest/cli.py", "rag/space/session_build.py", "rag/ingest/default_collection.py"):
        assert "open_source" in _calls(ROOT / caller), caller


@pytest.fixture(scope="module")
def tin(tmp_path_factory):
    return make_hub_fixture("zh-plus/tiny-imagenet", tmp_path_factory.mktemp("hub") / "tin", rows=8)


def test_a_limit_streams_for_the_owner_and_a_visitor_always_streams(tin) -> None:
    assert type(open_source(SourceSpec(dataset=str(tin), split="valid"))) is DatasetSource  # owner, no limit: whole
    assert type(open_source(SourceSpec(dataset=str(tin), split="valid", limit=3))) is StreamingDatasetSource
    visitor = open_source(SourceSpec(dataset=str(tin), split="valid", asker=VISITOR))
    assert type(visitor) is StreamingDatasetSource and len(list(visitor.items())) == 8
    visitor.cleanup()


def test_the_token_a_visitor_reads_with_is_theirs_or_none() -> None:
    assert SourceSpec(dataset="a/b", asker=VISITOR).hub_token is False  # never None: that means HF_TOKEN
    assert SourceSpec(dataset="a/b", asker=VISITOR, token="").hub_token is False
    assert SourceSpec(dataset="a/b", asker=VISITOR, token="hf_mine").hub_token == "hf_mine"
    assert SourceSpec(dataset="a/b", asker=OWNER).hub_token is None  # the owner's machine, the owner's login
    assert "hf_mine" not in repr(SourceSpec(dataset="a/b", asker=VISITOR, token="hf_mine"))
    with pytest.raises(ValueError, match="asker"):
        SourceSpec(dataset="a/b", asker="anyone")


def test_a_visitor_cannot_name_a_folder_on_the_server_and_a_spec_names_one_source(tmp_path) -> None:
    with pytest.raises(InvalidInput, match="not a folder"):
        open_source(SourceSpec(images=tmp_path, asker=VISITOR))
    with pytest.raises(UsageError, match="not both or neither"):
        open_source(SourceSpec())
    with pytest.raises(UsageError, match="not both or neither"):
        open_source(SourceSpec(images=tmp_path, dataset="a/b"))
