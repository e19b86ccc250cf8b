"""Describe on CPU: what int8 GIT, fewer beams with context and a shorter maximum length buy and cost.

Speed: ``Pipeline.describe(image, k=5)`` (retrieval + GIT beams + CLIP consensus reranking) with a random-weight
GIT of git-base-coco's size (ViT-B/16 image encoder, 6-layer 768-d decoder, 30522-token vocabulary, ~177 M
parameters) and a random ViT-B/32 CLIP over a 2 000-row synthetic collection. Random weights almost never emit
the end token, so every beam runs to the maximum length: a worst case for the length setting.
Quality: ``python -m rag.evaluate`` (in-process) on the tiny shapes fixture (tiny trained CLIP and GIT),
BLEU-4 / ROUGE-L at k = 0 and k = 5 and text->image recall, for the same settings.
Variants are applied by setting rag.models.captioner's constants and RAG_QUANTIZE, as the Space would run them.
Usage: python -m benchmarks.describe_speed [--calls 5] [--sample 24] [--skip-quality] [--tokens N (smoke runs only)]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import tempfile
from pathlib import Path

import numpy as np
from benchmarks.common import clip_dim, add_threads_option, apply_threads, clustered_vectors, evaluation_results, report, smoke, speed_clip
from benchmarks.synthetic import write_synthetic_collection
from testkit.tiny_models import make_shape_images

from rag.models import captioner as captioner_module
from rag.config import Settings
from rag.pipeline import Pipeline
from rag.startup import open_pipeline

VOCAB = 30522  # git-base-coco's (BERT's) vocabulary size
# name, RAG_QUANTIZE, beams with context, max new tokens
VARIANTS = [
    ("fp32, 5 beams, 30 tokens (main before)", "none", 5, 30),
    ("int8 GIT + text, 5 beams, 30 tokens", "auto", 5, 30),
    ("int8, 3 beams when k > 0, 30 tokens", "auto", 3, 30),
    ("int8, 3 beams when k > 0, 20 tokens (chosen)", "auto", 3, 20),
]


@contextlib.contextmanager
def variant(beams: int, tokens: int):
    """rag.models.captioner's beam/length settings for one call, restored after."""
    saved = captioner_module.GIT_CONTEXT_BEAMS, captioner_module.GIT_MAX_NEW_TOKENS
    captioner_module.GIT_CONTEXT_BEAMS, captioner_module.GIT_MAX_NEW_TOKENS = beams, tokens
    try:
        yield
    finally:
        captioner_module.GIT_CONTEXT_BEAMS, captioner_module.GIT_MAX_NEW_TOKENS = saved


def make_random_git_base(out: Path) -> str:
    """An untrained GitForCausalLM with git-base-coco's sizes and a word-level BERT tokenizer of its vocabulary size."""
    import torch
    from transformers import BertTokenizer, CLIPImageProcessor, GitConfig, GitForCausalLM, GitProcessor

    torch.manual_seed(0)
    out.mkdir(parents=True, exist_ok=True)
    words = sorted({w for text in ["a photo of a red green blue yellow circle square triangle dog cat on the"] for w in text.split()})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    vocab += [f"w{i}" for i in range(VOCAB - len(vocab))]  # every id a word: random weights still write text
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizer(str(out / "vocab.txt"), model_max_length=512)
    processor = GitProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 224},
                                                                crop_size={"height": 224, "width": 224}), tokenizer=tokenizer)
    vision = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
              "image_size": 224, "patch_size": 16}
    config = GitConfig(vision_config=vision, vocab_size=VOCAB, hidden_size=768, intermediate_size=3072,
                       num_hidden_layers=6, num_attention_heads=12, max_position_embeddings=1024,
                       pad_token_id=0, bos_token_id=2, eos_token_id=3)
    GitForCausalLM(config).eval().save_pretrained(out)
    processor.save_pretrained(out)
    return str(out)


def tiny_git(out: Path) -> str:
    """A smoke run's captioner: the tiny test GIT, untrained."""
    from testkit.tiny_models import make_tiny_git

    return make_tiny_git(out, train_seconds=0)


