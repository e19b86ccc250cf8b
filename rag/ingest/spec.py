"""SourceSpec: what a build reads and who asked for it, the one description every caller fills in.

index_build.py (the owner's CLI), the Space's Build tab (a visitor), the Space's default collection and the
Ray engine all describe their source with a SourceSpec and open it with rag.ingest.open_source.open_source.
Who is asking decides the rules: a visitor's build never uses the Space's own token, always streams, keeps
its `datasets` cache in its own build folder, and reads images only from bytes stored in the dataset.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rag.ingest.archives import ArchiveLimits

OWNER = "owner"  # the Space's owner: index_build.py, the default collection (may use HF_TOKEN, local paths)
VISITOR = "visitor"  # someone using the Space's Build tab or /build (their own sign-in token, or none)
ASKERS = (OWNER, VISITOR)


@dataclass(frozen=True)
class SourceSpec:
    """Exactly one of ``dataset`` (Hub id, dataset folder, parquet file(s)) or ``images`` (folder or archive).

    ``limit`` caps the rows (a `datasets` source then streams: only those rows are downloaded);
    ``streaming`` (owner only) forces a stream (True) or the whole split (False) whatever the limit;
    ``token`` is the Hub token to read with: for a visitor their sign-in token or None (= no token at all);
    ``work_dir`` is a folder this build may write into (an archive's images, a visitor's `datasets` cache);
    ``archive_limits`` are the caps an archive is checked against before extraction; ``should_stop`` is the
    build's Cancel, polled while an archive is listed and extracted.
    """

    dataset: str | None = None
    images: str | Path | None = None
    captions: str | Path | None = None
    label_from_folder: bool = False
    config: str | None = None
    split: str = "train"
    image_column: str | None = None
    caption_columns: Sequence[str] | None = None
    label_column: str | None = None
    where: Mapping[str, str] = field(default_factory=dict)
    limit: int | None = None
    token: str | bool | None = field(default=None, repr=False)
    asker: str = OWNER
    streaming: bool | None = None
    work_dir: Path | None = None
    archive_limits: ArchiveLimits | None = None
    should_stop: Callable[[], bool] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.asker not in ASKERS:
            raise ValueError(f"asker must be one of {ASKERS}, not {self.asker!r}")

    @property
    def visitor(self) -> bool:
        """True for a build a visitor of the Space asked for."""
        return self.asker == VISITOR

    @property
    def hub_token(self) -> str | bool | None:
        """The ``token`` argument for `datasets` / huggingface_hub.

        A visitor's own token, or False: huggingface_hub reads ``token=None`` as "use this machine's token"
        (HF_TOKEN, the Space's own secret), which must never read a dataset for a visitor. The owner's None
        keeps that default (their own machine, their own login).
        """
        if self.visitor:
            return self.token if isinstance(self.token, str) and self.token else False
        return self.token

    @property
    def streams(self) -> bool:
        """Read a `datasets` source as a stream: always for a visitor; else when asked, or when there is a limit."""
        if self.visitor:
            return True
        return bool(self.limit) if self.streaming is None else self.streaming
