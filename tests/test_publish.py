"""Publish, duplicate and the owner's swap against testkit's fake Hub (installed at the HfApi / huggingface_hub
boundary): the tests read what the Hub then holds (repos, visibility, Space variables), not the calls made."""

from __future__ import annotations

import json
import logging
import threading

import pytest
from testkit.shapes import build_shapes, write_shape_folder

from huggingface_hub.errors import RepositoryNotFoundError

from rag.config import Settings
from rag.errors import InvalidInput, RagError
from rag.space.publish import NotAllowed, duplicate_space, is_owner, publish_collection, serve_collection
from rag.space.sessions import SessionRegistry
from rag.startup import open_pipeline

TOKEN = "hf_oauth_secret_token_value"  # alice's, signed in with write access
OWNER_TOKEN = "hf_oauth_owner_token_value"  # the Space owner's
COMMIT = "89abcdef0123456789abcdef0123456789abcdef"
SPACE = "owner/rag-space"


@pytest.fixture()
def hub_users(fake_hub):
    """The fake Hub with alice and the Space's owner signed up, and the owner's public Space (on a GPU) on it."""
    fake_hub.add_user("alice", TOKEN)
    fake_hub.add_user("owner", OWNER_TOKEN)
    fake_hub.seed(SPACE, {"app.py": b"import gradio\n"}, repo_type="space", sdk="gradio", hardware="t4-small")
    return fake_hub


def _called(fake_hub, *names: str) -> list:
    return [(name, arguments) for name, arguments in fake_hub.calls if name in names]


@pytest.fixture(scope="module")
def collections(tiny_clip_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("pub")
    first = build_shapes(write_shape_folder(root / "a", n=12), root / "col-a", tiny_clip_dir)
    second = build_shapes(write_shape_folder(root / "b", n=8, seed=3), root / "col-b", tiny_clip_dir)
    return first, second


def test_publish_pushes_the_collection_private_by_default(collections, hub_users, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    result = publish_collection(collections[0], "alice/my-photos", token=TOKEN)
    repo = hub_users.repo("alice/my-photos")
    assert result["ok"] and result["private"] is True and repo.private and repo.branches["main"] == result["commit"]
    assert {"manifest.json", "index.faiss", "README.md"} <= set(repo.files(result["commit"]))
    with pytest.raises(RepositoryNotFoundError):  # private: nobody else sees it
        hub_users.api(OWNER_TOKEN).dataset_info("alice/my-photos")
    assert _called(hub_users, "duplicate_repo", "add_space_variable") == []  # no Space call for a publish
    assert TOKEN not in json.dumps(result) and TOKEN not in caplog.text and TOKEN not in capsys.readouterr().out


def test_publish_and_duplicate_explain_sign_in_when_signed_out(collections, hub_users):
    before = len(hub_users.calls)
    with pytest.raises(NotAllowed, match="Sign in with Hugging Face"):
        publish_collection(collections[0], "alice/x", token=None)
    with pytest.raises(NotAllowed, match="Sign in with Hugging Face"):
        duplicate_space(SPACE, "alice/rag-space", "alice/x", COMMIT, token=None)
    with pytest.raises(InvalidInput, match="user/name"):
        publish_collection(collections[0], "not a repo", token=TOKEN)
    assert len(hub_users.calls) == before and ("dataset", "alice/x") not in hub_users.repos  # nothing reached the Hub


def test_duplicate_sends_variables_free_hardware_and_privacy(hub_users):
    result = duplicate_space(SPACE, "alice/rag-space", "alice/my-photos", COMMIT, private=True, token=TOKEN)
    copy = hub_users.repo("alice/rag-space", "space")
    assert copy.private and copy.hardware == "cpu-basic" and copy.sdk == "gradio"  # the original runs on a GPU
    assert copy.variables == {"RAG_COLLECTION": "alice/my-photos", "RAG_REVISION": COMMIT}
    assert copy.files()["app.py"] == hub_users.repo(SPACE, "space").files()["app.py"]
    assert result["url"] == "https://huggingface.co/spaces/alice/rag-space" and TOKEN not in json.dumps(result)


def test_owner_check(monkeypatch):
    settings = Settings(admins=("carol",))
    monkeypatch.setenv("SPACE_AUTHOR_NAME", "owner")
    assert is_owner("owner", settings) and is_owner("carol", settings)
    assert not is_owner("mallory", settings) and not is_owner(None, settings) and not is_owner("", settings)
    monkeypatch.delenv("SPACE_AUTHOR_NAME")
    assert not is_owner("owner", settings)


@pytest.fixture()
def registry(collections, tmp_path):
    space = open_pipeline(Settings(cache_dir=tmp_path / "cache"), collection_dir=collections[0],
                                   with_captioner=False)
    return SessionRegistry(space, tmp_path / "sessions")


def test_owner_swap_serves_everyone_and_writes_the_variables(collections, registry, hub_users, tmp_path):
    old = registry.space
    in_flight = registry.pipeline_for("someone")  # a request that started before the swap keeps this one
    result = serve_collection(registry, collections[1], COMMIT, Settings(cache_dir=tmp_path), token=OWNER_TOKEN,
                              hub_repo="owner/new", space_id=SPACE)
    assert result["ok"] and result["persisted"] and result["serving"]["rows"] == 8
    assert registry.pipeline_for("anyone") is registry.space is not old
    assert registry.space.encoder is old.encoder  # same model: nothing reloaded
    assert len(in_flight.collection) == 12 and in_flight.search_text("red circle", 3)
    assert hub_users.repo(SPACE, "space").variables == {"RAG_COLLECTION": "owner/new", "RAG_REVISION": COMMIT}
    assert OWNER_TOKEN not in json.dumps(result)


def test_a_failed_load_keeps_the_current_collection(registry, hub_users, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{not json")
    old = registry.space
    with pytest.raises(RagError, match="keeps serving the current one"):
        serve_collection(registry, broken, None, Settings(cache_dir=tmp_path), token=OWNER_TOKEN, hub_repo="o/x",
                         space_id=SPACE)
    assert registry.space is old and hub_users.repo(SPACE, "space").variables == {}


def test_variables_refused_still_serves_and_says_a_restart_goes_back(collections, registry, hub_users, tmp_path):
    read_only = hub_users.add_user("owner", "hf_oauth_read_only_token", write=False)  # signed in without write access
    result = serve_collection(registry, collections[1], None, Settings(cache_dir=tmp_path), token=read_only,
                              hub_repo="owner/new", space_id=SPACE)
    assert result["ok"] and not result["persisted"] and "restart will go back" in result["warning"]
    assert "403" in result["warning"] and "write access" in result["warning"] and read_only not in json.dumps(result)
    assert registry.space.info()["rows"] == 8 and hub_users.repo(SPACE, "space").variables == {}


def test_requests_in_flight_during_a_swap_finish(collections, registry, tmp_path, hub_users):
    errors = []

    def search_many():
        for _ in range(20):
            try:
                registry.pipeline_for("x").search_text("blue square", 5)
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

    threads = [threading.Thread(target=search_many) for _ in range(2)]
    for t in threads:
        t.start()
    serve_collection(registry, collections[1], None, Settings(cache_dir=tmp_path))
    for t in threads:
        t.join()
    assert errors == []
