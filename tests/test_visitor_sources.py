"""A visitor's build (the Build tab, /build) reads only what the visitor may read, and leaves the Space as it was.

The Hub here is tests/hub_http.py: a real HTTP server on 127.0.0.1 serving dataset repos in the Hub's layout
(testkit/hub_fixtures.py) that records the Authorization header of every request. The Space's own token is
in HF_TOKEN, as on a Space with a secret, and is the only token that can read the owner's private dataset.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from hub_http import Repo, serve_hub
from testkit.hub_fixtures import make_hub_fixture
from testkit.shapes import build_shapes, write_shape_folder
from testkit.tiny_models import make_shape_images

import index_build
from rag.collection.reader import Collection
from rag.config import Settings
from rag.errors import InvalidInput
from rag.space.session_build import BuildRequest, make_source, run_session_build
from rag.space.sessions import SessionRegistry
from rag.startup import open_pipeline

SPACE_TOKEN = "secret"  # the Space's own HF_TOKEN
TIN = "zh-plus/tiny-imagenet"


@pytest.fixture(scope="module")
def hub_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub-repos")
    return {"tin": make_hub_fixture(TIN, root / "tin", rows=12)}


@pytest.fixture(scope="module")
def space(tiny_clip_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("visitor-space")
    collection = build_shapes(write_shape_folder(root / "images", n=12), root / "collection", tiny_clip_dir)
    return open_pipeline(Settings(cache_dir=root / "cache"), collection_dir=collection, with_captioner=False)


@pytest.fixture()
def settings(tmp_path):
    return Settings(cache_dir=tmp_path / "cache", build_max_images=50, build_max_mb=50, build_batch_size=4)


@pytest.fixture()
def hub(hub_folders, monkeypatch, tmp_path):
    """The fake Hub with the owner's private dataset, a public one and a gated one; HF_TOKEN holds the Space's
    token; the Space's `datasets` and Hub caches are empty folders of this test."""
    import datasets
    from huggingface_hub import constants

    monkeypatch.setenv("HF_TOKEN", SPACE_TOKEN)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "space-datasets-cache")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "space-hub-cache"))
    folder = hub_folders["tin"]
    repos = {
        "owner/private-photos": Repo(folder, private=True, readers=(SPACE_TOKEN, "hf_visitor_reader")),
        "someone/public-photos": Repo(folder),
        "someone/gated-photos": Repo(folder, gated=True),
    }
    with serve_hub(repos, monkeypatch) as served:
        yield served


def _refusal(request: BuildRequest, work: Path, settings: Settings, token: str | None = None) -> str:
    with pytest.raises(InvalidInput) as caught:
        make_source(request, work, settings, token)
    return str(caught.value)


def test_an_anonymous_visitor_cannot_build_the_owners_private_dataset(hub, settings, tmp_path):
    message = _refusal(BuildRequest(dataset="owner/private-photos", split="valid", limit=3), tmp_path / "w", settings)
    assert "owner/private-photos" in message and "without signing in" in message
    assert hub.requests, "the build asked the Hub"
    assert f"Bearer {SPACE_TOKEN}" not in hub.authorizations()  # the Space's token never left the app
    assert hub.authorizations() == {None}  # no token at all: not the Space's, not a stored login


def test_missing_private_and_gated_datasets_answer_the_same_sentence(hub, settings, tmp_path):
    messages = {name: _refusal(BuildRequest(dataset=name, split="valid", limit=3), tmp_path / "w", settings)
                for name in ("owner/private-photos", "someone/gated-photos", "nobody/no-such-photos")}
    assert len({message.replace(repr(name), "NAME") for name, message in messages.items()}) == 1, messages
    signed_in = {name: _refusal(BuildRequest(dataset=name, split="valid", limit=3), tmp_path / "w", settings,
                                token="hf_someone_else")
                 for name in ("owner/private-photos", "nobody/no-such-photos")}
    assert len({message.replace(repr(name), "NAME") for name, message in signed_in.items()}) == 1, signed_in
    assert all("/tmp" not in m and "127.0.0.1" not in m for m in [*messages.values(), *signed_in.values()])
    assert f"Bearer {SPACE_TOKEN}" not in hub.authorizations()


def test_a_signed_in_visitor_reads_with_their_own_token_only(hub, settings, tmp_path):
    source = make_source(BuildRequest(dataset="owner/private-photos", split="valid", limit=3), tmp_path / "w",
                         settings, token="hf_visitor_reader")
    assert len(list(source.items())) == 3
    assert hub.authorizations() <= {"Bearer hf_visitor_reader", None}
    assert "Bearer hf_visitor_reader" in hub.authorizations()


