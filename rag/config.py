"""One Settings object read from the RAG_* environment variables (the Space's variables)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from rag.errors import ConfigError

CAPTIONER_CHOICES = ("auto", "git", "qwen2-vl")
QUANTIZE_CHOICES = ("auto", "int8", "none")
DEFAULT_EMBEDDING_MODEL = "sentence-transformers/clip-ViT-B-32"
DEFAULT_CAPTIONER_MODELS = {"git": "microsoft/git-base-coco", "qwen2-vl": "Qwen/Qwen2-VL-2B-Instruct"}


def _env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def hf_token() -> str | None:
    """The Hub token (``HF_TOKEN``), read here only; never logged."""
    return _env("HF_TOKEN")


def _int_env(name: str, default: int, minimum: int = 1) -> int:
    value = _env(name)
    if value is None:
        return default
    try:
        number = int(float(value))
    except ValueError:
        raise ValueError(f"{name} must be a number, not {value!r}") from None
    if number < minimum:
        raise ValueError(f"{name} must be at least {minimum}, not {number}")
    return number


def context_columns(value: str | None = None) -> tuple[str, ...]:
    """``RAG_CONTEXT_COLUMNS`` (or ``value``): comma-separated metadata columns, blanks and repeats dropped, in order."""
    raw = _env("RAG_CONTEXT_COLUMNS") if value is None else value
    return tuple(dict.fromkeys(c.strip() for c in (raw or "").split(",") if c.strip()))


def parse_quantize(value: str | None) -> str:
    """A ``RAG_QUANTIZE`` / ``--quantize`` value, lower-cased; empty means ``auto``."""
    mode = (value or "auto").strip().lower() or "auto"
    if mode not in QUANTIZE_CHOICES:
        raise ConfigError(f"RAG_QUANTIZE must be one of {', '.join(QUANTIZE_CHOICES)}, not {value!r}")
    return mode


def default_cache_dir() -> Path:
    """Where thumbnails and locally built collections live (``RAG_CACHE_DIR``, else ``~/.cache/rag-space``)."""
    return Path(_env("RAG_CACHE_DIR") or Path.home() / ".cache" / "rag-space")


def _positive_float(name: str, default: float) -> float:
    value = _env(name)
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not number > 0 or number == float("inf"):
        raise ConfigError(f"{name} must be a positive number of gigabytes, not {value!r}")
    return number


@dataclass(frozen=True)
class Settings:
    """Everything the app needs to start; a duplicated Space only sets ``RAG_COLLECTION``."""

    collection: str | None = None
    revision: str | None = None
    text_model: str | None = None
    captioner: str = "auto"
    captioner_model: str | None = None
    hf_token: str | None = field(default=None, repr=False)
    cache_dir: Path = field(default_factory=default_cache_dir)
    device: str | None = None
    quantize: str = "auto"  # RAG_QUANTIZE (rag.models.quantize)
    cache_max_gb: float = 2.0
    # In-Space builds (issue 11): caps sized for CPU basic (2 vCPU, 16 GB RAM, 50 GB ephemeral disk).
    build_max_images: int = 2000
    build_max_mb: int = 200  # the upload, and separately the uncompressed images
    build_batch_size: int = 8  # small batches keep other visitors' searches answering during a build
    session_ttl: int = 7200  # seconds a session's collection lives
    session_max_builds: int = 5  # builds one session may start within its TTL
    build_line_max: int = 8  # builds running or waiting at once in the Space; more are refused at once
    build_per_client: int = 2  # of those, how many one client (address) may hold, whatever its sessions
    upload_grace: int = 300  # seconds an uploaded archive may wait for its /build before it is deleted
    admins: tuple[str, ...] = ()
    # RAG_CONTEXT_COLUMNS: metadata columns whose values are fused into the create (and describe) prompts
    context_columns: tuple[str, ...] = ()

    @classmethod
    def from_env(cls) -> "Settings":
        """Read ``RAG_COLLECTION``, ``RAG_REVISION``, ``RAG_TEXT_MODEL``, ``RAG_CAPTIONER``, ... and ``HF_TOKEN``."""
        captioner = (_env("RAG_CAPTIONER") or "auto").lower()
        if captioner not in CAPTIONER_CHOICES:
            raise ConfigError(f"RAG_CAPTIONER must be one of {', '.join(CAPTIONER_CHOICES)}, not {captioner!r}")
        quantize = parse_quantize(_env("RAG_QUANTIZE"))
        return cls(
            collection=_env("RAG_COLLECTION"),
            revision=_env("RAG_REVISION"),
            text_model=_env("RAG_TEXT_MODEL"),
            captioner=captioner,
            captioner_model=_env("RAG_CAPTIONER_MODEL"),
            hf_token=hf_token(),
            cache_dir=default_cache_dir(),
            device=_env("RAG_DEVICE"),
            quantize=quantize,
            cache_max_gb=_positive_float("RAG_CACHE_MAX_GB", 2.0),
            build_max_images=_int_env("RAG_BUILD_MAX_IMAGES", 2000),
            build_max_mb=_int_env("RAG_BUILD_MAX_MB", 200),
            build_batch_size=_int_env("RAG_BUILD_BATCH_SIZE", 8),
            session_ttl=_int_env("RAG_SESSION_TTL", 7200, minimum=10),
            session_max_builds=_int_env("RAG_SESSION_MAX_BUILDS", 5),
            build_line_max=_int_env("RAG_BUILD_LINE_MAX", 8),
            build_per_client=_int_env("RAG_BUILD_PER_CLIENT", 2),
            upload_grace=_int_env("RAG_UPLOAD_GRACE", 300, minimum=10),
            admins=tuple(a.strip() for a in (_env("RAG_ADMINS") or "").split(",") if a.strip()),
            context_columns=context_columns(),
        )
