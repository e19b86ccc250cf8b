"""Build throughput: index_build's pipeline vs the bare model forward pass, fp32 and ``--quantize int8``.

A random-weight CLIP of the real ViT-B/32 size (weights do not change the time), a few hundred generated
500x375 JPEGs (Flickr-sized). Usage: python -m benchmarks.build_speed [--images 320] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
from benchmarks.common import add_threads_option, apply_threads, report, speed_clip
from PIL import Image, ImageDraw

from rag.ingest.builder import BuildOptions, build_collection
from rag.models.encoder import Encoder
from rag.models.quantize import quantize_for_build
from rag.ingest.sources import FolderSource


def write_jpegs(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """Textured 500x375 photos-alike: a noisy gradient with random ellipses and boxes."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    yy, xx = np.mgrid[0:375, 0:500]
    for i in range(count):
        base = np.stack([(xx * rng.uniform(0.1, 0.5) + yy * rng.uniform(0.1, 0.5) + rng.uniform(0, 255)) % 255] * 3, -1)
        base = base + rng.normal(0, 18, base.shape)
        image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(6):
            x0, y0 = rng.integers(0, 400), rng.integers(0, 300)
            box = [x0, y0, x0 + rng.integers(20, 200), y0 + rng.integers(20, 150)]
            colour = tuple(int(c) for c in rng.integers(0, 255, 3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
        path = folder / f"{i:05d}.jpg"
        image.save(path, quality=90)
        paths.append(path)
    return paths


def bare_forward(encoder: Encoder, paths: list[Path], batch_size: int) -> float:
    """Images/s of the forward pass alone, on tensors decoded and preprocessed beforehand."""
    images = [Image.open(p).convert("RGB") for p in paths]
    batches = [encoder.preprocess_images(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    encoder.embed_features(batches[0])  # warm-up
    start = time.perf_counter()
    for features in batches:
        encoder.embed_features(features)
    return len(images) / (time.perf_counter() - start)


def build_throughput(encoder: Encoder, folder: Path, out: Path, batch_size: int, workers: int) -> float:
    """Images/s of the whole build: decode, thumbnail, preprocess, encode, write parquet, index, checksums."""
    start = time.perf_counter()
    build_collection(FolderSource(folder), out, encoder,
                     BuildOptions(batch_size=batch_size, workers=workers, progress=False))
    return len(FolderSource(folder)) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=320)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    add_threads_option(parser)
    args = parser.parse_args()
    apply_threads(args)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = speed_clip(tmp / "vit-b32")
        paths = write_jpegs(tmp / "jpegs", args.images)
        encoder = Encoder(model_dir)
        forward = bare_forward(encoder, paths, args.batch_size)
        build = build_throughput(encoder, tmp / "jpegs", tmp / "collection", args.batch_size, args.workers)
        forward_again = bare_forward(encoder, paths, args.batch_size)  # bracket the build: machine drift shows here
        int8 = Encoder(model_dir)  # converted as index_build.py --quantize int8 does (ONNX Runtime, exports cached)
        mode = quantize_for_build(int8, "int8", cache_dir=tmp / "cache")
        mode += ", onnxruntime" if int8.image_runner is not None else ", torch"
        int8_forward = bare_forward(int8, paths, args.batch_size)
        int8_build = build_throughput(int8, tmp / "jpegs", tmp / "collection-int8", args.batch_size, args.workers)
        torch8 = Encoder(model_dir)  # torch's dynamic int8: the fallback when the export cannot run
        torch8_mode = quantize_for_build(torch8, "int8")
        torch8_build = build_throughput(torch8, tmp / "jpegs", tmp / "collection-torch8", args.batch_size, args.workers)
        build_again = build_throughput(encoder, tmp / "jpegs", tmp / "collection-again", args.batch_size, args.workers)
        parquet_bytes = sum(p.stat().st_size for p in (tmp / "collection").glob("data/*.parquet"))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    baseline = (forward + forward_again) / 2
    rows = [
        {"stage": "bare forward pass on pre-decoded tensors (before build)", "images_per_s": forward, "ratio": forward / baseline},
        {"stage": "bare forward pass on pre-decoded tensors (after build)", "images_per_s": forward_again,
         "ratio": forward_again / baseline},
        {"stage": f"index_build pipeline ({args.workers} decode threads)", "images_per_s": build, "ratio": build / baseline},
        {"stage": "index_build pipeline, fp32 again (after the int8 runs)", "images_per_s": build_again,
         "ratio": build_again / baseline},
        {"stage": f"bare forward pass, --quantize int8 ({mode})", "images_per_s": int8_forward, "ratio": int8_forward / baseline},
        {"stage": f"index_build pipeline, --quantize int8 ({mode})", "images_per_s": int8_build, "ratio": int8_build / baseline},
        {"stage": f"index_build pipeline, torch int8 fallback ({torch8_mode}, torch)", "images_per_s": torch8_build,
         "ratio": torch8_build / baseline},
    ]
    report("build", f"Build throughput, random-weight CLIP ViT-B/32, {args.images} JPEGs 500x375, batch {args.batch_size}",
           rows, ["stage", "images_per_s", "ratio"],
           extra={"peak_rss_mb": peak_mb, "images": args.images,
                  "metadata_bytes_per_row": parquet_bytes / args.images,  # thumbnail + captions + columns, on disk
                  "int8_vs_fp32_builds": 2 * int8_build / (build + build_again)})
    print(f"peak resident memory: {peak_mb:.0f} MB")
    print(f"--quantize int8 build: {2 * int8_build / (build + build_again):.2f}x the images/s of the two fp32 builds' mean")


if __name__ == "__main__":
    main()
