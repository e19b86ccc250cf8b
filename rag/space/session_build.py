"""An in-Space build for one browser session: archive or dataset -> collection, with progress and Cancel.

Runs rag.ingest.builder.build_collection with the Space's loaded encoder, one build at a time per Space (the others
wait in line and are told their place), and hands the result to the session registry.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from rag.ingest.archives import ArchiveLimits, is_archive
from rag.ingest.builder import BuildCancelled, BuildOptions, build_collection
from rag.config import Settings
from rag.errors import InvalidInput, RagError
from rag.collection.hub import looks_like_repo_id
from rag.models.adapter import base_encoder
from rag.space.sessions import BuildCancelledWhileWaiting, BuildStopped, SessionRegistry, SessionState
from rag.ingest.open_source import VISITOR, SourceSpec, open_source
from rag.ingest.sources import Source

log = logging.getLogger(__name__)

MAX_RATIO = 100.0
CANCELLED = "Build cancelled; nothing was kept."  # whichever step Cancel stopped: waiting, encoding or the map
LOCAL_DATASETS_VARIABLE = "RAG_BUILD_LOCAL_DATASETS"  # "1": visitors may name local dataset paths (tests, dev)


@dataclass
class BuildRequest:
    """The /build parameters, as the API names them."""

    archive: str | None = None
    dataset: str = ""
    split: str = "train"
    image_column: str = ""
    caption_column: str = ""
    label_column: str = ""
    label_from_folder: bool = False
    limit: int = 0


@dataclass
class BuildProgress:
    """What the progress bar shows: images done of total, images/s and seconds left (or the place in line)."""

    done: int
    total: int
    rate: float = 0.0
    eta: float | None = None
    waiting: int = 0
    stage: str = "encoding"

    def message(self) -> str:
        """One human line, e.g. "120 / 400 images · 14.2 images/s · about 20 s left"."""
        if self.stage == "waiting":
            builds = "build" if self.waiting == 1 else "builds"
            return f"Waiting: {self.waiting} {builds} ahead of yours (this Space builds one at a time)"
        if self.stage != "encoding":
            return self.stage
        if self.total and self.done >= self.total:
            return f"{self.done} / {self.total} images read · indexing them and drawing their map…"
        eta = f" · about {self.eta:.0f} s left" if self.eta is not None else ""
        return f"{self.done} / {self.total} images · {self.rate:.1f} images/s{eta}"


def check_limit(limit: Any, maximum: int) -> int:
    """The build's row limit: 0 means the Space's maximum; more than the maximum is refused."""
    try:
        value = int(limit or 0)
    except (TypeError, ValueError):
        raise InvalidInput(f"limit must be a whole number between 0 and {maximum}, not {limit!r}.") from None
    if not 0 <= value <= maximum:
        raise InvalidInput(f"limit must be between 0 (= the maximum) and {maximum}; got {value}.")
    return value or maximum


def make_source(request: BuildRequest, work: Path, settings: Settings, token: str | None = None,
                should_stop: Callable[[], bool] | None = None) -> Source:
    """The archive (extracted safely into ``work/images``) or the dataset (streamed up to the limit), opened as
    a visitor's: with the visitor's sign-in ``token`` or no token at all, never the Space's own HF_TOKEN."""
    limit = check_limit(request.limit, settings.build_max_images)
    has_dataset = bool((request.dataset or "").strip())
    if bool(request.archive) == has_dataset:
        raise InvalidInput("Give either an archive (.zip, .tar, .tar.gz) or a dataset name, not both or neither.")
    cap = settings.build_max_mb * 1_000_000
    if request.archive:
        archive = Path(request.archive)
        if not is_archive(archive.name):
            raise InvalidInput(f"{archive.name} is not a .zip, .tar or .tar.gz archive.")
        if archive.stat().st_size > cap:
            raise InvalidInput(f"{archive.name} is {archive.stat().st_size / 1e6:,.1f} MB; the limit is {settings.build_max_mb} MB.")
        limits = ArchiveLimits(max_total_bytes=cap, max_ratio=MAX_RATIO)
        return open_source(SourceSpec(images=archive, label_from_folder=bool(request.label_from_folder), limit=limit,
                                      asker=VISITOR, work_dir=work, archive_limits=limits, should_stop=should_stop))
    return _dataset_source(request, limit, work, token, should_stop)


