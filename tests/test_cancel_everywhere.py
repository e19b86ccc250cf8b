"""Cancel reaches every stage a build spends time in: encoding (between batches) and the final map step."""

from __future__ import annotations

import time

import pytest

from rag.explore import map_file
from rag.ingest.builder import BuildCancelled, BuildOptions, build_collection
from rag.ingest.open_source import SourceSpec, open_source
from rag.models.encoder import Encoder
from testkit.shapes import write_shape_folder
from test_sessions import settings, space  # noqa: F401 - fixtures


@pytest.fixture(scope="module")
def shapes_folder(tmp_path_factory):
    return write_shape_folder(tmp_path_factory.mktemp("cancel") / "shapes", n=48)


def test_cancel_during_the_map_stops_the_layout_and_keeps_nothing(shapes_folder, tiny_clip_dir, tmp_path, monkeypatch):
    """The t-SNE optimisation polls Cancel: a cancel asked once the map has started ends it at the next poll,
    and the build then removes its unfinished folder instead of sealing a collection."""
    asked: dict[str, float] = {}
    real_layout = map_file.compute_layout

    def layout_then_cancel(*args, **kwargs):
        asked["at"] = time.perf_counter()  # the visitor presses Cancel as the map starts
        return real_layout(*args, **kwargs)

    monkeypatch.setattr(map_file, "compute_layout", layout_then_cancel)
    polls = {"map": 0}

    def should_stop() -> bool:
        if "at" in asked:
            polls["map"] += 1
            return True
        return False

    source = open_source(SourceSpec(images=shapes_folder, captions=shapes_folder / "captions.csv"))
    out = tmp_path / "collection"
    with pytest.raises(BuildCancelled):
        build_collection(source, out, Encoder(tiny_clip_dir), BuildOptions(progress=False, map=True),
                         should_stop=should_stop)
    stopped = time.perf_counter() - asked["at"]
    assert polls["map"] >= 1, "the layout never asked whether to stop"
    assert not out.exists() and not any(tmp_path.iterdir()), "a cancelled build left files behind"
    assert stopped < 30, f"the map ran {stopped:.1f} s after Cancel"


def test_cancel_between_batches_stops_encoding(shapes_folder, tiny_clip_dir, tmp_path):
    calls = {"n": 0}

    def should_stop() -> bool:
        calls["n"] += 1
        return calls["n"] >= 2  # the second batch is never encoded

    source = open_source(SourceSpec(images=shapes_folder, captions=shapes_folder / "captions.csv"))
    with pytest.raises(BuildCancelled):
        build_collection(source, tmp_path / "c", Encoder(tiny_clip_dir), BuildOptions(progress=False, batch_size=8),
                         should_stop=should_stop)
    assert not (tmp_path / "c").exists()


def test_a_cancel_after_the_last_check_still_reads_as_a_cancel(space, settings, tmp_path, monkeypatch):
    """Cancel pressed while the build seals its collection (after the map's last check): the session discards it
    and the visitor reads "Build cancelled; nothing was kept.", not that their session ended."""
    from rag.space import session_build
    from rag.space.session_build import BuildRequest, run_session_build
    from rag.space.sessions import SessionRegistry
    from test_sessions import photos_zip

    registry = SessionRegistry(space, tmp_path / "sessions")
    real_build = session_build.build_collection

    def build_then_cancel(*args, **kwargs):
        manifest = real_build(*args, **kwargs)
        assert registry.cancel("zoe")  # the visitor presses Cancel as the collection is sealed
        return manifest

    monkeypatch.setattr(session_build, "build_collection", build_then_cancel)
    result = run_session_build(registry, "zoe", BuildRequest(archive=str(photos_zip(tmp_path, 4))), settings)
    assert result["ok"] is False and result["cancelled"] is True
    assert result["error"] == "Build cancelled; nothing was kept."
    assert registry.pipeline_for("zoe") is space and registry.progress("zoe") is None
    assert not any((tmp_path / "sessions").rglob("index.faiss")), "the cancelled collection was kept"
