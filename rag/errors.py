"""Every user-facing exception type, in one scheme; their messages are written to be shown to a user.

    RagError
    ├── InvalidInput            a bad request: the caller can fix it (empty query, not an image, bad k)
    │   └── UsageError          a bad command-line flag or input file (exit status 2)
    └── ServiceError            the service cannot serve: configuration, data or models
        ├── ConfigError         a variable's value is not valid (RAG_CAPTIONER=..., RAG_QUANTIZE=...)
        ├── CollectionError     the collection cannot be loaded or built (missing file, checksum, version)
        │   ├── ResumeMismatch  an unfinished build was started with other settings and cannot be resumed
        │   └── MapMissing      the collection has no map (Explore tab, /map); says how to add one
        ├── EmbeddingModelError the CLIP / text encoder cannot be loaded or does not fit the collection
        ├── CaptionerError      the captioner cannot be loaded or cannot run
        │   └── GpuUnavailable  ZeroGPU gave no GPU for this call (GpuQuotaExceeded, GpuBusy)
        └── StartupError        start-up failed at a named stage; says which variable to set

The UI maps InvalidInput to "Invalid input" and every ServiceError to its message; the stage of a
start-up failure comes from the exception type (``StartupError.stage``), never from message text.
"""

from __future__ import annotations


class RagError(Exception):
    """Base class: anything the Space can explain to its user in one sentence."""


class InvalidInput(RagError):
    """A query, an image or a parameter that cannot be served (empty text, not an image, bad k)."""


class UsageError(InvalidInput):
    """A bad command-line flag or input file: reported in one line, exit status 2."""


class ServiceError(RagError):
    """The service cannot answer: something about its configuration, data or models, not the request."""


class ConfigError(ServiceError):
    """A configuration variable holds a value the app cannot use."""


class CollectionError(ServiceError):
    """A collection that cannot be loaded or built: missing file, checksum, version, model mismatch."""


class ResumeMismatch(CollectionError):
    """``--resume`` of an unfinished build that was started with different settings."""


class MapMissing(CollectionError):
    """The collection was built without a map; the message says how to add one (index_build.py --add-map)."""


class EmbeddingModelError(ServiceError):
    """The embedding model (or the aligned text model) cannot be loaded or does not fit the collection."""


class CaptionerError(ServiceError):
    """The captioner cannot be loaded, or cannot run right now."""


class StartupError(ServiceError):
    """Start-up failed: ``stage`` names what failed and ``fix`` says which variables to set."""

    def __init__(self, message: str, stage: str = "configuration", fix: str = "") -> None:
        super().__init__(message + (f"\n\n{fix}" if fix else ""))
        self.stage = stage
        self.fix = fix


class GpuUnavailable(CaptionerError):
    """The GPU that runs the captioner could not be had for this request (ZeroGPU); search keeps working."""


class GpuQuotaExceeded(GpuUnavailable):
    """The visitor's or the Space's ZeroGPU quota is used up; the platform's quota message is passed through."""


class GpuBusy(GpuUnavailable):
    """No GPU was free in time (ZeroGPU queue full or timed out)."""

    def __init__(self, message: str = "The GPU is busy, try again in a minute.") -> None:
        super().__init__(message)