def _dataset_source(request: BuildRequest, limit: int, work: Path, token: str | None,
                    should_stop: Callable[[], bool] | None = None) -> Source:
    """A Hub dataset, streamed (only ``limit`` rows are downloaded), with a `datasets` cache of this build's own."""
    name = request.dataset.strip()
    if not looks_like_repo_id(name) and os.environ.get(LOCAL_DATASETS_VARIABLE) != "1":
        raise InvalidInput(f"{name!r} is not a Hub dataset id (user/name).")
    captions = [c.strip() for c in request.caption_column.split(",") if c.strip()] if request.caption_column else None
    return open_source(SourceSpec(
        dataset=name, split=(request.split or "train").strip(), image_column=request.image_column.strip() or None,
        caption_columns=captions, label_column=request.label_column.strip() or None, limit=limit,
        token=token or None, asker=VISITOR, work_dir=work, should_stop=should_stop,
    ))


class _Meter:
    """Turns build_collection's (done, total) calls into BuildProgress with images/s and an ETA."""

    def __init__(self, report: Callable[[BuildProgress], None] | None) -> None:
        self.report, self.started, self.done = report, time.perf_counter(), 0

    def __call__(self, done: int, total: int) -> None:
        self.done = done
        elapsed = max(time.perf_counter() - self.started, 1e-6)
        rate = done / elapsed
        eta = (total - done) / rate if rate > 0 else None
        if self.report is not None:
            self.report(BuildProgress(done, total, rate, eta))


def run_session_build(
    registry: SessionRegistry,
    session_id: str,
    request: BuildRequest,
    settings: Settings,
    on_progress: Callable[[BuildProgress], None] | None = None,
    token: str | None = None,
    client: str | None = None,
) -> dict[str, Any]:
    """Build the session's collection and serve it to that session; returns ok, rows, skipped, seconds, rate.
    ``client`` (the caller's address) counts the build against that client's share of the line."""
    state, work = registry.begin_build(session_id, client)
    on_progress = _kept_on(state, on_progress)
    started = time.perf_counter()
    source: Source | None = None
    try:
        with registry.line.turn(
            on_wait=lambda ahead: on_progress(BuildProgress(0, 0, waiting=ahead, stage="waiting")),
            should_stop=state.cancel.is_set,
        ):
            reading = "Reading your archive…" if request.archive else "Reading the dataset…"
            on_progress(BuildProgress(0, 0, stage=reading))
            source = make_source(request, work, settings, token, should_stop=state.cancel.is_set)
            meter = _Meter(on_progress)
            options = BuildOptions(batch_size=settings.build_batch_size, workers=1, progress=False)
            encoder = base_encoder(registry.space.encoder)  # never a tuned collection's adapter (rag.models.adapter)
            manifest = build_collection(source, work / "collection", encoder, options,
                                        on_progress=meter, should_stop=state.cancel.is_set)
        name = _source_name(request)
        pipeline = registry.finish_build(session_id, work / "collection", name)
    except (BuildCancelled, BuildCancelledWhileWaiting, BuildStopped):
        registry.abort_build(session_id, work)
        return _failed(CANCELLED, source, started, cancelled=True)
    except InvalidInput:
        registry.abort_build(session_id, work, refund=True)
        raise
    except RagError as exc:
        registry.abort_build(session_id, work)
        return _failed(str(exc), source, started)
    except BaseException:
        registry.abort_build(session_id, work)
        raise
    finally:
        if source is not None:
            source.cleanup()  # extracted images, a visitor's datasets cache: the collection holds the thumbnails
    seconds = time.perf_counter() - started
    encode_seconds = float(manifest.build.get("seconds") or seconds)
    skipped = _skipped(source) + list(manifest.skipped.get("items", []))
    log.info("session build: %d rows in %.1f s (%.1f images/s)", manifest.rows, seconds, manifest.rows / encode_seconds)
    return {
        "ok": True, "rows": manifest.rows, "skipped": skipped, "seconds": round(seconds, 2),
        "images_per_second": round((manifest.rows + manifest.skipped.get("count", 0)) / max(encode_seconds, 1e-6), 2),
        "collection": name, "info": pipeline.info(),
    }


def _kept_on(state: SessionState, report: Callable[[BuildProgress], None] | None) -> Callable[[BuildProgress], None]:
    """``report`` that also keeps the line on the session's state, where the page polls it (SessionRegistry.progress)."""
    def tell(update: BuildProgress) -> None:
        if not state.cancel.is_set():  # after Cancel the state says "Cancelling…" until the build stops
            state.progress = update.message()
        if report is not None:
            report(update)
    return tell


def _source_name(request: BuildRequest) -> str:
    if request.archive:
        return f"your upload ({Path(request.archive).name})"
    return f"your dataset ({request.dataset.strip()}, {request.split or 'train'})"


def _skipped(source: Source | None) -> list[dict[str, str]]:
    return list(getattr(source, "archive_skipped", []) or [])


def _failed(message: str, source: Source | None, started: float, cancelled: bool = False) -> dict[str, Any]:
    return {"ok": False, "cancelled": cancelled, "error": message, "rows": 0, "skipped": _skipped(source),
            "seconds": round(time.perf_counter() - started, 2)}

