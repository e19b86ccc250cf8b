"""Publish, duplicate and the owner's swap, with the Hub replaced at the HfApi / huggingface_hub boundary."""

from __future__ import annotations

import json
import logging
import threading

import pytest
from testkit.shapes import build_shapes, write_shape_folder

from test_hub import FakeHub

from rag.collection import hub
from rag.space import publish
from rag.config import Settings
from rag.errors import InvalidInput, RagError
from rag.space.publish import NotAllowed, duplicate_space, is_owner, publish_collection, serve_collection
from rag.space.sessions import SessionRegistry
from rag.startup import open_pipeline

TOKEN = "hf_oauth_secret_token_value"
COMMIT = "89abcdef0123456789abcdef0123456789abcdef"


class FakeHfApi:
    """Records every call the code would send to the Hub."""

    calls: list = []
    fail_with: Exception | None = None

    def __init__(self, token=None):
        self.token = token

    def duplicate_repo(self, from_id, to_id=None, **kwargs):
        FakeHfApi.calls.append(("duplicate_repo", from_id, to_id, kwargs, self.token))
        return f"https://huggingface.co/spaces/{to_id}"

    def add_space_variable(self, repo_id, key, value, **kwargs):
        if FakeHfApi.fail_with is not None:
            raise FakeHfApi.fail_with
        FakeHfApi.calls.append(("add_space_variable", repo_id, key, value, self.token))
        return {}


@pytest.fixture()
def dataset_hub(monkeypatch):
    """rag.collection.hub's HfApi (the dataset push) replaced by test_hub's recording fake."""
    fake = FakeHub()
    monkeypatch.setattr(hub, "HfApi", fake)
    return fake


@pytest.fixture()
def hub_calls(monkeypatch, dataset_hub):
    FakeHfApi.calls, FakeHfApi.fail_with = [], None
    monkeypatch.setattr(publish, "HfApi", FakeHfApi)
    return FakeHfApi.calls


@pytest.fixture(scope="module")
def collections(tiny_clip_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("pub")
    first = build_shapes(write_shape_folder(root / "a", n=12), root / "col-a", tiny_clip_dir)
    second = build_shapes(write_shape_folder(root / "b", n=8, seed=3), root / "col-b", tiny_clip_dir)
    return first, second


def test_publish_pushes_the_collection_private_by_default(collections, hub_calls, dataset_hub, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    result = publish_collection(collections[0], "alice/my-photos", token=TOKEN)
    assert result["ok"] and result["private"] is True and result["commit"] in dataset_hub.commits
    calls = dict(dataset_hub.calls)
    assert calls["HfApi"] == {"token": TOKEN}
    assert calls["create_repo"] == {"repo_id": "alice/my-photos", "repo_type": "dataset", "private": True,
                                    "exist_ok": True}
    assert {"manifest.json", "index.faiss", "README.md"} <= set(dataset_hub.commits[result["commit"]])
    assert hub_calls == []  # no Space call for a publish
    assert TOKEN not in json.dumps(result) and TOKEN not in caplog.text and TOKEN not in capsys.readouterr().out


def test_publish_and_duplicate_explain_sign_in_when_signed_out(collections, hub_calls, dataset_hub):
    with pytest.raises(NotAllowed, match="Sign in with Hugging Face"):
        publish_collection(collections[0], "alice/x", token=None)
    with pytest.raises(NotAllowed, match="Sign in with Hugging Face"):
        duplicate_space("owner/rag-space", "alice/rag-space", "alice/x", COMMIT, token=None)
    with pytest.raises(InvalidInput, match="user/name"):
        publish_collection(collections[0], "not a repo", token=TOKEN)
    assert hub_calls == [] and dataset_hub.calls == []


def test_duplicate_sends_variables_free_hardware_and_privacy(hub_calls):
    result = duplicate_space("owner/rag-space", "alice/rag-space", "alice/my-photos", COMMIT, private=True, token=TOKEN)
    (name, from_id, to_id, kwargs, token), = hub_calls
    assert (name, from_id, to_id, token) == ("duplicate_repo", "owner/rag-space", "alice/rag-space", TOKEN)
    assert kwargs["repo_type"] == "space" and kwargs["private"] is True and kwargs["space_hardware"] == "cpu-basic"
    assert kwargs["space_variables"] == [{"key": "RAG_COLLECTION", "value": "alice/my-photos"},
                                         {"key": "RAG_REVISION", "value": COMMIT}]
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


def test_owner_swap_serves_everyone_and_writes_the_variables(collections, registry, hub_calls, tmp_path):
    old = registry.space
    in_flight = registry.pipeline_for("someone")  # a request that started before the swap keeps this one
    result = serve_collection(registry, collections[1], COMMIT, Settings(cache_dir=tmp_path), token=TOKEN,
                              hub_repo="owner/new", space_id="owner/rag-space")
    assert result["ok"] and result["persisted"] and result["serving"]["rows"] == 8
    assert registry.pipeline_for("anyone") is registry.space is not old
    assert registry.space.encoder is old.encoder  # same model: nothing reloaded
    assert len(in_flight.collection) == 12 and in_flight.search_text("red circle", 3)
    assert [c[1:4] for c in hub_calls] == [("owner/rag-space", "RAG_COLLECTION", "owner/new"),
                                           ("owner/rag-space", "RAG_REVISION", COMMIT)]
    assert TOKEN not in json.dumps(result)


def test_a_failed_load_keeps_the_current_collection(registry, hub_calls, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{not json")
    old = registry.space
    with pytest.raises(RagError, match="keeps serving the current one"):
        serve_collection(registry, broken, None, Settings(cache_dir=tmp_path), token=TOKEN, hub_repo="o/x",
                         space_id="o/s")
    assert registry.space is old and hub_calls == []


def test_variables_refused_still_serves_and_says_a_restart_goes_back(collections, registry, hub_calls, tmp_path):
    from huggingface_hub.errors import HfHubHTTPError

    import httpx

    response = httpx.Response(403, request=httpx.Request("PUT", "https://huggingface.co/api/spaces/owner/rag-space/variables"))
    FakeHfApi.fail_with = HfHubHTTPError(f"403 Forbidden for token {TOKEN}", response=response)
    result = serve_collection(registry, collections[1], None, Settings(cache_dir=tmp_path), token=TOKEN,
                              hub_repo="owner/new", space_id="owner/rag-space")
    assert result["ok"] and not result["persisted"] and "restart will go back" in result["warning"]
    assert "403" in result["warning"] and TOKEN not in json.dumps(result)


def test_requests_in_flight_during_a_swap_finish(collections, registry, tmp_path, hub_calls):
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
