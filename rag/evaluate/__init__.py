"""`python -m rag.evaluate`: measure a collection with the Space's own pipeline: retrieval recall and RAG description quality.

    python -m rag.evaluate --collection user/flickr30k-collection --out report.json

Tasks (``--tasks``, default: every task the collection supports):

* ``t2i``  text -> image, Flickr30k/COCO protocol: every ground-truth caption is a query and its own
  image the one answer; Recall@1/5/10, MRR, median rank. Searched with ``Pipeline.search_ids``,
  so approximate indexes (HNSW, IVF-PQ) are measured as the Space serves them.
* ``i2t``  image -> text: for each image (its stored vector), the rank of the best of its own captions
  among all captions of the collection (encoded once); Recall@1/5/10, MRR, median rank.
* ``i2i``  image -> image by label: each labelled image queries the collection with itself excluded;
  top-1 / top-5 accuracy (label of the first / any of the first five results equals the query's) and
  mAP@10 (see ``rag.metrics.average_precision_at_k``: AP over the top 10 normalised by
  ``min(10, R)``, R = other rows with the query's label).
* ``describe``  for a seeded sample of rows, ``Pipeline.describe(thumbnail, k=k, exclude=[row])`` for
  each context size in ``--k`` (k = 0 is the captioner without retrieval); BLEU-4 and ROUGE-L F
  against the row's captions, label-inclusion rate, mean words, seconds per description (after one
  untimed warm-up call; ``Description.seconds``: retrieval + generation), and how
  often the description is word for word one of the retrieved captions (GIT's reranking can pick one).
* ``create``  (only with ``--tasks create``) retrieval-guided generation vs the base model from held-out
  captions: CLIP score, CMMD to the collection's images, FID where its weights are available (create_task).
* ``queries``  text -> image for a JSONL file of ``{"query": ..., "relevant": [row ids]}`` (for
  collections without captions); Recall@1/5/10 (any relevant row in the top K), MRR, median rank, mAP@10.

Captions written by a model at build time (``--caption-missing``) are not ground truth and are not
used as queries or references. Ranks from a search are cut at ``--depth`` results: a query whose
answer is deeper counts as not found (reciprocal rank 0), so MRR is MRR@depth (exact when the depth
covers the collection). All metric math lives in ``rag.metrics``.

Package layout: ``cli`` (flags, query files, exit codes), ``run`` (one evaluation: load through
rag.startup, run the requested tasks), ``tasks`` (the registry: one function per task), ``truth``
(ground truth from the collection), ``report`` (the Markdown tables). Machine details: rag.machine.
"""

from __future__ import annotations

from .cli import main, parse_args, read_queries
from .evaluation import evaluate
from .report import REPORT_SCHEMA, render_markdown
from .tasks import TASKS, Task, register
from .truth import GroundTruth

__all__ = ["REPORT_SCHEMA", "TASKS", "GroundTruth", "Task", "evaluate", "main", "parse_args", "read_queries",
           "register", "render_markdown"]

from . import map_task  # noqa: E402,F401 - registers the "map" task
from . import create_task  # noqa: E402,F401 - registers the "create" task (only with --tasks create)
