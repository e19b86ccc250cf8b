"""The evaluation report: what was measured on which collection, and the Markdown tables the command prints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .tasks import TASKS

REPORT_SCHEMA = 1


def collection_info(pipeline: Any) -> dict[str, Any]:
    """What was evaluated: name, revision, the commit folder of a Hub snapshot, rows, index, source."""
    collection = pipeline.collection
    manifest = collection.manifest
    directory = Path(collection.directory)
    commit = directory.name if directory.parent.name == "snapshots" else None  # a Hub snapshot folder
    return {
        "name": pipeline.name,
        "revision": pipeline.revision,
        "resolved_commit": commit,
        "directory": str(directory),
        "rows": len(collection),
        "built": manifest.build.get("time"),
        "build": manifest.build,
        "index": f"{manifest.index_factory} ({collection.index_type})",
        "fingerprint": collection.fingerprint,
        "source": manifest.source,
        "caption_source": manifest.caption_source,
        "generated_captions": manifest.generated_captions,
    }


def _pct(value: Any) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _num(value: Any, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def render_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown tables (what the command prints)."""
    results, skipped = report["results"], report["skipped"]
    col, models = report["collection"], report["models"]
    revision = f" @ `{col['revision']}`" if col.get("revision") else ""
    text_model = f", text `{models['text']}`" if models.get("text") else ""
    lines = [
        (
            f"Collection `{col['name']}`{revision}: {col['rows']} rows, index {col['index']}, "
            f"built {col.get('built') or '?'}; embedding `{models['embedding']}`{text_model}."
        ),
        "",
    ]
    rank_tasks = [t for t in ("t2i", "i2t", "queries") if t in results]
    if rank_tasks:
        lines += [
            "| task | queries | R@1 % | R@5 % | R@10 % | MRR | median rank | chance R@10 % |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for task in rank_tasks:
            r = results[task]
            median = f"> {r.get('depth', '?')}" if r["median_rank"] is None else f"{r['median_rank']:g}"
            lines.append(
                f"| {TASKS[task].title} | {r['queries']} | {_pct(r['R@1'])} | {_pct(r['R@5'])} | {_pct(r['R@10'])} | "
                f"{_num(r['MRR'])} | {median} | {_pct(r['chance_R@10'])} |"
            )
        lines.append("")
    if "i2i" in results:
        r = results["i2i"]
        lines += [
            "| task | queries | top-1 % | top-5 % | mAP@10 | chance top-1 % |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
            (
                f"| {TASKS['i2i'].title} | {r['queries']} | {_pct(r['top1'])} | {_pct(r['top5'])} | "
                f"{_num(r['mAP@10'])} | {_pct(r['chance_top1'])} |"
            ),
            "",
        ]
    if "describe" in results:
        lines += describe_table(results["describe"])
    if "map" in results:
        lines += map_table(results["map"])
    if "create" in results:
        from .create_task import create_table

        lines += create_table(results["create"])
    if report.get("finetune"):
        lines += finetune_lines(report["finetune"])
    for task, reason in skipped.items():
        lines.append(f"- skipped {task} ({TASKS[task].title}): {reason}")
    return "\n".join(lines).rstrip() + "\n"


def finetune_lines(f: dict[str, Any]) -> list[str]:
    """A collection tuned by rag.finetune: which rows were queried, and its held-out before/after table."""
    lines = [f"Tuned collection (rag.finetune, method `{f.get('method')}`): the queries above come from its "
             f"{f['queried']} (`--all-rows` queries every row)."]
    if f.get("table"):
        lines += ["", f"Held-out rows before → after, as measured when it was tuned (among the held-out rows; "
                      f"relevance: {f.get('relevance')}):", "", f["table"]]
    return lines + [""]


def map_table(r: dict[str, Any]) -> list[str]:
    """The map task's line: label agreement (raw, its ceiling, normalised) on the map vs the embedding space,
    trustworthiness and continuity."""
    def agreement(space: str) -> str:
        return f"{_pct(r.get(f'label_agreement_{space}'))} ({_pct(r.get(f'label_agreement_{space}_normalised'))})"

    return [
        f"| map ({r.get('method') or '?'}) | rows sampled | {r['k']}-NN label agreement, map % (of attainable) | "
        f"same, embedding space % | attainable % | trustworthiness | continuity |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {r['rows']} rows | {r['sampled']} | {agreement('map')} | {agreement('embedding')} | "
        f"{_pct(r.get('label_agreement_ceiling'))} | {_num(r.get('trustworthiness'))} | {_num(r.get('continuity'))} |",
        "",
    ]


def describe_table(d: dict[str, Any]) -> list[str]:
    """The describe task's table: one line per context size."""
    lines = [
        (
            f"Describe with {d['captioner']}, {d['rows']} sampled rows, each row's own thumbnail as the "
            "image and the row excluded from its own context:"
        ),
        "",
        "| context | BLEU-4 | ROUGE-L F | label included % | words | = a retrieved caption % | s / description |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for k, r in d["by_k"].items():
        name = "k = 0 (no RAG)" if k == "0" else f"k = {k}"
        lines.append(
            f"| {name} | {_num(r.get('bleu4'), 1)} | {_num(r.get('rougeL_f'))} | "
            f"{_pct(r.get('label_inclusion'))} | {r['words']:.1f} | {_pct(r['from_context'])} | "
            f"{r['seconds']:.3f} |"
        )
    return lines + [""]
