"""The ``create`` evaluation task: retrieval-guided generation against the base model, the seed dashboard's table
made reproducible (it reported FID 45.2 plain vs 28.4 with retrieval fusion, and a CLIP score of 0.31).

For a seeded sample of rows with human captions (``--sample``, default ``DEFAULT_CREATE_ROWS``), the row's
first caption is the query and the row is held out (left out of its own references). Each query is created
twice at the same seed (``--seed`` + its index): with ``use_context=false`` (the base model from the query
alone, text to image) and ``use_context=true`` (references, fusion prompt, best reference as the init image).
Reported side by side: the CLIP score (generated image vs query), CMMD to the collection's images (a seeded
sample of up to ``REFERENCE_ROWS`` stored vectors) and FID to their thumbnails where its Inception weights are
available. The generator comes from the Space's variables (RAG_CREATE_MODEL, RAG_CREATE_SIZE, ...).
It is not part of the default run (generation is slow): ask for it with ``--tasks create``.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from rag.config import context_columns
from rag.create import CreateOptions, Creator
from rag.create.options import DEFAULT_GUIDANCE, DEFAULT_STEPS, DEFAULT_STRENGTH
from rag.models.devices import generator_device
from . import image_metrics
from .run import EvalRun
from .tasks import register
from .truth import sample_rows

DEFAULT_CREATE_ROWS = 8
REFERENCE_ROWS = 1000
CREATE_K = 3
SWITCH = {"false": False, "true": True}


def _creator(ctx: EvalRun) -> Creator:
    device = generator_device(getattr(ctx.args, "device", None) or os.environ.get("RAG_DEVICE", "").strip() or None)
    return Creator(CreateOptions.from_env(device, os.environ.get("HF_TOKEN") or None), context_columns())


def _generate(ctx: EvalRun, creator: Creator, rows: np.ndarray) -> dict[str, dict[str, list]]:
    """Per switch value: the images (None when flagged), queries, seconds and reference ids of each row."""
    out = {name: {"images": [], "queries": [], "seconds": [], "init_ids": []} for name in SWITCH}
    with tqdm(total=2 * len(rows), desc="create", unit="image", disable=not ctx.progress, leave=False) as bar:
        for index, row in enumerate(map(int, rows)):
            query = ctx.truth.captions[row][0]
            for name, switch in SWITCH.items():
                creation = creator.create(ctx.pipeline, query, k=CREATE_K, strength=DEFAULT_STRENGTH, steps=DEFAULT_STEPS,
                                          guidance=DEFAULT_GUIDANCE, seed=ctx.args.seed + index, use_context=switch,
                                          exclude=[row])
                out[name]["images"].append(creation.image)
                out[name]["queries"].append(query)
                out[name]["seconds"].append(creation.timings.get("generate", 0.0))
                out[name]["init_ids"].append(creation.init_id)
                bar.update(1)
    return out


def _scores(ctx: EvalRun, made: dict[str, list], reference_vectors: np.ndarray, real: list,
            fid_reason: str | None) -> dict[str, Any]:
    """CLIP score, CMMD and FID of one switch value's images (flagged ones counted and left out)."""
    kept = [i for i, image in enumerate(made["images"]) if image is not None]
    result: dict[str, Any] = {"images": len(kept), "flagged": len(made["images"]) - len(kept),
                              "seconds_per_image": float(np.mean(made["seconds"])) if made["seconds"] else None}
    if not kept:
        return {**result, "clip_score": None, "cmmd": None, "fid": {"available": False, "reason": "no image"}}
    encoder = ctx.pipeline.encoder
    images = [made["images"][i] for i in kept]
    vectors = encoder.encode_images(images)
    texts = encoder.encode_texts([made["queries"][i] for i in kept])
    result["clip_score"] = float(image_metrics.clip_scores(vectors, texts).mean())
    result["cmmd"] = image_metrics.cmmd(vectors, reference_vectors)
    result["fid"] = image_metrics.fid(real, images) if real else {"available": False, "reason": fid_reason}
    return result


@register("create", "create (retrieval-guided generation)", by_default=False)
def task_create(ctx: EvalRun) -> dict[str, Any]:
    """Create from held-out captions with and without the collection as context; CLIP score, CMMD, FID."""
    from rag.images.decode import load_image

    rows = sample_rows(ctx.truth.caption_rows, ctx.args.sample or DEFAULT_CREATE_ROWS, ctx.args.seed, "create")
    creator = _creator(ctx)
    made = _generate(ctx, creator, rows)
    reference_rows = sample_rows(np.arange(ctx.truth.rows), REFERENCE_ROWS, ctx.args.seed, "create-reference")
    reference_vectors = ctx.images.get(reference_rows)
    _, unavailable = image_metrics.fid_metric()
    real = [] if unavailable else [load_image(ctx.pipeline.collection.thumbnail(int(r))) for r in reference_rows]
    by_context = {name: _scores(ctx, made[name], reference_vectors, real, unavailable) for name in SWITCH}
    options = creator.options
    return {
        "rows": len(rows), "sample": [int(r) for r in rows], "reference_rows": len(reference_rows),
        "model": options.model, "vae": options.vae, "size": options.size, "device": options.device,
        "k": CREATE_K, "strength": DEFAULT_STRENGTH, "steps": DEFAULT_STEPS, "guidance": DEFAULT_GUIDANCE, "seeds": f"{ctx.args.seed}..{ctx.args.seed + len(rows) - 1}",
        "context_columns": list(creator.context_columns), "by_context": by_context,
        "init_from_reference": float(np.mean([i is not None for i in made["true"]["init_ids"]])) if len(rows) else None,
        "cmmd_settings": {"sigma": image_metrics.CMMD_SIGMA, "scale": image_metrics.CMMD_SCALE,
                          "embedding": ctx.pipeline.collection.manifest.model_id},
        "fid_unavailable": unavailable,
        "examples": [{"row": int(r), "query": made["true"]["queries"][i], "init_id": made["true"]["init_ids"][i]}
                     for i, r in enumerate(rows[:5])],
    }


def create_table(r: dict[str, Any]) -> list[str]:
    """The create task's table: one line per context switch."""
    def num(value: Any, digits: int = 3) -> str:
        return "–" if value is None else f"{value:.{digits}f}"

    lines = [f"Create with `{r['model']}` ({r['size']} px, {r['device']}), {r['rows']} held-out captions as queries, "
             f"k = {r['k']}, seeds {r['seeds']}; CMMD against {r['reference_rows']} collection images:", "",
             "| collection as context | images | flagged | CLIP score | CMMD | FID | s / image |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, row in r["by_context"].items():
        fid = row["fid"]
        fid_text = num(fid.get("value"), 1) if fid.get("available") else "unavailable"
        lines.append(f"| {'yes' if name == 'true' else 'no (base model)'} | {row['images']} | {row['flagged']} | "
                     f"{num(row['clip_score'])} | {num(row['cmmd'])} | {fid_text} | {num(row['seconds_per_image'], 2)} |")
    if r.get("fid_unavailable"):
        lines.append(f"\nFID unavailable: {r['fid_unavailable']}.")
    return lines + [""]
