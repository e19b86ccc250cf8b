"""``python -m rag.finetune --collection SRC --out DST``: flags, the printed table, the report folder, exit codes.

Exit status: 0 DST written (tuned, or not better but ``--force``); 3 not better on the held-out rows, nothing written;
2 bad usage (flags, SRC already tuned, too few captions, DST not safe to write); 1 the collection or model failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path
from typing import Sequence

from rag.collection.hub import push_collection, resolve_collection
from rag.config import QUANTIZE_CHOICES, Settings
from rag.errors import ConfigError, RagError, UsageError
from rag.finetune.tune import DEFAULT_METHOD, METHODS, FinetuneOptions, finetune
from rag.finetune.train import TrainSettings
from rag.models.adapter import MAX_HIDDEN

NOT_BETTER = 3


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), not {text}")
    return value


def _non_negative(kind: type) -> type:
    def parse(text: str):  # noqa: ANN202
        value = kind(text)
        if value < 0:
            raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
        return value

    return parse  # type: ignore[return-value]


def build_parser() -> argparse.ArgumentParser:
    """The command's flags (every one but --collection and --out optional)."""
    defaults = TrainSettings()
    parser = argparse.ArgumentParser(prog="python -m rag.finetune", description=(
        "Tune a collection's embedding space on its own captions; held-out rows judge it, before and after."))
    parser.add_argument("--collection", required=True, metavar="SRC", help="collection folder or Hub dataset repo id")
    parser.add_argument("--out", required=True, metavar="DST", help="folder for the tuned collection (SRC is never changed)")
    parser.add_argument("--revision", help="branch, tag or commit of SRC's dataset repo")
    parser.add_argument("--method", choices=list(METHODS), default=DEFAULT_METHOD,
                        help="adapter: a residual adapter on the text embeddings (the index is reused); adapter-both: "
                             "on text and image embeddings (the index is rebuilt). Default: %(default)s")
    parser.add_argument("--holdout", type=_fraction, default=0.2, help="fraction of images held out (default: 0.2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and the training (default: 0)")
    parser.add_argument("--epochs", type=_non_negative(int), default=0, help="epochs; 0 = auto (default)")
    parser.add_argument("--batch-size", type=_non_negative(int), default=defaults.batch_size,
                        help="pairs contrasted per step (default: %(default)s)")
    parser.add_argument("--lr", type=_non_negative(float), default=defaults.lr, help="AdamW learning rate (default: %(default)s)")
    parser.add_argument("--hidden", type=_non_negative(int), default=defaults.hidden,
                        help="adapter hidden units; 0 = a residual linear map (default: %(default)s)")
    parser.add_argument("--max-seconds", type=_non_negative(float), help="stop training after this long")
    parser.add_argument("--min-gain", type=float, default=0.0,
                        help="write DST only if held-out cross-modal MRR rises by more than this (default: 0)")
    parser.add_argument("--force", action="store_true", help="write DST even when it is not better")
    parser.add_argument("--overwrite", action="store_true", help="replace a collection already at DST")
    parser.add_argument("--text-model", help="a text model aligned with SRC's (e.g. the multilingual CLIP); "
                        "the adapter is trained on its vectors and DST loads it by default")
    parser.add_argument("--quantize", choices=QUANTIZE_CHOICES, default="none",
                        help="the base text tower while encoding the captions: none (exact fp32, default), or auto / "
                        "int8 (the int8 tower the Space queries with on CPU: faster, within cosine 0.99 of fp32)")
    parser.add_argument("--device", help="cpu, cuda, ... (default: $RAG_DEVICE, else cuda if available)")
    parser.add_argument("--push-to-hub", metavar="REPO", help="once DST is written, push it (with its adapter) to "
                        "this dataset repo, checked against its manifest")
    parser.add_argument("--private", action="store_true", help="create the --push-to-hub repo private")
    parser.add_argument("--report-dir", metavar="DIR", help="where report.json and the similarity plots go "
                        "(default: DST-finetune next to DST)")
    return parser


def options_from(args: argparse.Namespace) -> FinetuneOptions:
    """FinetuneOptions from parsed flags."""
    if args.batch_size < 2:
        raise UsageError("--batch-size must be at least 2 (the loss contrasts pairs within a batch).")
    if args.hidden > MAX_HIDDEN:
        raise UsageError(f"--hidden must be at most {MAX_HIDDEN} (a bigger adapter would not load).")
    train = TrainSettings(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, hidden=args.hidden,
                          max_seconds=args.max_seconds)
    out = Path(args.out).expanduser()
    report = Path(args.report_dir) if args.report_dir else out.with_name(out.name + "-finetune")
    return FinetuneOptions(method=args.method, holdout=args.holdout, seed=args.seed, train=train,
                           min_gain=args.min_gain, force=args.force, overwrite=args.overwrite, plots_dir=report,
                           quantize=args.quantize)


def _settings(args: argparse.Namespace) -> Settings:
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    overrides = {"collection": args.collection, "revision": args.revision, "text_model": args.text_model,
                 "device": args.device}
    return dataclasses.replace(settings, **{k: v for k, v in overrides.items() if v is not None})


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; see the module docstring for the exit status."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        options = options_from(args)
        settings = _settings(args)
        source = resolve_collection(args.collection, args.revision, settings.hf_token)
        result = finetune(source, Path(args.out), options, settings, name=args.collection)
        if result.written and args.push_to_hub:
            commit = push_collection(Path(args.out), args.push_to_hub, private=args.private, token=settings.hf_token,
                                     message="Upload a collection tuned with rag.finetune")
            result.message += f" Pushed to {args.push_to_hub} at commit {commit}."
    except UsageError as exc:
        print(f"python -m rag.finetune: error: {exc}", file=sys.stderr)
        return 2
    except RagError as exc:
        print(f"python -m rag.finetune: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: nothing was written", file=sys.stderr)
        return 130
    report = {**result.record, "table": result.table, "gain": result.gain, "written": result.written,
              "seconds": result.seconds}
    options.plots_dir.mkdir(parents=True, exist_ok=True)
    tmp = options.plots_dir / "report.json.tmp"
    tmp.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, options.plots_dir / "report.json")
    heldout = result.record["heldout"]
    print(f"Held-out rows: {len(heldout['rows'])} (fraction {heldout['fraction']}, seed {heldout['seed']}), "
          f"relevance: {heldout['relevance']}; trained {result.record['train']['steps']} steps in "
          f"{result.record['train']['seconds']} s ({result.record['train']['stopped']})\n")
    print(result.table)
    print(f"\n{result.message}" + (f" DST: {args.out}" if result.written else ""))
    print(f"report and similarity plot: {options.plots_dir}")
    return 0 if result.written else NOT_BETTER