def test_a_visitor_build_streams_and_leaves_no_cache_behind(hub, space, settings, tmp_path):
    import datasets
    from huggingface_hub import constants

    registry = SessionRegistry(space, tmp_path / "sessions", ttl=60, max_builds=5)
    request = BuildRequest(dataset="someone/public-photos", split="valid", label_column="label", limit=5)
    result = run_session_build(registry, "alice", request, settings)
    assert result["ok"] and result["rows"] == 5
    assert hub.authorizations() == {None}  # a public dataset is read without any token
    own = registry.pipeline_for("alice")
    assert own.collection.manifest.source["streaming"] is True  # only the rows used were read
    assert [hit.label for hit in own.search_text("red circle", 5)]  # the visitor searches what they built
    space_cache = Path(datasets.config.HF_DATASETS_CACHE)
    assert not space_cache.exists() or not any(space_cache.rglob("*.arrow")), "the Space's datasets cache grew"
    left = [p for p in (tmp_path / "sessions").rglob("*") if "datasets-cache" in p.name]
    assert not left, f"the build's own datasets cache was not removed: {left}"
    hub_cache = Path(constants.HF_HUB_CACHE)
    assert not any(p.suffix == ".parquet" for p in hub_cache.rglob("*")), "the split was downloaded whole"


def _png(seed: int) -> bytes:
    image, _, _ = make_shape_images(seed + 1, seed=5)[seed]
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _parquet_with_paths(path: Path, cells: list[dict]) -> Path:
    """A parquet file whose `image` column (the datasets Image type) holds the given {bytes, path} cells."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    features = {"image": {"_type": "Image"}, "caption": {"dtype": "string", "_type": "Value"}}
    table = pa.table({
        "image": pa.array(cells, pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        "caption": [f"row {i}" for i in range(len(cells))],
    }).replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features}})})
    pq.write_table(table, path)
    return path


def test_a_visitors_dataset_cannot_make_the_server_read_its_files(space, settings, tmp_path, monkeypatch,
                                                                  tiny_clip_dir):
    server_image = tmp_path / "server-side" / "private.png"
    server_image.parent.mkdir()
    server_image.write_bytes(_png(1))  # a real image on the server: the old reader indexed it
    cells = [{"bytes": _png(0), "path": None}, {"bytes": None, "path": "/etc/passwd"},
             {"bytes": None, "path": str(server_image)}, {"bytes": None, "path": "/no/such/file.png"}]
    dataset = _parquet_with_paths(tmp_path / "visitor.parquet", cells)
    monkeypatch.setenv("RAG_BUILD_LOCAL_DATASETS", "1")  # lets a test name a local file in place of a Hub id
    registry = SessionRegistry(space, tmp_path / "sessions", ttl=60, max_builds=5)
    result = run_session_build(registry, "mallory", BuildRequest(dataset=str(dataset)), settings)
    assert result["ok"] and result["rows"] == 1  # only the image given as bytes
    reasons = [entry["reason"] for entry in result["skipped"]]
    assert len(reasons) == 3 and len(set(reasons)) == 1, reasons  # existing or not, image or not: one reason
    assert "path" in reasons[0] and "bytes" in reasons[0]
    assert not any(word in reasons[0] for word in ("passwd", "private.png", "file.png", "/etc", str(tmp_path)))

    # the owner's CLI, on their own machine, still reads image paths of a local dataset
    out = tmp_path / "owner-build"
    assert index_build.main(["--dataset", str(dataset), "--model", tiny_clip_dir, "--out", str(out),
                             "--no-progress", "--workers", "1"]) == 0
    assert len(Collection.open(out)) == 2  # the bytes and the real image file; /etc/passwd is not an image


def test_the_spaces_token_still_builds_the_owners_default_collection(hub, tmp_path, tiny_clip_dir):
    """The owner's own builds keep reading with the Space's token (it is theirs): only visitors lose it."""
    from rag.ingest.default_collection import ensure_default_collection

    settings = Settings(cache_dir=tmp_path / "owner-cache", hf_token=os.environ["HF_TOKEN"])
    out = ensure_default_collection(settings, status=lambda _: None, dataset="owner/private-photos",
                                    split="valid", limit=4, model=tiny_clip_dir)
    assert len(Collection.open(out)) == 4
    assert hub.authorizations() <= {f"Bearer {SPACE_TOKEN}", None}

