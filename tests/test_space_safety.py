"""A public Space is safe to deploy (issue 22): what a visitor can reach is bounded, and nothing leaks.

Unit checks first (the build line's bounds, the session registry's and the caches' concurrency, all-or-nothing
serving, repo ids, the upload janitor, the requirements), then the app served in Spaces mode with Gradio's real
OAuth session middleware: sign-in and owner checks with signed session cookies, no server path in what visitors
see, leftovers of a previous run cleared at start-up, large uploads deleted when no build uses them.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from test_app import launch_app, make_client, shapes_collection
from test_archives import jpeg, write_zip
from test_build_tab import shapes_archive
from testkit.shapes import build_shapes, write_shape_folder

from rag import pipeline as pipeline_module
from rag.collection import thumbnails
from rag.config import Settings
from rag.errors import InvalidInput, RagError
from rag.space import publish, sessions
from rag.space.publish import check_repo_id, serve_collection
from rag.space.session_build import BuildRequest, run_session_build
from rag.space.sessions import SessionRegistry
from rag.startup import open_pipeline

ROOT = Path(__file__).resolve().parents[1]
OAUTH = {"OAUTH_CLIENT_ID": "test-client", "OAUTH_CLIENT_SECRET": "test-oauth-secret",
         "OAUTH_SCOPES": "openid profile read-repos write-repos", "OPENID_PROVIDER_URL": "http://127.0.0.1:9"}


@pytest.fixture(scope="module")
def space(tiny_clip_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("safety")
    collection = build_shapes(write_shape_folder(root / "images", n=12), root / "collection", tiny_clip_dir)
    return open_pipeline(Settings(cache_dir=root / "cache"), collection_dir=collection, with_captioner=False)


@pytest.fixture(scope="module")
def other_collection(tiny_clip_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("other")
    return build_shapes(write_shape_folder(root / "images", n=6, seed=3), root / "collection", tiny_clip_dir)


def photos(tmp_path: Path, n: int = 4) -> str:
    return str(write_zip(tmp_path / f"photos-{n}.zip", {f"{i:02d}.jpg": jpeg(i % 3) for i in range(n)}))


# -- item 3: the build line is bounded, per client and in all -------------------------------------------------


def test_the_build_line_is_bounded_per_client_and_in_all(space, tmp_path):
    registry = SessionRegistry(space, tmp_path / "sessions", line_max=3, per_client=2)
    registry.begin_build("a1", client="10.0.0.1")
    registry.begin_build("a2", client="10.0.0.1")
    with pytest.raises(sessions.BuildLineFull, match="You already have 2 builds"):
        registry.begin_build("a3", client="10.0.0.1")  # a fresh session does not help: the address counts
    registry.begin_build("b1", client="10.0.0.2")
    with pytest.raises(sessions.BuildLineFull, match="3 builds are already running or waiting"):
        registry.begin_build("c1", client="10.0.0.3")
    assert len(registry) == 3  # refused requests leave nothing behind (a flood of sessions costs no memory)
    registry.abort_build("a1")
    registry.begin_build("c1", client="10.0.0.3")  # a place freed is a place taken


# -- item 15: the registry and the caches under concurrency -------------------------------------------------


def test_a_tab_closed_while_its_build_opens_keeps_nothing(space, tmp_path, monkeypatch):
    registry = SessionRegistry(space, tmp_path / "sessions", ttl=3600)
    settings = Settings(cache_dir=tmp_path / "cache", build_max_images=20, build_max_mb=5)
    real_open = sessions.Collection.open

    def open_while_the_tab_closes(*args, **kwargs):
        registry.end("alice")  # the unload event arrives while finish_build opens the collection
        return real_open(*args, **kwargs)

    monkeypatch.setattr(sessions.Collection, "open", open_while_the_tab_closes)
    result = run_session_build(registry, "alice", BuildRequest(archive=photos(tmp_path)), settings)
    assert result["ok"] is False and "ended" in result["error"]
    assert registry.pipeline_for("alice") is space  # not kept for another full TTL
    registry.sweep()
    assert len(registry) == 0 and not any((tmp_path / "sessions").iterdir())


def test_session_thumbnail_caches_share_one_cap(tmp_path, monkeypatch):
    monkeypatch.setattr(thumbnails, "_CACHES", {})
    fresh_pool = getattr(thumbnails, "CachePool", lambda: None)()  # (the code before the fix had no pool)
    monkeypatch.setattr(thumbnails, "_POOL", fresh_pool, raising=False)
    space_cache = thumbnails.thumbnail_cache(tmp_path / "space", max_bytes=10_000)  # RAG_CACHE_MAX_GB, at start-up
    session_caches = [thumbnails.thumbnail_cache(tmp_path / f"session-{i}" / "cache") for i in range(3)]
    for row in range(8):
        for cache in [space_cache, *session_caches]:
            cache.path("0123456789abcdef", row, lambda r: bytes([r]) * 1000)
    on_disk = sum(p.stat().st_size for p in tmp_path.rglob("*.jpg"))
    assert on_disk <= 10_000, f"{on_disk} bytes of thumbnails under a 10,000-byte cap"
    thumbnails.forget_cache(tmp_path / "session-0" / "cache")
    assert space_cache.used_bytes() == sum(p.stat().st_size for p in tmp_path.rglob("*.jpg")
                                           if "session-0" not in str(p))


def test_a_cache_hit_never_returns_a_file_that_a_prune_deletes(tmp_path, monkeypatch):
    cache = thumbnails.ThumbnailCache(tmp_path, max_bytes=5_000)
    load = lambda r: bytes([r]) * 1000  # noqa: E731
    first = cache.path("0123456789abcdef", 0, load)
    for row in range(1, 5):
        cache.path("0123456789abcdef", row, load)
    os.utime(first, (1, 1))  # row 0 is the least recently used: the next prune deletes it first
    scanned, go = threading.Event(), threading.Event()
    real_files = thumbnails.ThumbnailCache._files

    def paused_scan(self):
        files = real_files(self)
        scanned.set()
        go.wait(30)
        return files

    monkeypatch.setattr(thumbnails.ThumbnailCache, "_files", paused_scan)
    prune = threading.Thread(target=cache.path, args=("0123456789abcdef", 5, load))  # over the cap: prunes
    prune.start()
    assert scanned.wait(30)
    hit: dict = {}
    reader = threading.Thread(target=lambda: hit.setdefault("path", cache.path("0123456789abcdef", 0, load)))
    reader.start()
    reader.join(0.5)  # a hit that does not wait for the prune returns here, before the prune deletes row 0
    go.set()
    prune.join(30)
    reader.join(30)
    assert hit["path"].exists() and hit["path"].read_bytes() == load(0)


def test_identical_first_duplicates_calls_search_once(space, monkeypatch):
    calls, arrived, release = [], threading.Condition(), threading.Event()
    real = pipeline_module.find_duplicates

    def counted(*args, **kwargs):
        with arrived:
            calls.append(1)
            arrived.notify_all()
        release.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline_module, "find_duplicates", counted)
    results = []
    threads = [threading.Thread(target=lambda: results.append(space.duplicates(0.97, 5))) for _ in range(4)]
    for thread in threads:
        thread.start()
    with arrived:
        arrived.wait_for(lambda: len(calls) >= 4, timeout=1.0)  # repeated searches would all have started by now
    release.set()
    for thread in threads:
        thread.join(60)
    assert len(calls) == 1 and len(results) == 4
    assert len({json.dumps(r.to_dict()["groups"]) for r in results}) == 1


# -- item 11: serving a collection is all or nothing -------------------------------------------------------


class RecordingHfApi:
    calls: list = []
    fail_with: Exception | None = None

    def __init__(self, token=None):
        self.token = token

    def add_space_variable(self, repo_id, key, value, **kwargs):
        if RecordingHfApi.fail_with is not None:
            raise RecordingHfApi.fail_with
        RecordingHfApi.calls.append((repo_id, key, value))


@pytest.fixture()
def space_api(monkeypatch):
    RecordingHfApi.calls, RecordingHfApi.fail_with = [], None
    monkeypatch.setattr(publish, "HfApi", RecordingHfApi)
    return RecordingHfApi


def test_serving_is_all_or_nothing_with_a_true_message(space, other_collection, space_api, tmp_path, monkeypatch):
    registry = SessionRegistry(space, tmp_path / "sessions")
    settings = Settings(cache_dir=tmp_path / "cache")
    space_api.fail_with = ConnectionError("the Hub did not answer")  # not an HTTP error: the old code raised
    result = serve_collection(registry, other_collection, None, settings, token="hf_owner", hub_repo="owner/new",
                              space_id="owner/space")
    assert result["ok"] and result["persisted"] is False and "a restart will go back" in result["warning"]
    assert registry.space.info()["rows"] == 6 and result["serving"]["rows"] == 6

    space_api.fail_with = None
    registry.swap_space(space)
    result = serve_collection(registry, other_collection, None, settings, token="hf_owner",
                              hub_repo=str(other_collection), space_id="owner/space")
    assert space_api.calls == [] and result["persisted"] is False  # a server path never goes into RAG_COLLECTION
    assert "/" not in result["serving"]["collection"]

    registry.swap_space(space)
    monkeypatch.setattr(publish.Pipeline, "info", lambda self: 1 / 0)  # fails after loading, before anything else
    with pytest.raises(RagError, match="keeps serving the current one"):
        serve_collection(registry, other_collection, None, settings, token="hf_owner", hub_repo="owner/new",
                         space_id="owner/space")
    assert registry.space is space and space_api.calls == []


# -- item 13: repo ids the Hub refuses are refused at once -------------------------------------------------


@pytest.mark.parametrize("repo_id", ["user/..", "user/.hidden", "user/x--y", "-user/x", "user/x.", "a/b/c", "user/"])
def test_repo_ids_the_hub_refuses_are_refused_at_once(repo_id):
    with pytest.raises(InvalidInput, match="must look like user/name"):
        check_repo_id(repo_id)


def test_good_repo_ids_pass():
    assert check_repo_id(" alice/my-photos.v2 ") == "alice/my-photos.v2"


# -- item 9: large uploads no build uses are deleted -------------------------------------------------------


def test_the_upload_janitor_keeps_only_what_a_build_may_still_use(tmp_path):
    from ui.uploads import UploadJanitor

    now = [1000.0]
    janitor = UploadJanitor(grace=300, small_bytes=100, clock=lambda: now[0])
    files = {}
    for number, (name, size) in enumerate({"big.jpg": 200, "small.jpg": 50, "big.zip": 200,
                                           "claimed.tar.gz": 200}.items()):
        (tmp_path / str(number)).mkdir()  # Gradio keeps each upload in a folder of its own
        path = tmp_path / str(number) / name
        path.write_bytes(b"x" * size)
        os.utime(path, (now[0], now[0]))
        files[name] = str(path)
    janitor.watch(set(files.values()))
    assert janitor.sweep() == [files["big.jpg"]]  # over the image limit and no archive: no input may use it
    now[0] += 301
    with janitor.claim(files["claimed.tar.gz"]) as claim:
        assert janitor.sweep() == [files["big.zip"]]  # an archive no build claimed within the grace
        assert Path(files["claimed.tar.gz"]).exists()  # a build waiting in line keeps its archive
        claim.used = True
    assert not Path(files["claimed.tar.gz"]).exists()  # used: deleted at once, not an hour later
    assert Path(files["small.jpg"]).exists() and janitor.files == {files["small.jpg"]}


# -- item 14: the requirements install what sign-in needs -------------------------------------------------


def test_requirements_install_gradios_oauth_extra():
    lines = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    gradio = [line for line in lines if re.match(r"^gradio\[", line)]
    assert len(gradio) == 1 and gradio[0].split("==")[1] == "6.31.0", gradio
    extras = set(gradio[0][gradio[0].index("[") + 1:gradio[0].index("]")].split(","))
    assert {"mcp", "oauth"} <= extras, "gr.LoginButton on a Space needs gradio[oauth] (authlib, itsdangerous)"
    needed = [re.split(r"[<>=;\[ ]", req)[0] for req in importlib.metadata.requires("gradio") or []
              if re.search(r"extra == ['\"]oauth['\"]", req)]
    assert needed and all(importlib.util.find_spec(name.lower()) for name in needed), needed  # installed here too


# -- item 10: no server path in what visitors see ----------------------------------------------------------


def test_messages_lose_server_paths_but_keep_urls_and_repo_ids():
    from ui.errors import scrub_paths, scrub_result

    text = ("Unable to find '/srv/app/a/x.parquet'; see https://huggingface.co/datasets/a/b. "
            "a/x.parquet is not /home/user/.cache/rag/served/build-1")
    assert scrub_paths(text) == ("Unable to find 'x.parquet'; see https://huggingface.co/datasets/a/b. "
                                 "a/x.parquet is not build-1")
    assert scrub_result({"skipped": [{"source": "/tmp/gradio/abc/x.zip", "reason": "ok"}], "rows": 2}) == {
        "skipped": [{"source": "x.zip", "reason": "ok"}], "rows": 2}


# -- the app as a Space: Gradio's real OAuth middleware, signed session cookies ------------------------------


def session_cookie(username: str, secret: str = OAUTH["OAUTH_CLIENT_SECRET"]) -> str:
    """A session cookie as Gradio's OAuth callback leaves it: Starlette's SessionMiddleware signs the base64 JSON
    session with itsdangerous, keyed by sha256(OAUTH_CLIENT_SECRET + "-v4") (gradio/oauth.py)."""
    from itsdangerous import TimestampSigner

    info = {"oauth_info": {
        "access_token": f"hf_oauth_{username}", "scope": OAUTH["OAUTH_SCOPES"], "expires_at": time.time() + 3600,
        "userinfo": {"preferred_username": username, "name": username, "picture": "",
                     "profile": f"https://huggingface.co/{username}"},
    }}
    key = hashlib.sha256((secret + "-v4").encode()).hexdigest()
    return TimestampSigner(key).sign(base64.b64encode(json.dumps(info).encode())).decode()


@pytest.fixture(scope="module")
def spaces_app(tiny_clip_dir, tmp_path_factory):
    import gradio.oauth

    from ui.page import _CONTEXTS

    root = tmp_path_factory.mktemp("as-a-space")
    collection = shapes_collection(root / "images", root / "collection", tiny_clip_dir, n=12)
    cache = root / "cache"
    leftovers = [cache / "sessions" / "0123456789abcdef01234567-1a2b3c4d" / "build-1", cache / "sessions" / "stray",
                 cache / "served" / "build-2-20250101-000000"]
    for folder in leftovers:
        folder.mkdir(parents=True)
        (folder / "index.faiss").write_bytes(b"x" * 1000)
    with pytest.MonkeyPatch.context() as env:
        for name, value in {"SYSTEM": "spaces", "SPACE_ID": "owner/rag-space", "SPACE_AUTHOR_NAME": "owner",
                            "SPACE_HOST": "owner-rag-space.hf.space"}.items():
            env.setenv(name, value)
        for name, value in OAUTH.items():
            env.setattr(gradio.oauth, name, value)
        pipeline = open_pipeline(Settings(cache_dir=cache), collection_dir=collection, with_captioner=False)
        demo, url = launch_app(pipeline)
        yield SimpleNamespace(url=url, root=root, cache=cache, leftovers=leftovers, ctx=_CONTEXTS[demo])
        demo.close()


def signed_in(url: str, folder: Path, username: str | None, secret: str = OAUTH["OAUTH_CLIENT_SECRET"]) -> Client:
    """A gradio_client that sends the session cookie of ``username`` (None: signed out)."""
    headers = {"Cookie": f"session={session_cookie(username, secret)}"} if username else None
    return Client(url, verbose=False, download_files=str(folder), analytics_enabled=False, headers=headers)


def test_sign_in_and_owner_checks_go_through_gradios_signed_session_cookie(spaces_app, tmp_path):
    url = spaces_app.url
    checks = {
        None: "Sign in as the Space's owner",
        "mallory": "mallory is not this Space's owner",
        "Owner": "Owner is not this Space's owner",  # user names are compared exactly
        "owner": "Build a collection in the Build tab first",  # past the owner check: nothing built to serve
    }
    for username, message in checks.items():
        with pytest.raises(AppError, match=message):
            signed_in(url, tmp_path / str(username), username).predict("", "", api_name="/serve_collection")
    forged = signed_in(url, tmp_path / "forged", "owner", secret="not-the-space-secret")
    with pytest.raises(AppError, match="Sign in as the Space's owner"):
        forged.predict("", "", api_name="/serve_collection")


def test_owner_serving_a_session_build_shows_visitors_no_server_path(spaces_app, tmp_path):
    owner = signed_in(spaces_app.url, tmp_path / "owner", "owner")
    built = owner.predict(handle_file(str(shapes_archive(tmp_path / "mine.zip", n=6))), "", "train", "", "", "", True, 0,
                          api_name="/build")
    assert built["ok"] and built["rows"] == 6
    served = owner.predict("", "", api_name="/serve_collection")
    assert served["ok"] and served["persisted"] is False and "publish it" in served["warning"]
    visitor = make_client(spaces_app.url, tmp_path / "visitor")
    info = visitor.predict(api_name="/info")
    assert info["rows"] == 6
    shown = json.dumps([info, served, built])
    assert str(spaces_app.root) not in shown and "/served/" not in shown and "/sessions/" not in shown
    assert "/" not in info["collection"]


def test_a_dataset_name_never_echoes_the_server_folder(spaces_app, tmp_path):
    client = make_client(spaces_app.url, tmp_path / "d")
    try:
        result = client.predict(None, "a/x.parquet", "train", "", "", "", False, 2, api_name="/build")
        shown = json.dumps(result)
    except AppError as exc:
        shown = str(exc)
    assert os.getcwd() not in shown and str(ROOT) not in shown and str(spaces_app.root) not in shown


def test_publish_with_a_body_token_and_no_sign_in_asks_for_a_repo_name(spaces_app, tmp_path):
    client = make_client(spaces_app.url, tmp_path / "p")
    client.predict(handle_file(str(shapes_archive(tmp_path / "p.zip", n=4))), "", "train", "", "", "", False, 0, api_name="/build")

    def raw_publish(repo_id: str) -> str:  # POST /gradio_api/call/publish with the token in the body, no cookie
        base = spaces_app.url.rstrip("/") + "/gradio_api/call/publish"
        body = {"data": [repo_id, True], "session_hash": client.session_hash, "oauth_token": "hf_body_token"}
        event = httpx.post(base, json=body, timeout=60).json()["event_id"]
        return httpx.get(f"{base}/{event}", timeout=60).text

    answer = raw_publish("")
    assert "Name the dataset repo as user/name" in answer and "AttributeError" not in answer
    assert "must look like user/name" in raw_publish("someone/..")


def test_leftovers_of_a_previous_run_are_cleared_at_start_up(spaces_app):
    assert not any(folder.exists() for folder in spaces_app.leftovers)


def test_large_uploads_no_build_uses_are_deleted(spaces_app):
    janitor = spaces_app.ctx.uploads
    uploaded = {}
    for name in ("big.jpg", "big.zip"):
        response = httpx.post(spaces_app.url.rstrip("/") + "/gradio_api/upload",
                              files=[("files", (name, os.urandom(21 * 2**20)))], timeout=120)
        uploaded[name] = Path(response.json()[0])
    assert uploaded["big.zip"].exists()
    janitor.sweep()
    assert not uploaded["big.jpg"].exists()  # over the 20 MB image limit and no archive: gone at once
    assert uploaded["big.zip"].exists()  # an archive may still be built, for RAG_UPLOAD_GRACE seconds
    clock = janitor.clock
    janitor.clock = lambda: clock() + spaces_app.ctx.build_settings.upload_grace + 1
    try:
        janitor.sweep()
    finally:
        janitor.clock = clock
    assert not uploaded["big.zip"].exists()
