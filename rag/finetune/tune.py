"""One tuning run: SRC -> held-out split -> adapters -> before/after on the held-out rows -> DST (only if better).

Used by ``python -m rag.finetune`` and the Space's "Tune on my captions"; both get a FinetuneResult with the numbers,
whether DST was written, and why not.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from rag.collection.reader import Collection
from rag.config import Settings
from rag.errors import UsageError
from rag.ingest.paths import check_output
from rag.models.adapter import apply_adapter, base_encoder
from rag.models.quantize import quantize_encoder
from rag.startup import load_encoder
from rag.finetune.data import Pairs, Progress, load_pairs, split_rows
from rag.finetune.heldout import cross_modal_mrr, heldout_metrics, render_table
from rag.finetune.plots import pick_rows, write_similarity
from rag.finetune.train import TrainSettings, Trained, train_adapters
from rag.finetune.write import write_tuned

log = logging.getLogger(__name__)

METHODS = {"adapter": ("text",), "adapter-both": ("text", "image")}
DEFAULT_METHOD = "adapter"


@dataclass
class FinetuneOptions:
    """What ``python -m rag.finetune`` takes besides SRC and DST."""

    method: str = DEFAULT_METHOD
    holdout: float = 0.2
    seed: int = 0
    train: TrainSettings = field(default_factory=TrainSettings)
    min_gain: float = 0.0  # DST is written only when the held-out cross-modal MRR rises by more than this
    force: bool = False  # write DST even when it does not
    overwrite: bool = False
    plots_dir: Path | None = None
    quantize: str = "none"  # the base text tower while encoding captions: none (fp32), auto or int8 (as RAG_QUANTIZE)


@dataclass
class FinetuneResult:
    """The held-out numbers before and after, the table, and whether DST was written."""

    before: dict[str, Any]
    after: dict[str, Any]
    table: str
    improved: bool
    written: bool
    gain: float
    record: dict[str, Any]
    seconds: float
    message: str = ""


def check_method(method: str) -> tuple[str, ...]:
    """The sides a method tunes; an unknown method is a UsageError."""
    if method not in METHODS:
        raise UsageError(f"--method must be one of {', '.join(METHODS)}, not {method!r}.")
    return METHODS[method]


def _adapted(pairs: Pairs, trained: Trained) -> tuple[np.ndarray, np.ndarray]:
    texts, images = pairs.text_vectors, pairs.image_vectors
    if "text" in trained.adapters:
        texts = apply_adapter(trained.adapters["text"], texts)
    if "image" in trained.adapters:
        images = apply_adapter(trained.adapters["image"], images)
    return texts, images


def _record(source: Collection, name: str, options: FinetuneOptions, train_rows: np.ndarray, heldout: np.ndarray,
            pairs: Pairs, trained: Trained, before: dict, after: dict, text_model: str | None) -> dict[str, Any]:
    """What DST's manifest keeps about the run (build.finetune)."""
    return {
        "method": options.method, "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "base_model": {"id": source.manifest.model_id, "revision": source.manifest.model.get("revision"),
                       "text_model": text_model},
        "source": {"collection": name, "index_sha256": source.manifest.files.get("index.faiss")},
        "hyperparameters": {**asdict(options.train), "sides": list(trained.adapters), "epochs": trained.epochs},
        "heldout": {"fraction": options.holdout, "seed": options.seed, "rows": [int(r) for r in heldout],
                    "relevance": "same label" if pairs.labelled else "same image (rows without a label)"},
        "train": {"rows": int(len(train_rows)), "captions": int(len(pairs.captions_of(train_rows))),
                  "steps": trained.steps, "seconds": round(trained.seconds, 2), "final_loss": round(trained.final_loss, 4),
                  "temperature": round(trained.temperature, 4), "stopped": trained.stopped},
        "metrics": {"before": before, "after": after},
    }


