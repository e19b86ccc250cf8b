"""`python -m rag.finetune --collection SRC --out DST`: teach the search a collection's own words.

Trains a small residual adapter on the frozen CLIP embeddings of SRC's caption/image pairs (symmetric contrastive
loss), judges it on held-out rows (by image: no held-out image or caption is ever in a training batch) before and
after, and writes DST, a complete collection of the same format that carries the adapter, only when the held-out
rows got better. The Space then searches DST through the adapter on its usual start-up path (rag.models.adapter).

Package layout: ``data`` (pairs, split, base vectors), ``train`` (the adapters and the loss), ``heldout`` (the
before/after metrics and table), ``plots`` (the similarity matrices), ``write`` (DST), ``tune`` (one run), ``cli``.
"""

from rag.finetune.train import FinetuneCancelled, TrainSettings
from rag.finetune.tune import METHODS, FinetuneOptions, FinetuneResult, finetune

__all__ = ["METHODS", "FinetuneCancelled", "FinetuneOptions", "FinetuneResult", "TrainSettings", "finetune"]
