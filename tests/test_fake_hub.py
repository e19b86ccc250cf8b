"""The one fake Hub (testkit/fake_hub.py) answers as huggingface_hub and the Hub do, so tests built on it cannot drift:
calls bound against the real signatures, folders and ``recursive`` in tree listings, private repos, and a concurrent
push refused through ``parent_commit`` (and reported by rag in one sentence)."""

from __future__ import annotations

import ast
from pathlib import Path

import huggingface_hub
import pytest
from huggingface_hub import CommitOperationAdd
from huggingface_hub.errors import (EntryNotFoundError, HFValidationError, HfHubHTTPError, RepositoryNotFoundError,
                                    RevisionNotFoundError)
from huggingface_hub.hf_api import RepoFile, RepoFolder
from testkit.fake_hub import HUB_MODULES
from testkit.fake_hub_api import FakeHfApi
from testkit.shapes import build_shapes, write_shape_folder

from rag.collection import hub
from rag.collection.reader import Collection
from rag.errors import CollectionError

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [ROOT / "app.py", ROOT / "index_build.py", *sorted((ROOT / "rag").rglob("*.py")),
           *sorted((ROOT / "ui").rglob("*.py"))]
FAKED = {"HfApi", "snapshot_download"}  # what FakeHub.install replaces
# imported from huggingface_hub but sending no request: operation records, constants, local checks, exception types
INERT = {"CommitOperationAdd", "CommitOperationDelete", "CommitOperationCopy", "constants", "validate_repo_id", "httpx"}


def test_a_call_the_real_client_refuses_is_refused(fake_hub):
    api = fake_hub.api(fake_hub.add_user("me"))
    api.create_repo("me/x", repo_type="dataset")
    with pytest.raises(TypeError, match="commit_message"):
        huggingface_hub.HfApi().create_commit("me/x", [], repo_type="dataset")  # the real one, before any request
    with pytest.raises(TypeError, match="commit_message"):
        api.create_commit("me/x", [CommitOperationAdd("a.txt", b"a")], repo_type="dataset")
    with pytest.raises(TypeError, match="privat"):
        api.create_repo("me/y", privat=True)
    with pytest.raises(ValueError, match="commit_message"):
        api.create_commit("me/x", [CommitOperationAdd("a.txt", b"a")], commit_message="", repo_type="dataset")
    with pytest.raises(HFValidationError):
        api.dataset_info("me/../x")
    with pytest.raises(NotImplementedError, match="upload_folder"):
        api.upload_folder
    assert "a.txt" not in fake_hub.repo("me/x").files()


def test_list_repo_tree_returns_folders_and_honours_recursive_and_path(fake_hub):
    files = {"README.md": b"# card\n", "data/a.parquet": b"PAR1 a", "data/sub/b.parquet": b"PAR1\0b"}
    fake_hub.seed("me/x", files)
    api = fake_hub.api()

    def listing(**kwargs) -> list[tuple[str, str]]:
        return [(type(e).__name__, e.path) for e in api.list_repo_tree("me/x", repo_type="dataset", **kwargs)]

    assert listing() == [("RepoFile", ".gitattributes"), ("RepoFile", "README.md"), ("RepoFolder", "data")]
    assert listing(recursive=True) == [("RepoFile", ".gitattributes"), ("RepoFile", "README.md"),
                                       ("RepoFolder", "data"), ("RepoFile", "data/a.parquet"),
                                       ("RepoFolder", "data/sub"), ("RepoFile", "data/sub/b.parquet")]
    assert listing(path_in_repo="data") == [("RepoFile", "data/a.parquet"), ("RepoFolder", "data/sub")]
    entries = {e.path: e for e in api.list_repo_tree("me/x", "data", recursive=True, repo_type="dataset")}
    assert isinstance(entries["data/sub"], RepoFolder) and isinstance(entries["data/a.parquet"], RepoFile)
    assert entries["data/sub/b.parquet"].lfs.size == 6 == entries["data/sub/b.parquet"].size  # binary: in LFS
    with pytest.raises(EntryNotFoundError):
        listing(path_in_repo="nowhere")
    assert api.list_repo_files("me/x", repo_type="dataset") == [".gitattributes", "README.md", "data/a.parquet",
                                                                 "data/sub/b.parquet"]


