"""The collection a Space serves when RAG_COLLECTION is not set: 1,000 Flickr30k test images, built once.

On first start the app builds it into ``RAG_CACHE_DIR/default-collection`` with the real builder
(rag.ingest.builder.build_collection) and reuses it on every later start. An interrupted build resumes from its
committed chunks. Building needs the Hub (the dataset and the CLIP model); where that is not possible,
the caller shows the error and asks for RAG_COLLECTION instead.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from rag.ingest.builder import BuildOptions, build_collection
from rag.collection.reader import MANIFEST
from rag.config import DEFAULT_EMBEDDING_MODEL, Settings
from rag.models.encoder import Encoder
from rag.ingest.open_source import OWNER, SourceSpec, open_source
from rag.errors import ResumeMismatch

log = logging.getLogger(__name__)

DEFAULT_DATASET = "royokong/flickr30k_test"
DEFAULT_SPLIT = "test"
DEFAULT_LIMIT = 1000
FOLDER_NAME = "default-collection"


def default_collection_dir(cache_dir: Path) -> Path:
    """Where the default collection lives: ``<RAG_CACHE_DIR>/default-collection``."""
    return Path(cache_dir) / FOLDER_NAME


def default_collection_label(dataset: str = DEFAULT_DATASET, split: str = DEFAULT_SPLIT, limit: int = DEFAULT_LIMIT) -> str:
    """One line for the footer: what the default collection holds."""
    return f"{dataset} ({split}, first {limit:,} images; built at start-up because RAG_COLLECTION is not set)"


def ensure_default_collection(
    settings: Settings,
    status: Callable[[str], None] = log.info,
    dataset: str = DEFAULT_DATASET,
    split: str = DEFAULT_SPLIT,
    limit: int = DEFAULT_LIMIT,
    model: str = DEFAULT_EMBEDDING_MODEL,
) -> Path:
    """The default collection's folder: reused when already built, else built now (resuming a partial build).

    ``dataset``/``model`` may be local folders (the tests use a parquet file and a tiny CLIP).
    Raises CollectionError (a RagError) with a readable message when it cannot be built.
    """
    out = default_collection_dir(settings.cache_dir)
    if (out / MANIFEST).is_file():
        status(f"using the default collection already built at {out}")
        return out
    status(f"building the default collection from {dataset} ({split}, first {limit:,} images) into {out}")
    started = time.perf_counter()
    # the Space's own build (its token may read the owner's private dataset); streams: only `limit` rows are fetched
    source = open_source(SourceSpec(dataset=dataset, split=split, limit=limit, token=settings.hf_token, asker=OWNER))
    status(f"loading embedding model {model}")
    encoder = Encoder(model, device=settings.device, token=settings.hf_token)
    reported = [-1]

    def on_progress(done: int, total: int) -> None:
        percent = int(100 * done / max(total, 1))
        if percent // 10 > reported[0] // 10 or done == total:  # one log line per 10 %
            reported[0] = percent
            status(f"default collection: encoded {done:,}/{total:,} images ({percent}%)")

    options = BuildOptions(progress=False)
    try:
        build_collection(source, out, encoder, options, resume=True, on_progress=on_progress)
    except ResumeMismatch:
        status("an earlier partial build used other settings; starting again")
        build_collection(source, out, encoder, options, resume=False, on_progress=on_progress)
    status(f"default collection ready: {out} ({time.perf_counter() - started:.0f} s)")
    return out
