"""The command line of ``python -m rag.evaluate``: flags, query files, settings, exit codes."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rag import metrics
from rag.config import CAPTIONER_CHOICES, QUANTIZE_CHOICES, Settings
from rag.errors import ConfigError, RagError, UsageError
from .evaluation import evaluate
from .tasks import DEFAULT_DESCRIBE_ROWS, TASKS

log = logging.getLogger("rag.evaluate")

DEFAULT_KS = (0, 1, 5)
DEFAULT_DEPTH = 100


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _task_list(text: str) -> list[str]:
    tasks = [t.strip().lower() for t in text.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise argparse.ArgumentTypeError(
            f"unknown task(s) {', '.join(unknown) or '(none given)'}; choose from {','.join(TASKS)}"
        )
    return list(dict.fromkeys(tasks))


def _k_list(text: str) -> list[int]:
    from rag.pipeline import MAX_CONTEXT_K

    values = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            value = int(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"context sizes are whole numbers, got {part!r}") from None
        if not 0 <= value <= MAX_CONTEXT_K:
            raise argparse.ArgumentTypeError(f"context size {value} is outside 0..{MAX_CONTEXT_K}")
        values.append(value)
    if not values:
        raise argparse.ArgumentTypeError("give at least one context size, e.g. 0,1,5")
    return list(dict.fromkeys(values))


def build_parser() -> argparse.ArgumentParser:
    """The command's flags (task names come from the registry)."""
    parser = argparse.ArgumentParser(
        prog="python -m rag.evaluate",
        description="Retrieval and RAG-description metrics of a collection, measured through rag.pipeline.",
        epilog="Example: python -m rag.evaluate --collection user/flickr30k-collection --sample 200 --out report.json",
    )
    parser.add_argument("--collection", help="collection folder or Hub dataset repo id (default: $RAG_COLLECTION)")
    parser.add_argument("--revision", help="branch, tag or commit of the dataset repo (default: $RAG_REVISION)")
    parser.add_argument("--tasks", type=_task_list, help=f"comma list of {','.join(TASKS)} "
                        "(default: every task the collection supports)")
    parser.add_argument("--sample", type=_positive_int, help=f"rows to describe (default {DEFAULT_DESCRIBE_ROWS}) and, "
                        "when given, the most queries per retrieval task (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the row/query samples (default: 0)")
    parser.add_argument("--k", type=_k_list, default=list(DEFAULT_KS), help="context sizes to describe with; "
                        "0 = no retrieval (default: 0,1,5)")
    parser.add_argument("--depth", type=_positive_int, default=DEFAULT_DEPTH,
                        help=f"results searched per text query (default: {DEFAULT_DEPTH}); an answer ranked deeper "
                        "counts as not found (MRR@depth). R@1/5/10 are exact for any depth >= 10; a smaller depth "
                        "is faster on big collections")
    parser.add_argument("--queries", metavar="FILE", help='JSONL of {"query": "...", "relevant": [row ids]} '
                        "for text -> image on collections without captions")
    parser.add_argument("--captioner", choices=CAPTIONER_CHOICES,
                        help="captioner for describe (default: $RAG_CAPTIONER, else auto)")
    parser.add_argument("--captioner-model", help="model id or folder of the captioner (default: $RAG_CAPTIONER_MODEL)")
    parser.add_argument("--text-model",
                        help="aligned text encoder for queries (default: $RAG_TEXT_MODEL, else the collection's model)")
    parser.add_argument("--quantize", choices=QUANTIZE_CHOICES,
                        help="query encoding: auto (int8 on CPU after a fidelity check, fp16 on CUDA), int8 or none "
                             "(fp32, the published baselines' setting) (default: $RAG_QUANTIZE, else auto)")
    parser.add_argument("--device", help="cpu, cuda, ... (default: $RAG_DEVICE, else cuda if available)")
    parser.add_argument("--all-rows", action="store_true", help="on a collection tuned by rag.finetune, query from "
                        "every row, not only the held-out rows it was never trained on")
    parser.add_argument("--out", metavar="FILE", help="write the JSON report here")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and check the flags; a bad flag exits with status 2 and a one-line message."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.depth < max(metrics.DEFAULT_KS):
        parser.error(f"--depth must be at least {max(metrics.DEFAULT_KS)} (Recall@10 needs 10 results)")
    if args.tasks and "queries" in args.tasks and not args.queries:
        parser.error("the 'queries' task needs --queries FILE")
    if args.queries:
        try:
            args.query_items = read_queries(Path(args.queries))
        except UsageError as exc:
            parser.error(str(exc))
    else:
        args.query_items = None
    return args


def read_queries(path: Path) -> list[dict[str, Any]]:
    """Parse a JSONL query file; any malformed line is a UsageError naming the line."""
    if not path.is_file():
        raise UsageError(f"--queries: no file at {path}")
    items = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except ValueError as exc:
                raise UsageError(f"{path} line {number}: not JSON ({exc})") from None
            if not isinstance(item, dict):
                raise UsageError(f"{path} line {number}: expected an object with 'query' and 'relevant'")
            query, relevant = item.get("query"), item.get("relevant")
            if not isinstance(query, str) or not query.strip():
                raise UsageError(f"{path} line {number}: 'query' must be a non-empty string")
            if (
                not isinstance(relevant, list)
                or not relevant
                or not all(isinstance(i, int) and not isinstance(i, bool) for i in relevant)
            ):
                raise UsageError(f"{path} line {number}: 'relevant' must be a non-empty list of row ids (integers)")
            items.append({"query": " ".join(query.split()), "relevant": sorted(set(relevant)), "line": number})
    if not items:
        raise UsageError(f"{path} holds no queries")
    return items


def make_settings(args: argparse.Namespace) -> Settings:
    """The Space's settings from the environment, overridden by the flags."""
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    overrides = {
        "collection": args.collection, "revision": args.revision, "text_model": args.text_model,
        "captioner": args.captioner, "captioner_model": args.captioner_model, "device": args.device,
        "quantize": args.quantize,
    }
    settings = dataclasses.replace(settings, **{k: v for k, v in overrides.items() if v is not None})
    if not settings.collection:
        raise UsageError("give --collection DIR_OR_REPO (or set RAG_COLLECTION)")
    return settings


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command: 0 on success, 2 on a usage error, 1 when the collection or a model fails."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)  # exits 2 with a message on bad flags
    args.argv = argv
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        report = evaluate(args, make_settings(args))
        if args.out:
            _write_json(Path(args.out), report)
    except UsageError as exc:
        print(f"python -m rag.evaluate: error: {exc}", file=sys.stderr)
        return 2
    except RagError as exc:
        print(f"python -m rag.evaluate: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print(report["table"], end="")
    if args.out:
        print(f"\nreport written to {args.out}")
    return 0