def test_a_private_repo_is_invisible_without_the_owners_token(fake_hub, tmp_path):
    alice, bob = fake_hub.add_user("alice"), fake_hub.add_user("bob")
    fake_hub.seed("alice/secret", {"manifest.json": b"{}", "data/metadata-00000.parquet": b"PAR1", "notes.txt": b"x"},
                  private=True)
    for token, status in ((None, 401), (bob, 404)):
        with pytest.raises(RepositoryNotFoundError) as error:
            fake_hub.api(token).dataset_info("alice/secret")
        assert error.value.response.status_code == status
    with pytest.raises(CollectionError, match="not found, or it is private"):
        hub.pull_collection("alice/secret", token=bob)
    with pytest.raises(CollectionError, match="has no revision 'v9'"):
        hub.pull_collection("alice/secret", revision="v9", token=alice)
    pulled = hub.pull_collection("alice/secret", token=alice)  # real files in the HF cache, as the Hub's client writes
    assert pulled.name == fake_hub.repo("alice/secret").branches["main"] and pulled.parent.name == "snapshots"
    assert sorted(p.relative_to(pulled).as_posix() for p in pulled.rglob("*") if p.is_file()) == [
        "data/metadata-00000.parquet", "manifest.json"]  # only the collection's files are asked for
    assert fake_hub.api(alice).dataset_info("alice/secret").private is True


def test_a_commit_on_a_stale_parent_is_refused_with_412(fake_hub):
    api = fake_hub.api(fake_hub.add_user("me"))
    api.create_repo("me/x", repo_type="dataset")
    parent = api.dataset_info("me/x").sha
    api.create_commit("me/x", [CommitOperationAdd("a.txt", b"a")], commit_message="one", repo_type="dataset",
                      parent_commit=parent)
    with pytest.raises(HfHubHTTPError) as error:
        api.create_commit("me/x", [CommitOperationAdd("b.txt", b"b")], commit_message="two", repo_type="dataset",
                          parent_commit=parent)
    assert error.value.response.status_code == 412 and sorted(fake_hub.repo("me/x").files()) == [".gitattributes", "a.txt"]
    with pytest.raises(RevisionNotFoundError):
        api.create_commit("me/x", [CommitOperationAdd("c.txt", b"c")], commit_message="m", repo_type="dataset",
                          revision="no-such-branch")


def test_a_concurrent_push_fails_clearly_and_the_one_that_landed_stays_whole(tiny_clip_dir, tmp_path, fake_hub):
    mine = build_shapes(write_shape_folder(tmp_path / "a", n=4), tmp_path / "mine", tiny_clip_dir)
    theirs = build_shapes(write_shape_folder(tmp_path / "b", n=6, seed=3), tmp_path / "theirs", tiny_clip_dir)
    token = fake_hub.add_user("me")
    landed = []
    # the other push reads the same head as this one and commits between this push's read and its commit
    fake_hub.interleave("create_commit", lambda: landed.append(hub.push_collection(theirs, "me/shapes", token=token)))
    with pytest.raises(CollectionError, match="changed while this push was running") as error:
        hub.push_collection(mine, "me/shapes", token=token)
    assert "\n" not in str(error.value) and "http" not in str(error.value)  # one sentence, no URL
    repo = fake_hub.repo("me/shapes")
    assert repo.branches["main"] == landed[0] and len(repo.history()) == 2  # the Hub's initial commit + theirs only
    assert len(Collection.open(hub.pull_collection("me/shapes", token=token))) == 6


def _hub_imports(path: Path) -> list[tuple[str, str]]:
    """(module, name) for every name a source file imports from huggingface_hub (a bare import counts as '*')."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "huggingface_hub":
            found += [(node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, "*") for alias in node.names if alias.name.split(".")[0] == "huggingface_hub"]
    return found


def test_every_hub_client_rag_imports_is_replaced_by_the_fake():
    """A new Hub call (another function, another module) must be added to the fake before tests can use it."""
    users = {}
    for path in SOURCES:
        names = {name for _, name in _hub_imports(path) if not name.endswith("Error")} - INERT
        if names:
            users[".".join(path.relative_to(ROOT).with_suffix("").parts)] = names
    assert set(users) == set(HUB_MODULES), f"modules importing a Hub client: {users}; FakeHub.install patches {HUB_MODULES}"
    assert all(names <= FAKED for names in users.values()), f"{users}: the fake replaces only {FAKED}"
    called = set()
    for module in HUB_MODULES:
        tree = ast.parse((ROOT / (module.replace(".", "/") + ".py")).read_text(encoding="utf-8"))
        called |= {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
                   and callable(getattr(huggingface_hub.HfApi, node.attr, None)) and not node.attr.startswith("_")}
    assert called and called <= set(vars(FakeHfApi)), f"HfApi methods the fake lacks: {called - set(vars(FakeHfApi))}"
