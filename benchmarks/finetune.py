"""rag.finetune on CPU: held-out gain per method on the domain-vocabulary test collection, and the cost at real size.

Two tables:
1. ``finetune``: testkit.domain_collection (shape images whose captions name each class by a batik motif the tiny
   test CLIP never learned), tuned by each method with the command's defaults; held-out text->image and
   image->text R@1 and MRR before -> after (relevance: same label, among the held-out rows), training steps and
   seconds (one torch thread, as the command trains), and R@1 points gained per training second.
2. ``finetune_speed``: what a real-size run costs on this machine: encoding captions with a ViT-B/32-size text
   tower (random weights: the time does not depend on them), and training each adapter on 512-d vectors
   (synthetic: the time does not depend on the values) for the auto step count.
Usage: python -m benchmarks.finetune [--rows 240] [--speed-rows 30000] [--captions 256]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from benchmarks.common import add_threads_option, apply_threads, clustered_vectors, report
from testkit.domain_collection import build_domain_collection
from testkit.tiny_models import make_random_clip_vit_b32, make_tiny_clip

from rag.finetune import FinetuneOptions, TrainSettings, finetune
from rag.finetune.train import AUTO_STEPS, auto_epochs, train_adapters
from rag.models.encoder import Encoder

VARIANTS = (  # (row name, method, hidden units)
    ("linear (text)", "adapter", 0),
    ("adapter (text), default", "adapter", 256),
    ("adapter-both", "adapter-both", 256),
)


def quality_rows(rows: int, work: Path) -> list[dict]:
    """Each method on the domain collection: held-out before -> after, steps and seconds."""
    clip = make_tiny_clip(work / "clip")
    source = build_domain_collection(work / "images", work / "src", clip, n=rows)
    out = []
    for name, method, hidden in VARIANTS:
        options = FinetuneOptions(method=method, train=TrainSettings(hidden=hidden), force=True)
        result = finetune(source, work / f"dst-{method}-{hidden}", options)
        before, after, train = result.before, result.after, result.record["train"]
        gain = after["text_to_image"]["R@1"] - before["text_to_image"]["R@1"]
        out.append({
            "method": name, "heldout_rows": len(result.record["heldout"]["rows"]), "steps": train["steps"],
            "train_s": train["seconds"], "run_s": result.seconds,
            "t2i_R@1_before": before["text_to_image"]["R@1"], "t2i_R@1_after": after["text_to_image"]["R@1"],
            "t2i_MRR_before": before["text_to_image"]["MRR"], "t2i_MRR_after": after["text_to_image"]["MRR"],
            "i2t_R@1_before": before["image_to_text"]["R@1"], "i2t_R@1_after": after["image_to_text"]["R@1"],
            "i2i_R@1_after": after["image_to_image"]["R@1"],
            "R@1_points_per_train_s": 100 * gain / max(train["seconds"], 1e-9),
        })
    return out


def speed_rows(rows: int, captions: int, work: Path) -> list[dict]:
    """Caption encoding at ViT-B/32 size, then each adapter's training on 512-d vectors of ``rows`` images."""
    encoder = Encoder(make_random_clip_vit_b32(work / "vit-b32"), device="cpu")
    texts = [f"a photo of motif number {i} on a piece of cloth" for i in range(captions)]
    encoder.encode_texts(texts[:32])
    started = time.perf_counter()
    encoder.encode_texts(texts)
    encode_s = time.perf_counter() - started
    out = [{"what": "encode captions, ViT-B/32-size text tower, fp32", "rows": captions,
            "seconds": encode_s, "per_second": captions / encode_s}]
    images = clustered_vectors(rows, 512, clusters=max(2, rows // 5))
    texts_v = clustered_vectors(rows, 512, clusters=max(2, rows // 5), seed=1)
    owners, groups = np.arange(rows, dtype=np.int64), np.arange(rows, dtype=np.int64)
    train_rows = np.arange(int(rows * 0.8), dtype=np.int64)
    for name, method, hidden in VARIANTS:
        sides = ("text", "image") if method == "adapter-both" else ("text",)
        settings = TrainSettings(sides=sides, hidden=hidden)
        trained = train_adapters(texts_v, images, owners, groups, train_rows, settings)
        out.append({"what": f"train {name}, 512-d, batch {settings.batch_size}", "rows": len(train_rows),
                    "steps": trained.steps, "epochs": auto_epochs(len(train_rows), settings.batch_size),
                    "seconds": trained.seconds, "per_second": trained.steps / trained.seconds})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=240, help="images in the domain test collection")
    parser.add_argument("--speed-rows", type=int, default=30000, help="images (512-d vectors) for the speed table")
    parser.add_argument("--captions", type=int, default=256, help="captions encoded for the speed table")
    add_threads_option(parser)
    args = parser.parse_args()
    apply_threads(args)
    with tempfile.TemporaryDirectory(prefix="bench_finetune_") as tmp:
        work = Path(tmp)
        quality = quality_rows(args.rows, work)
        report("finetune", f"rag.finetune on the domain-vocabulary test collection ({args.rows} images, tiny CLIP): "
               "held-out rows before → after", quality,
               ["method", "heldout_rows", "steps", "train_s", "t2i_R@1_before", "t2i_R@1_after", "t2i_MRR_before",
                "t2i_MRR_after", "i2t_R@1_before", "i2t_R@1_after", "R@1_points_per_train_s"],
               extra={"auto_steps": AUTO_STEPS})
        speed = speed_rows(args.speed_rows, args.captions, work)
        report("finetune_speed", "rag.finetune at real size on CPU: caption encoding and adapter training",
               speed, ["what", "rows", "steps", "epochs", "seconds", "per_second"])


if __name__ == "__main__":
    main()
