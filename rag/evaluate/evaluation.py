"""One evaluation end to end: load the pipeline through rag.startup, run the requested tasks, build the report."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import time
from typing import Any

import numpy as np

from rag import metrics
from rag.config import Settings
from rag.errors import RagError
from rag.machine import machine_info
from rag.startup import open_pipeline
from .report import REPORT_SCHEMA, collection_info, render_markdown
from .run import EvalRun, ImageVectors
from .tasks import TASKS
from .truth import GroundTruth

log = logging.getLogger("rag.evaluate")


def _load_captioner(run: EvalRun, settings: Settings, skipped: dict[str, str], timings: dict[str, float]) -> EvalRun:
    """The describe task needs a captioner; without one it is skipped (or fails, when asked for by name)."""
    from rag.startup import load_captioner_for

    try:
        started = time.perf_counter()
        run.pipeline = run.pipeline.with_captioner(load_captioner_for(settings, run.pipeline.encoder))
        timings["load_captioner"] = round(time.perf_counter() - started, 3)
    except RagError as exc:
        if run.args.tasks:  # asked for by name: fail loudly
            raise
        skipped["describe"] = f"the captioner could not be loaded: {exc}"
        log.warning("skipping describe: %s", exc)
    return run


def _run_tasks(run: EvalRun, skipped: dict[str, str], timings: dict[str, float]) -> dict[str, Any]:
    """Run each requested task the collection supports; note why the others were skipped."""
    results: dict[str, Any] = {}
    have_queries = bool(run.args.query_items)
    for name, task in TASKS.items():
        if name in skipped:
            continue
        reason = run.truth.skip_reason(name, have_queries)
        if name not in run.requested:
            if run.args.tasks is None and reason:
                skipped[name] = reason
            continue
        if reason:
            skipped[name] = reason
            log.warning("skipping %s: %s", name, reason)
            continue
        log.info("running %s (%s)", name, task.title)
        started = time.perf_counter()
        results[name] = task.run(run)
        timings[name] = round(time.perf_counter() - started, 3)
        results[name]["seconds_total"] = timings[name]
    return results


def evaluate(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    """Load the pipeline, run the tasks, return the report dict."""
    started = time.perf_counter()
    requested = args.tasks or [t for t in TASKS if TASKS[t].by_default and (t != "queries" or args.query_items)]
    pipeline = open_pipeline(settings, with_captioner=False, status=log.info)
    truth = GroundTruth.of(pipeline.collection)
    tuned = finetune_record(pipeline.collection, getattr(args, "all_rows", False))
    if tuned and tuned["queried"] == "held-out rows":
        truth.query_rows = np.asarray(tuned["heldout_rows"], dtype=np.int64)
    run = EvalRun(pipeline, truth, args, ImageVectors(pipeline, not args.no_progress), requested=requested)
    skipped: dict[str, str] = {}
    timings: dict[str, float] = {"load": round(pipeline.load_seconds, 3)}
    if "describe" in requested:
        run = _load_captioner(run, settings, skipped, timings)
    results = _run_tasks(run, skipped, timings)
    timings["total"] = round(time.perf_counter() - started, 3)
    report = _report(run, settings, results, skipped, timings)
    if tuned:
        report["finetune"] = {k: v for k, v in tuned.items() if k != "heldout_rows"}
    report["table"] = render_markdown(report)
    return report


def finetune_record(collection: Any, all_rows: bool) -> dict[str, Any] | None:
    """A collection tuned by rag.finetune: its held-out rows (queried by default) and the before/after table
    measured at tuning time; None for an untuned collection."""
    record = collection.manifest.build.get("finetune") if collection.manifest.model.get("adapter") else None
    if not isinstance(record, dict):
        return None
    rows = [int(r) for r in (record.get("heldout") or {}).get("rows", []) if 0 <= int(r) < len(collection)]
    return {"method": record.get("method"), "heldout_rows": rows, "queried": "all rows" if all_rows or not rows
            else "held-out rows", "relevance": (record.get("heldout") or {}).get("relevance"),
            "table": record.get("table"), "metrics": record.get("metrics")}


def generation_settings(captioner: Any) -> dict[str, Any] | None:
    """Every captioner setting that moves a describe figure: kind, model, device, dtype (and quantisation),
    beams and token limits. None without a captioner."""
    if captioner is None:
        return None
    from rag.models import captioner as captioners

    model = getattr(captioner, "model", None)
    dtype = getattr(model, "dtype", None) or getattr(captioner, "dtype", None)
    settings: dict[str, Any] = {"kind": getattr(captioner, "kind", type(captioner).__name__),
                                "model": getattr(captioner, "model_id", None), "device": getattr(captioner, "device", None),
                                "dtype": str(dtype).removeprefix("torch.") if dtype is not None else None,
                                "quantize": getattr(captioner, "quantize", None)}
    if settings["kind"] == "git":
        settings.update(beams=captioners.GIT_BEAMS, context_beams=captioners.GIT_CONTEXT_BEAMS,
                        max_new_tokens=captioners.GIT_MAX_NEW_TOKENS, consensus_weight=captioners.CONSENSUS_WEIGHT)
    elif settings["kind"] == "qwen2-vl":
        settings.update(decoding="greedy", max_new_tokens=captioners.QWEN_MAX_NEW_TOKENS,
                        max_pixels=captioners.QWEN_MAX_PIXELS)
    return settings


def _report(run: EvalRun, settings: Settings, results: dict[str, Any], skipped: dict[str, str],
            timings: dict[str, float]) -> dict[str, Any]:
    """The JSON report: settings, collection, models, machine, ground truth, results, skipped tasks, timings."""
    args, info = run.args, run.pipeline.info()
    return {
        "schema": REPORT_SCHEMA,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": ["python", "-m", "rag.evaluate", *getattr(args, "argv", [])],
        "settings": {
            "tasks": run.requested, "sample": args.sample, "seed": args.seed, "k": args.k, "depth": args.depth,
            "queries_file": args.queries, "captioner": settings.captioner, "captioner_model": settings.captioner_model,
            "text_model": settings.text_model, "device": info["device"],
            # the query path: RAG_QUANTIZE / --quantize as asked, and what runs (int8 ONNX Runtime moves MRR slightly)
            "quantize_requested": settings.quantize, "quantize": info["quantize"],
            "quantize_engine": info["quantize_engine"],
            "generation": generation_settings(run.pipeline.captioner),
            "metrics": {"bleu": metrics.BLEU_SETTINGS, "rouge": metrics.ROUGE_SETTINGS,
                        "map": "AP@10 normalised by min(10, R), R = relevant rows other than the query"},
        },
        "collection": collection_info(run.pipeline),
        "models": {
            "embedding": info["embedding_model"],
            "embedding_revision": run.pipeline.collection.manifest.model.get("revision"),
            "text": settings.text_model,
            "captioner": info["captioner"],
        },
        "machine": machine_info(),
        "ground_truth": {"rows_with_captions": len(run.truth.caption_rows),
                         "rows_with_labels": len(run.truth.labelled_rows),
                         "rows_with_generated_captions": run.truth.generated_caption_rows},
        "results": results,
        "skipped": skipped,
        "timings": timings,
    }