def speed(calls: int, work: Path) -> list[dict]:
    clip = speed_clip(work / "vit-b32")
    git = tiny_git(work / "git-base") if smoke() else make_random_git_base(work / "git-base")
    collection = write_synthetic_collection(work / "synthetic", clustered_vectors(2000, clip_dim(clip)), clip)
    pipelines = {
        mode: open_pipeline(Settings(cache_dir=work / "cache", captioner="git", captioner_model=git, quantize=mode),
                                     collection_dir=collection)
        for mode in ("none", "auto")
    }
    image = make_shape_images(1, seed=9, size=256)[0][0]
    seconds: dict[str, list[float]] = {name: [] for name, *_ in VARIANTS}
    for call in range(calls + 1):  # call 0 is an untimed warm-up; variants interleaved call by call
        for name, mode, beams, tokens in VARIANTS:
            with variant(beams, tokens):
                result = pipelines[mode].describe(image, k=5)
            if call:
                seconds[name].append(result.seconds)
    base = np.median(seconds[VARIANTS[0][0]])
    rows = [{"variant": name, "p50_s": float(np.median(v)), "p95_s": float(np.percentile(v, 95)),
             "ratio": float(np.median(v) / base)} for name, v in seconds.items()]
    for name, mode, beams, tokens in VARIANTS[-1:]:
        with variant(beams, tokens):
            k0 = [pipelines[mode].describe(image, k=0).seconds for _ in range(max(2, calls // 2))]
        rows.append({"variant": f"{name}, k = 0 (5 beams, no reranking)", "p50_s": float(np.median(k0)),
                     "p95_s": float(np.percentile(k0, 95)), "ratio": float(np.median(k0) / base)})
    return rows


def quality(sample: int, work: Path) -> list[dict]:
    from testkit.shapes import build_shapes, write_shape_folder
    from testkit.tiny_models import make_tiny_clip, make_tiny_git

    clip, git = make_tiny_clip(work / "tiny-clip"), make_tiny_git(work / "tiny-git")
    collection = build_shapes(write_shape_folder(work / "shapes", n=96), work / "shapes-col", clip)
    rows = []
    for name, mode, beams, tokens in VARIANTS:
        with variant(beams, tokens):
            results = evaluation_results(
                ["--collection", str(collection), "--captioner", "git", "--captioner-model", git, "--sample", str(sample),
                 "--k", "0,5", "--tasks", "t2i,describe", "--out", str(work / f"report-{len(rows)}.json"), "--no-progress"],
                {"RAG_QUANTIZE": mode},
            )
        by_k = results["describe"]["by_k"]
        rows.append({"variant": name, "t2i_R@1": results["t2i"]["R@1"] * 100, "t2i_R@10": results["t2i"]["R@10"] * 100,
                     "BLEU-4 k=0": by_k["0"]["bleu4"], "ROUGE-L k=0": by_k["0"]["rougeL_f"],
                     "BLEU-4 k=5": by_k["5"]["bleu4"], "ROUGE-L k=5": by_k["5"]["rougeL_f"],
                     "words k=5": by_k["5"]["words"]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--sample", type=int, default=24)
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--tokens", type=int, help="cap every variant's maximum new tokens (a smoke run; not the "
                        "published variants)")
    add_threads_option(parser)
    args = parser.parse_args()
    apply_threads(args)
    logging.basicConfig(level=logging.WARNING)
    if args.tokens:  # a smoke run: every variant's length capped
        VARIANTS[:] = [(f"{name} [capped at {args.tokens} tokens]", mode, beams, min(tokens, args.tokens))
                       for name, mode, beams, tokens in VARIANTS]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if not args.skip_speed:
            report("describe_speed", f"Pipeline.describe(k=5) on CPU, random git-base-size GIT, {args.calls} calls per "
                   f"variant, interleaved", speed(args.calls, work), ["variant", "p50_s", "p95_s", "ratio"])
        if not args.skip_quality:
            report("describe_quality", f"rag.evaluate on the tiny shapes fixture (96 rows, {args.sample} described)",
                   quality(args.sample, work), ["variant", "t2i_R@1", "t2i_R@10", "BLEU-4 k=0", "ROUGE-L k=0",
                                                "BLEU-4 k=5", "ROUGE-L k=5", "words k=5"])


if __name__ == "__main__":
    main()
