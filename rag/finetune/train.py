"""Train residual adapters on frozen CLIP embeddings with the symmetric contrastive (InfoNCE) loss.

The base vectors of both sides are computed once (rag.finetune.data), so a training step is two small matrix
products: hundreds of steps a second on one CPU core. Each batch holds training rows only, one random caption per
row; the loss is CLIP's symmetric cross-entropy over the batch's caption x image similarities, with every image
of the caption's group (its label, else only its own image) as a target, so two "kawung" images in a batch are not
pushed apart. AdamW, linear warm-up then cosine decay, a learned temperature; one thread, seeded: the same run
gives the same adapter, and the other core keeps serving searches.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from rag.errors import RagError
from rag.models.adapter import ResidualAdapter

AUTO_STEPS = 600  # --epochs 0: as many epochs as give at least this many steps (measured: benchmarks/finetune.py)
MAX_AUTO_EPOCHS = 300
MAX_LOGIT_SCALE = math.log(100.0)


class FinetuneCancelled(RagError):
    """Tuning was cancelled (the Space's Cancel button); nothing was written."""


@dataclass
class TrainSettings:
    """Hyper-parameters of one training run (recorded in the tuned collection's manifest)."""

    sides: tuple[str, ...] = ("text",)
    epochs: int = 0  # 0 = auto (AUTO_STEPS)
    batch_size: int = 128
    lr: float = 3e-2
    hidden: int = 256  # 0 = residual linear adapter
    weight_decay: float = 0.01
    temperature: float = 0.07  # initial; learned
    warmup: float = 0.1  # fraction of the steps
    seed: int = 0
    max_seconds: float | None = None  # stop (keeping what was learned) when training has run this long


@dataclass
class Trained:
    """The trained adapters and how the training went."""

    adapters: dict[str, ResidualAdapter]
    epochs: int
    steps: int
    seconds: float
    final_loss: float
    temperature: float
    stopped: str  # "finished" or "time budget"


def auto_epochs(train_rows: int, batch_size: int) -> int:
    """Epochs for ``--epochs 0``: enough for AUTO_STEPS steps (at least 1, at most MAX_AUTO_EPOCHS)."""
    per_epoch = max(1, math.ceil(train_rows / batch_size))
    return int(min(MAX_AUTO_EPOCHS, max(1, math.ceil(AUTO_STEPS / per_epoch))))


def training_batches(rows: np.ndarray, captions_by_row: dict[int, np.ndarray], batch_size: int,
                     rng: np.random.Generator) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """One epoch: the training rows shuffled into batches of (rows, one random caption index of each row)."""
    order = rng.permutation(rows)
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        if len(batch) < 2:  # a lone pair teaches the contrastive loss nothing
            continue
        captions = np.array([rng.choice(captions_by_row[int(row)]) for row in batch], dtype=np.int64)
        yield batch, captions


@contextmanager
def one_thread():
    """Train on one torch thread (deterministic, and leaves the other core to the Space's visitors)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def contrastive_loss(text: torch.Tensor, image: torch.Tensor, groups: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE with every same-group image (caption) as a target, equally weighted."""
    logits = logit_scale.exp() * text @ image.T
    targets = (groups[:, None] == groups[None, :]).float()
    targets = targets / targets.sum(dim=1, keepdim=True)
    return 0.5 * (-(targets * F.log_softmax(logits, dim=1)).sum(1).mean()
                  - (targets * F.log_softmax(logits.T, dim=1)).sum(1).mean())


def _schedule(optimizer: torch.optim.Optimizer, total: int, warmup: float) -> torch.optim.lr_scheduler.LambdaLR:
    warm = max(1, int(total * warmup))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _epochs_of_batches(epochs: int, rows: np.ndarray, captions_by_row: dict[int, np.ndarray], batch_size: int,
                       rng: np.random.Generator) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    for epoch in range(epochs):
        for batch_rows, captions in training_batches(rows, captions_by_row, batch_size, rng):
            yield epoch, batch_rows, captions


def _step(adapters: dict[str, ResidualAdapter], texts: torch.Tensor, images: torch.Tensor, groups: torch.Tensor,
          rows: np.ndarray, captions: np.ndarray, logit_scale: torch.Tensor) -> torch.Tensor:
    """The loss of one batch through the adapters (a side without an adapter passes its base vectors)."""
    rows_t = torch.from_numpy(rows)
    text = adapters["text"](texts[captions]) if "text" in adapters else texts[captions]
    image = adapters["image"](images[rows_t]) if "image" in adapters else images[rows_t]
    return contrastive_loss(text, image, groups[rows_t], logit_scale)


def train_adapters(
    text_vectors: np.ndarray, image_vectors: np.ndarray, owners: np.ndarray, groups: np.ndarray,
    train_rows: np.ndarray, settings: TrainSettings,
    on_step: Callable[[int, int, float], None] | None = None, should_stop: Callable[[], bool] | None = None,
) -> Trained:
    """Adapters for ``settings.sides`` trained on the captions/images of ``train_rows`` only.

    ``on_step(step, total, loss)`` after every step; ``should_stop()`` true cancels (FinetuneCancelled);
    past ``settings.max_seconds`` training stops and keeps what it learned (``stopped == "time budget"``).
    """
    train_rows = np.asarray(train_rows, dtype=np.int64)
    captions_by_row = {int(r): np.flatnonzero(owners == r) for r in train_rows}
    epochs = settings.epochs or auto_epochs(len(train_rows), settings.batch_size)
    total = epochs * sum(1 for s in range(0, len(train_rows), settings.batch_size) if len(train_rows) - s >= 2)
    with one_thread():
        torch.manual_seed(settings.seed)
        adapters = {side: ResidualAdapter(text_vectors.shape[1], settings.hidden) for side in settings.sides}
        logit_scale = torch.tensor(math.log(1.0 / settings.temperature), requires_grad=True)
        optimizer = torch.optim.AdamW([p for a in adapters.values() for p in a.parameters()] + [logit_scale],
                                      lr=settings.lr, weight_decay=settings.weight_decay)
        scheduler = _schedule(optimizer, total, settings.warmup)
        tensors = torch.from_numpy(text_vectors), torch.from_numpy(image_vectors), torch.from_numpy(groups)
        rng = np.random.default_rng(settings.seed)
        started, step, epoch, loss_value, stopped = time.perf_counter(), 0, 0, float("nan"), "finished"
        for epoch, rows, captions in _epochs_of_batches(epochs, train_rows, captions_by_row, settings.batch_size, rng):
            if should_stop is not None and should_stop():
                raise FinetuneCancelled("Tuning was cancelled; nothing was written.")
            loss = _step(adapters, *tensors, rows, captions, logit_scale)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            with torch.no_grad():
                logit_scale.clamp_(0.0, MAX_LOGIT_SCALE)
            step, loss_value = step + 1, float(loss.detach())
            if on_step is not None:
                on_step(step, total, loss_value)
            if settings.max_seconds is not None and time.perf_counter() - started > settings.max_seconds:
                stopped = "time budget"
                break
        for adapter in adapters.values():
            adapter.eval()
    return Trained(adapters, epoch + 1, step, time.perf_counter() - started, loss_value,
                   float(math.exp(-float(logit_scale.detach()))), stopped)
