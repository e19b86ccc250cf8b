"""open_source(spec): the one way to open what a build reads, for every caller.

index_build.py, the Space's Build tab (rag.space.session_build), the Space's default collection and the Ray
engine (which gets its Source from index_build.py) all come here with a SourceSpec:

* an archive is extracted safely (rag.ingest.archives) into ``work_dir/images`` (a temporary folder when
  there is no ``work_dir``);
* an image folder is read with its captions file; only the owner may name a folder on the machine;
* a `datasets` source streams whenever there is a limit (only the rows used are downloaded), for the CLI and
  the Build tab alike, and always for a visitor; without a limit the owner's split is read whole, and a
  ``save_to_disk`` folder (local, memory-mapped) is never streamed.
"""

from __future__ import annotations

from pathlib import Path

from rag.errors import InvalidInput, UsageError
from rag.ingest.archives import ArchiveLimits, ArchiveSource, is_archive
from rag.ingest.caption_files import NO_CAPTION_LIMITS
from rag.ingest.dataset_source import DatasetSource, is_saved_to_disk
from rag.ingest.dataset_stream import StreamingDatasetSource
from rag.ingest.sources import FolderSource, Source
from rag.ingest.spec import OWNER, VISITOR, SourceSpec

__all__ = ["OWNER", "VISITOR", "SourceSpec", "open_source"]


def open_source(spec: SourceSpec) -> Source:
    """The Source ``spec`` describes, opened by the rules of whoever asked (see rag.ingest.spec)."""
    if bool(spec.images) == bool(spec.dataset):
        raise UsageError("Give either an image folder or archive, or a dataset, not both or neither.")
    if spec.images:
        return _open_images(spec)
    if spec.streams and not is_saved_to_disk(spec.dataset):
        return StreamingDatasetSource(spec)
    return DatasetSource(spec)


def _open_images(spec: SourceSpec) -> Source:
    """An archive (extracted with its caps) or, for the owner, an image folder with its captions file."""
    images = Path(spec.images)
    if is_archive(images.name):
        target = Path(spec.work_dir) / "images" if spec.work_dir is not None else None
        return ArchiveSource(images, target, spec.label_from_folder, spec.limit,
                             spec.archive_limits or ArchiveLimits(), captions_file=spec.captions,
                             should_stop=spec.should_stop)
    if spec.visitor:
        raise InvalidInput("A build in the Space reads an uploaded archive or a Hub dataset, not a folder.")
    # the owner's own folder: its captions file is streamed, not capped (a large caption set is theirs to index)
    return FolderSource(images, spec.captions, spec.label_from_folder, spec.limit, caption_limits=NO_CAPTION_LIMITS)
