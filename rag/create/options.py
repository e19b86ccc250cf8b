"""What Create runs, read from the Space's variables: on or off, which model, which autoencoder, size, safety.

* ``RAG_CREATE``: ``auto`` (default: on when diffusers is installed), ``on`` (a missing diffusers is an error
  shown in the tab) or ``off`` (no Create tab, no /create endpoint).
* ``RAG_CREATE_MODEL``: a diffusers pipeline, Hub id or local folder (default ``DEFAULT_MODEL``).
* ``RAG_CREATE_VAE``: ``auto`` (default: with the default model on a CPU, the tiny TAESD autoencoder; else the
  model's own), ``model`` (always the model's own), or the id/folder of an ``AutoencoderTiny``.
* ``RAG_CREATE_SIZE``: the side of the square image in pixels (default 512 on a GPU, ``CPU_SIZE`` on a CPU).
* ``RAG_CREATE_SAFETY``: ``on`` (default) or ``off`` (only for a private Space: nothing is checked then).

Defaults, by hardware (docs/create.md has the measurements and licences): the latent-consistency distillation
of Dreamshaper v7 (MIT licence, SD-1.5 architecture, 2-4 steps, ships the SD safety checker) on every
hardware; on a CPU at ``CPU_SIZE`` pixels with TAESD (MIT) as the autoencoder, because the SD autoencoder's
decoder alone costs more than the UNet steps there (benchmarks/create_speed.py).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

from rag.errors import ConfigError

CREATE_CHOICES = ("auto", "on", "off")
DEFAULT_MODEL = "SimianLuo/LCM_Dreamshaper_v7"
TINY_VAE = "madebyollin/taesd"
GPU_SIZE = 512
CPU_SIZE = 256
MIN_SIZE, MAX_SIZE = 32, 1024
DEFAULT_STEPS = 4  # a latent-consistency model's sweet spot; other models want ~25 (set steps per call)
DEFAULT_GUIDANCE = 7.5
DEFAULT_STRENGTH = 0.55  # the seed dashboard's img2img strength


def _env(name: str) -> str:
    return os.environ.get(name, "").strip()


def create_mode() -> str:
    """``RAG_CREATE`` lower-cased (``auto`` when unset); a value outside auto/on/off is a ConfigError."""
    mode = (_env("RAG_CREATE") or "auto").lower()
    if mode not in CREATE_CHOICES:
        raise ConfigError(f"RAG_CREATE must be one of {', '.join(CREATE_CHOICES)}, not {mode!r}")
    return mode


def diffusers_missing() -> str | None:
    """Why Create cannot run here (diffusers not installed), or None."""
    if importlib.util.find_spec("diffusers") is None:
        return "Create needs the diffusers package (pip install -r requirements.txt)."
    return None


def create_state() -> tuple[bool, str | None]:
    """(show Create?, the problem to show in its tab). ``off`` hides it; ``auto`` hides it without diffusers;
    ``on`` shows it with the reason it cannot run; a bad RAG_CREATE is shown, not raised."""
    try:
        mode = create_mode()
    except ConfigError as exc:
        return True, str(exc)
    if mode == "off":
        return False, None
    missing = diffusers_missing()
    if missing and mode == "auto":
        return False, None
    return True, missing


def _size(on_gpu: bool) -> int:
    raw = _env("RAG_CREATE_SIZE")
    if not raw:
        return GPU_SIZE if on_gpu else CPU_SIZE
    try:
        size = int(raw)
    except ValueError:
        size = 0
    if not MIN_SIZE <= size <= MAX_SIZE or size % 8:
        raise ConfigError(f"RAG_CREATE_SIZE must be a multiple of 8 from {MIN_SIZE} to {MAX_SIZE} pixels, not {raw!r}")
    return size


@dataclass(frozen=True)
class CreateOptions:
    """The generator's model, autoencoder, device, image size and safety switch."""

    model: str = DEFAULT_MODEL
    vae: str | None = None  # an AutoencoderTiny to use instead of the model's own, or None
    device: str = "cpu"
    size: int = CPU_SIZE
    safety: bool = True
    token: str | None = None

    @classmethod
    def from_env(cls, device: str, token: str | None = None) -> "CreateOptions":
        """Read RAG_CREATE_MODEL, RAG_CREATE_VAE, RAG_CREATE_SIZE and RAG_CREATE_SAFETY for ``device``."""
        model = _env("RAG_CREATE_MODEL") or DEFAULT_MODEL
        vae_choice = _env("RAG_CREATE_VAE") or "auto"
        on_gpu = device.startswith("cuda")
        if vae_choice.lower() == "auto":
            vae = TINY_VAE if model == DEFAULT_MODEL and not on_gpu else None
        elif vae_choice.lower() == "model":
            vae = None
        else:
            vae = vae_choice
        safety = (_env("RAG_CREATE_SAFETY") or "on").lower()
        if safety not in ("on", "off"):
            raise ConfigError(f"RAG_CREATE_SAFETY must be on or off, not {safety!r}")
        return cls(model=model, vae=vae, device=device, size=_size(on_gpu), safety=safety == "on", token=token)
