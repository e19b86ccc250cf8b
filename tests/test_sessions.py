"""Session collections: a visitor's build serves only that visitor, expires, can be cancelled and waits its turn."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from testkit.shapes import build_shapes, write_shape_folder
from test_archives import jpeg, write_zip

from rag.config import Settings
from rag.errors import InvalidInput
from rag.space.session_build import BuildRequest, run_session_build
from rag.space.sessions import SessionRegistry
from rag.startup import open_pipeline


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def space(tiny_clip_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("space")
    collection = build_shapes(write_shape_folder(root / "images", n=24), root / "collection", tiny_clip_dir)
    return open_pipeline(Settings(cache_dir=root / "cache"), collection_dir=collection, with_captioner=False)


@pytest.fixture()
def settings(tmp_path):
    return Settings(cache_dir=tmp_path / "cache", build_max_images=50, build_max_mb=5, build_batch_size=4)


@pytest.fixture()
def registry(space, tmp_path):
    return SessionRegistry(space, tmp_path / "sessions", ttl=60, max_builds=3, clock=Clock())


def photos_zip(tmp_path: Path, n: int = 6, name: str = "photos.zip") -> Path:
    members = {f"{'cats' if i % 2 else 'dogs'}/{i:02d}.jpg": jpeg(i % 3) for i in range(n)}
    members["../../outside.jpg"] = jpeg(0)
    members["readme.txt"] = b"hi"
    return write_zip(tmp_path / name, members)


def test_a_build_serves_its_session_only(registry, space, settings, tmp_path):
    request = BuildRequest(archive=str(photos_zip(tmp_path)), label_from_folder=True)
    result = run_session_build(registry, "alice", request, settings)
    assert result["ok"] and result["rows"] == 6 and result["seconds"] > 0 and result["images_per_second"] > 0
    reasons = {s["source"]: s["reason"] for s in result["skipped"]}
    assert "'..'" in reasons["../../outside.jpg"] and "not an image" in reasons["readme.txt"]
    own = registry.pipeline_for("alice")
    assert own is not space and len(own.collection) == 6 and own.encoder is space.encoder
    assert own.info()["collection"] == "your upload (photos.zip)"
    hits = own.search_text("red circle", 3)
    assert {h.label for h in hits} <= {"cats", "dogs"} and Path(hits[0].thumbnail).is_file()
    assert registry.pipeline_for("bob") is space and registry.pipeline_for(None) is space
    assert not (tmp_path / "outside.jpg").exists()


def test_switch_back_to_the_space_collection_and_again(registry, space, settings, tmp_path):
    run_session_build(registry, "alice", BuildRequest(archive=str(photos_zip(tmp_path))), settings)
    assert registry.use_space_collection("alice", True) is False
    assert registry.pipeline_for("alice") is space
    assert registry.use_space_collection("alice", False) is True
    assert registry.pipeline_for("alice") is not space
    with pytest.raises(InvalidInput, match="no collection of its own"):
        registry.use_space_collection("carol", False)


def test_ttl_and_session_end_delete_the_files(registry, space, settings, tmp_path):
    run_session_build(registry, "alice", BuildRequest(archive=str(photos_zip(tmp_path))), settings)
    run_session_build(registry, "bob", BuildRequest(archive=str(photos_zip(tmp_path, 3, "b.zip"))), settings)
    alice, bob = registry.state("alice").folder, registry.state("bob").folder
    assert alice.is_dir() and bob.is_dir()
    registry.end("bob")
    assert not bob.exists() and registry.pipeline_for("bob") is space
    registry.clock.now += 59
    assert registry.pipeline_for("alice") is not space
    registry.clock.now += 2
    assert registry.pipeline_for("alice") is space  # expired: served no more at once...
    assert registry.sweep() and not alice.exists() and len(registry) == 0  # ...and deleted by the sweeper


def test_a_rebuild_replaces_the_previous_collection_files(registry, settings, tmp_path):
    run_session_build(registry, "alice", BuildRequest(archive=str(photos_zip(tmp_path))), settings)
    first = registry.state("alice").collection_dir
    run_session_build(registry, "alice", BuildRequest(archive=str(photos_zip(tmp_path, 3, "b.zip"))), settings)
    assert not first.exists() and len(registry.pipeline_for("alice").collection) == 3


def test_cancel_stops_between_batches_and_keeps_nothing(registry, space, settings, tmp_path):
    seen = []

    def progress(update):
        seen.append(update)
        if update.stage == "encoding":
            registry.cancel("alice")

    result = run_session_build(registry, "alice", BuildRequest(archive=str(photos_zip(tmp_path, 20))), settings, progress)
    assert result["ok"] is False and result["cancelled"] and "cancelled" in result["error"]
    assert any(u.stage == "encoding" and u.total == 20 and u.done < 20 for u in seen)
    assert registry.pipeline_for("alice") is space
    assert not any((registry.state("alice").folder).glob("build-*"))


def test_one_build_at_a_time_and_the_second_sees_its_place(registry, settings, tmp_path):
    first_running, second_waiting = threading.Event(), threading.Event()
    waits = []

    def first_progress(update):
        if update.stage == "encoding":
            first_running.set()
            second_waiting.wait(30)

    def second_progress(update):
        if update.stage == "waiting":
            waits.append(update.message())
            second_waiting.set()

    results = {}
    first = threading.Thread(target=lambda: results.setdefault("a", run_session_build(
        registry, "alice", BuildRequest(archive=str(photos_zip(tmp_path))), settings, first_progress)))
    first.start()
    assert first_running.wait(60)
    results["b"] = run_session_build(registry, "bob", BuildRequest(archive=str(photos_zip(tmp_path, 3, "b.zip"))),
                                     settings, second_progress)
    first.join(60)
    assert results["a"]["ok"] and results["b"]["ok"]
    assert waits and waits[0].startswith("Waiting: 1 build ahead of yours")


def test_limits_are_checked_with_clear_messages(registry, settings, tmp_path):
    archive = str(photos_zip(tmp_path))
    with pytest.raises(InvalidInput, match="limit must be between 0 .* and 50"):
        run_session_build(registry, "alice", BuildRequest(archive=archive, limit=51), settings)
    with pytest.raises(InvalidInput, match="either an archive .* or a dataset"):
        run_session_build(registry, "alice", BuildRequest(archive=archive, dataset="me/x"), settings)
    with pytest.raises(InvalidInput, match="not a Hub dataset id"):
        run_session_build(registry, "alice", BuildRequest(dataset=str(tmp_path)), settings)
    big = tmp_path / "big.zip"
    big.write_bytes(b"\0" * 6_000_000)
    with pytest.raises(InvalidInput, match="the limit is 5 MB"):
        run_session_build(registry, "alice", BuildRequest(archive=str(big)), settings)
    result = run_session_build(registry, "alice", BuildRequest(archive=archive, limit=2), settings)
    assert result["rows"] == 2 and {"source": "4 more image(s)", "reason": "over the limit of 2 images"} in result["skipped"]
    for _ in range(2):
        run_session_build(registry, "alice", BuildRequest(archive=archive, limit=2), settings)
    with pytest.raises(InvalidInput, match="the most allowed"):
        run_session_build(registry, "alice", BuildRequest(archive=archive), settings)


def test_an_archive_without_usable_images_is_reported_not_raised(registry, space, settings, tmp_path):
    archive = write_zip(tmp_path / "broken.zip", {"a.jpg": b"not a jpeg", "b.txt": b"x"})
    result = run_session_build(registry, "alice", BuildRequest(archive=str(archive)), settings)
    assert result["ok"] is False and "No usable image" in result["error"]
    assert registry.pipeline_for("alice") is space


def test_a_dataset_build_reads_only_the_limit(registry, space, settings, tmp_path, monkeypatch):
    import datasets
    from testkit.tiny_models import make_shape_images

    rows = make_shape_images(12, seed=5)
    features = datasets.Features({"image": datasets.Image(), "text": datasets.Value("string"),
                                  "kind": datasets.Value("string")})
    data = datasets.Dataset.from_dict({"image": [r[0] for r in rows], "text": [r[1] for r in rows],
                                       "kind": [r[2] for r in rows]}, features=features)
    data.to_parquet(str(tmp_path / "shapes.parquet"))
    monkeypatch.setenv("RAG_BUILD_LOCAL_DATASETS", "1")
    request = BuildRequest(dataset=str(tmp_path / "shapes.parquet"), label_column="kind", limit=5)
    result = run_session_build(registry, "dora", request, settings)
    assert result["ok"] and result["rows"] == 5
    own = registry.pipeline_for("dora")
    assert own.collection.all_labels() == [r[2] for r in rows[:5]]
    assert own.collection.all_captions() == [[r[1]] for r in rows[:5]]


def test_the_sweeper_thread_removes_expired_sessions(space, settings, tmp_path):
    import threading

    registry = SessionRegistry(space, tmp_path / "swept", ttl=0.5)
    run_session_build(registry, "erin", BuildRequest(archive=str(photos_zip(tmp_path, 3))), settings)
    state = registry.state("erin")
    removed, real_sweep = threading.Event(), registry.sweep

    def sweep_and_tell() -> list[str]:
        keys = real_sweep()
        if state.key in keys:
            removed.set()
        return keys

    registry.sweep = sweep_and_tell  # the sweeper thread calls it every 0.1 s; the session expires after 0.5 s
    registry.start_sweeper(interval=0.1)
    assert removed.wait(30), "the sweeper never removed the expired session"
    registry.close()
    assert not state.folder.exists() and len(registry) == 0