def _open_source(source_dir: Path, out: Path, options: FinetuneOptions, settings: Settings,
                 encoder: Any) -> tuple[Collection, Any, str]:
    """SRC opened and checked, DST checked (before any work), and the base encoder: (source, encoder, how the
    captions are encoded)."""
    source = Collection.open(source_dir)
    if source.adapter_path is not None:
        raise UsageError("This collection is already tuned; tune the collection it was tuned from instead.")
    if Path(out).expanduser().resolve() == Path(source_dir).resolve():
        raise UsageError("--out must be a new folder: SRC is never changed.")
    check_output(Path(out), source.directory, options.overwrite)  # checked again when DST is written
    if encoder is not None:  # the Space's own, quantised as its RAG_QUANTIZE says
        return source, base_encoder(encoder), "the serving encoder"
    encoder = load_encoder(source, settings)
    quantized = quantize_encoder(encoder, options.quantize, towers=("text",), cache_dir=settings.cache_dir)
    return source, encoder, quantized.mode + (f" ({quantized.engine})" if quantized.engine else "")


def finetune(source_dir: Path, out: Path, options: FinetuneOptions, settings: Settings | None = None,
             encoder: Any = None, name: str | None = None, progress: Progress | None = None,
             should_stop: Callable[[], bool] | None = None) -> FinetuneResult:
    """Tune SRC's embedding space on its captions; DST is written only when the held-out rows got better (or
    ``options.force``). ``encoder``: an already loaded base encoder of SRC's model (the Space's), else loaded."""
    started = time.perf_counter()
    sides = check_method(options.method)
    source, encoder, encoding = _open_source(source_dir, out, options, settings or Settings(), encoder)
    pairs = load_pairs(source, encoder, progress)
    train_rows, heldout = split_rows(pairs.caption_rows, options.holdout, options.seed)
    before = heldout_metrics(pairs.text_vectors, pairs.image_vectors, pairs.owners, pairs.groups, heldout)
    train = TrainSettings(**{**asdict(options.train), "sides": sides, "seed": options.seed})
    on_step = (lambda step, total, loss: progress(f"training (loss {loss:.3f})", step / max(total, 1))) if progress else None
    trained = train_adapters(pairs.text_vectors, pairs.image_vectors, pairs.owners, pairs.groups, train_rows, train,
                             on_step=on_step, should_stop=should_stop)
    texts, images = _adapted(pairs, trained)
    after = heldout_metrics(texts, images, pairs.owners, pairs.groups, heldout)
    gain = cross_modal_mrr(after) - cross_modal_mrr(before)
    text_model = encoder.text_model_id if getattr(encoder, "text_model", None) is not encoder.model else None
    record = _record(source, name or source.directory.name, options, train_rows, heldout, pairs, trained, before,
                     after, text_model)
    record["caption_encoding"] = encoding
    table = record["table"] = render_table(before, after)
    if options.plots_dir is not None:
        record["plots"] = _plots(options.plots_dir, pairs, heldout, (texts, images))
    result = FinetuneResult(before, after, table, gain > options.min_gain, False, gain, record, 0.0)
    if result.improved or options.force:
        adapter_info = {"file": "adapter.safetensors", "method": options.method, "sides": list(sides),
                        "hidden": train.hidden, "text_model": text_model}
        write_tuned(source, Path(out), trained.adapters, adapter_info, record, table,
                    images if "image" in sides else None, overwrite=options.overwrite)
        result.written = True
    result.message = _verdict(result, options)
    result.seconds = round(time.perf_counter() - started, 2)
    return result


def _verdict(result: FinetuneResult, options: FinetuneOptions) -> str:
    change = f"held-out cross-modal MRR {result.gain:+.3f}"
    if result.improved:
        return f"Tuned: {change}."
    if result.written:
        return f"Not better on the held-out rows ({change}); written anyway (--force)."
    return f"Not better on the held-out rows ({change}, needed more than {options.min_gain:+.3f}): nothing was written."


def _plots(folder: Path, pairs: Pairs, heldout: np.ndarray, after: tuple[np.ndarray, np.ndarray]) -> dict[str, Any]:
    """The similarity matrix of a sample of held-out rows (first caption of each), before and after."""
    rows = pick_rows(heldout, pairs.groups)
    first = np.array([pairs.captions_of(np.array([r]))[0] for r in rows], dtype=np.int64)
    record = write_similarity(Path(folder), rows, [pairs.texts[i] for i in first],
                              (pairs.text_vectors[first], pairs.image_vectors[rows]), (after[0][first], after[1][rows]))
    return record
