"""RAG_QUANTIZE on CPU: which int8 way, how faithful, and what it buys a text search through the pipeline.

A random-weight CLIP of the real ViT-B/32 size (weights do not change the time). Three tables:
1. ways to run the text tower for one query, interleaved call by call: fp32, ``quantize_dynamic`` int8 (the
   fallback), ONNX Runtime fp32 and int8 (rag.models.onnx_text: what RAG_QUANTIZE=auto uses; export timed) and,
   where installed, torchao int8 configs;
2. fidelity against fp32 over generated texts (the int8 text tower the app runs) and images (ONNX Runtime
   int8, as ``index_build.py --quantize int8`` runs it, and torch int8, its fallback): min / mean cosine;
3. ``Pipeline.search_text`` p50 on a 30k-row synthetic Flat collection, fp32 vs RAG_QUANTIZE=auto (int8),
   fresh queries each call (no cache hits), plus a repeated query (cache hit).
Usage: python -m benchmarks.quantize [--texts 1000] [--images 1000] [--rows 30000] [--calls 30]
"""

from __future__ import annotations

import argparse
import copy
import itertools
import logging
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from benchmarks.common import clip_dim, add_threads_option, apply_threads, clustered_vectors, evaluation_results, report, speed_clip
from benchmarks.synthetic import write_synthetic_collection
from testkit.tiny_models import make_shape_images

from rag.config import Settings
from rag.models.encoder import Encoder
from rag.pipeline import Pipeline
from rag.startup import open_pipeline
from rag.models.onnx_text import INPUTS, OnnxTextRunner, TextTower, export_int8
from rag.models.quantize import convert_module, quantize_encoder

WORDS = {
    "who": ["a man", "a woman", "two children", "an old dog", "a black cat", "a group of people", "a cyclist", "a chef"],
    "does": ["riding", "holding", "standing next to", "looking at", "sitting on", "walking past", "painting", "carrying"],
    "what": ["a red bicycle", "a wooden bench", "a blue umbrella", "the ocean", "a busy street", "a birthday cake",
             "a snowy mountain", "a yellow taxi", "a small boat", "a stack of books"],
    "where": ["", " at night", " in the rain", " in a park", " near the harbour", " on a sunny day"],
}


def texts(count: int) -> list[str]:
    """Varied caption-like texts, deterministic."""
    combos = itertools.product(WORDS["who"], WORDS["does"], WORDS["what"], WORDS["where"])
    return [f"{a} {b} {c}{d}" for a, b, c, d in itertools.islice(combos, 0, count * 3, 3)][:count]


def interleaved(functions: dict, calls: int) -> dict[str, float]:
    """p50 ms of each function, called in turn so that machine load falls on all alike."""
    for f in functions.values():
        f()
    seconds: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(calls):
        for name, f in functions.items():
            start = time.perf_counter()
            f()
            seconds[name].append(time.perf_counter() - start)
    return {name: float(np.median(v) * 1e3) for name, v in seconds.items()}


def _text_features(clip, tokens) -> torch.Tensor:
    with torch.inference_mode():
        out = clip.get_text_features(**tokens)
    return getattr(out, "pooler_output", out)


def _norm(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def candidate_ways(model_dir: str, calls: int, work: Path) -> list[dict]:
    """Table 1: one text query through each available way of running the text tower."""
    encoder = Encoder(model_dir)
    clip = next(m for m in encoder.model.modules() if hasattr(m, "get_text_features"))
    tokenizer = next(m for m in encoder.model.modules() if hasattr(m, "processor")).processor.tokenizer
    one = tokenizer(["a man riding a red bicycle in the rain"], return_tensors="pt")
    probe = tokenizer(texts(64), padding=True, return_tensors="pt")
    reference = _norm(_text_features(clip, probe))
    ways, notes = {"torch fp32 (baseline)": (clip, None)}, {}
    dynamic = copy.deepcopy(clip)
    dynamic.text_model, dynamic.text_projection = convert_module(clip.text_model, "int8"), convert_module(clip.text_projection, "int8")
    ways["torch.ao quantize_dynamic int8 (fallback)"] = (dynamic, None)
    try:
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig, quantize_

        for config in (Int8DynamicActivationInt8WeightConfig(), Int8WeightOnlyConfig()):
            converted = copy.deepcopy(clip)
            quantize_(converted.text_model, config)
            ways[f"torchao {type(config).__name__}"] = (converted, None)
    except ImportError:
        notes["torchao"] = "not installed"
    ways.update(_onnx_ways(clip, probe, work, notes))
    functions, rows = {}, []
    for name, (model, run) in ways.items():
        functions[name] = (lambda m=model: _text_features(m, one)) if run is None else (lambda r=run: r(one))
    p50 = interleaved(functions, calls)
    for name, (model, run) in ways.items():
        got = _norm(_text_features(model, probe) if run is None else run(probe))
        rows.append({"way": name, "p50_ms": p50[name], "ratio": p50[name] / p50["torch fp32 (baseline)"],
                     "min_cosine": float(np.min(np.sum(got * reference, axis=1))), "note": notes.get(name, "")})
    rows += [{"way": k, "note": v} for k, v in notes.items() if k not in ways]
    return rows


def _onnx_ways(clip, probe, work: Path, notes: dict) -> dict:
    """ONNX Runtime fp32 (a plain export) and int8 exactly as rag.models.onnx_text exports, caches and runs it."""
    try:
        import onnxruntime as ort
    except ImportError:
        notes["onnxruntime"] = "not installed"
        return {}
    start = time.perf_counter()
    int8 = OnnxTextRunner(export_int8(clip, probe, work / "onnx-int8"), threads=1)
    notes["onnxruntime int8, rag.models.onnx_text (chosen)"] = (
        f"export + quantise {time.perf_counter() - start:.1f} s once per model (cached under RAG_CACHE_DIR/onnx)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(TextTower(clip).eval(), (probe["input_ids"], probe["attention_mask"]), str(work / "fp32.onnx"),
                          input_names=list(INPUTS), output_names=["embedding"], opset_version=17, dynamo=False,
                          dynamic_axes={name: {0: "b", 1: "s"} for name in INPUTS})
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    fp32 = ort.InferenceSession(str(work / "fp32.onnx"), options, providers=["CPUExecutionProvider"])
    return {"onnxruntime fp32": (None, lambda f: fp32.run(None, {n: f[n].numpy() for n in INPUTS})[0]),
            "onnxruntime int8, rag.models.onnx_text (chosen)": (None, int8)}


def fidelity(model_dir: str, n_texts: int, n_images: int, work: Path) -> list[dict]:
    """Table 2: what each mode serves against fp32: the text tower as the app runs it, the image tower as builds do."""
    sample_texts = texts(n_texts)
    images = [image for image, _, _ in make_shape_images(n_images, seed=3, size=128)]
    rows = []
    for what, towers, cache in (("text", ("text",), work / "cache"), ("image", ("image",), work / "cache"),
                                ("image", ("image",), None)):
        encoder = Encoder(model_dir)
        encode = (lambda: encoder.encode_texts(sample_texts)) if what == "text" else (lambda: encoder.encode_images(images))
        reference = encode()
        result = quantize_encoder(encoder, "int8", towers=towers, cache_dir=cache)
        cos = np.sum(reference * encode(), axis=1)
        rows.append({"inputs": f"{len(reference)} {what}s", "mode": f"{result.mode} ({result.engine})",
                     "min_cosine": float(cos.min()), "mean_cosine": float(cos.mean()),
                     "probe_min_cosine": result.min_cosine})
    return rows


def in_blocks(functions: dict, calls: int) -> dict[str, float]:
    """p50 ms of each function called ``calls`` times in two blocks (A B A B): one engine's threads at a time,
    as a Space running one mode sees it, while slow drift in machine load still falls on all alike."""
    seconds: dict[str, list[float]] = {name: [] for name in functions}
    for half in (calls // 2, calls - calls // 2):
        for name, f in functions.items():
            f()
            for _ in range(half):
                start = time.perf_counter()
                f()
                seconds[name].append(time.perf_counter() - start)
    return {name: float(np.median(v) * 1e3) for name, v in seconds.items()}


def search_text(model_dir: str, rows: int, calls: int, work: Path) -> list[dict]:
    """Table 3: Pipeline.search_text p50 at ``rows`` rows, fp32 vs int8 text tower, fresh queries; calls
    interleaved one by one (torch and onnxruntime threads contend) and in blocks (one mode at a time)."""
    collection = write_synthetic_collection(work / "synthetic", clustered_vectors(rows, clip_dim(model_dir)), model_dir)
    pipelines = {
        mode: open_pipeline(Settings(cache_dir=work / "cache", quantize=mode), collection_dir=collection,
                                     with_captioner=False)
        for mode in ("none", "auto")
    }
    queries = iter(texts(8 * (calls + 4) + 8))
    functions = {f"RAG_QUANTIZE={m} ({p.quantize}{', ' + p.quantize_engine if p.quantize_engine else ''})":
                 (lambda p=p: p.search_text(next(queries), 10)) for m, p in pipelines.items()}
    cached = pipelines["auto"]
    cached.search_text("a photo of a dog", 10)
    out = []
    for order, measure in (("interleaved", interleaved), ("in blocks", in_blocks)):
        p50 = measure(functions, calls)
        p50["RAG_QUANTIZE=auto, repeated query (cache hit)"] = measure(
            {"hit": lambda: cached.search_text("a photo of a dog", 10)}, calls)["hit"]
        base = next(iter(p50.values()))
        out += [{"path": name, "calls": order, "rows": rows, "p50_ms": ms, "ratio": ms / base} for name, ms in p50.items()]
    return out


def evaluation_recall(rows: int, work: Path) -> list[dict]:
    """Table 4: rag.evaluate's retrieval recall with RAG_QUANTIZE=none and =auto on a tiny shapes fixture of
    ``rows`` rows (a tiny CLIP trained on generated shapes; all rows sampled, two captions each)."""
    from testkit.shapes import build_shapes, write_shape_folder
    from testkit.tiny_models import make_tiny_clip

    clip = make_tiny_clip(work / "tiny-clip")
    collection = build_shapes(write_shape_folder(work / "eval-shapes", n=rows), work / "eval-col", clip)
    out = []
    for mode in ("none", "auto"):
        results = evaluation_results(
            ["--collection", str(collection), "--tasks", "t2i,i2t", "--sample", str(rows),
             "--out", str(work / f"eval-{mode}.json"), "--no-progress"],
            {"RAG_QUANTIZE": mode, "RAG_CACHE_DIR": str(work / "eval-cache")},
        )
        for task in ("t2i", "i2t"):
            r = results[task]
            out.append({"RAG_QUANTIZE": mode, "task": task, "queries": r["queries"], "R@1 %": 100 * r["R@1"],
                        "R@5 %": 100 * r["R@5"], "R@10 %": 100 * r["R@10"], "MRR": r["MRR"]})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--texts", type=int, default=1000)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=30_000)
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--parts", default="ways,fidelity,search,recall", help="which tables: ways,fidelity,search,recall")
    parser.add_argument("--eval-rows", type=int, default=600, help="rows of the shapes fixture for the recall table")
    add_threads_option(parser)
    args = parser.parse_args()
    apply_threads(args)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model_dir = speed_clip(work / "vit-b32")
        parts = args.parts.split(",")
        if "ways" in parts:
            report("quantize_ways", f"Text tower, one query, random-weight ViT-B/32, {args.calls} interleaved calls",
                   candidate_ways(model_dir, args.calls, work), ["way", "p50_ms", "ratio", "min_cosine", "note"])
        if "fidelity" in parts:
            report("quantize_fidelity", "rag.models.quantize int8 towers vs fp32, random-weight ViT-B/32",
                   fidelity(model_dir, args.texts, args.images, work),
                   ["inputs", "mode", "min_cosine", "mean_cosine", "probe_min_cosine"])
        if "search" in parts:
            report("quantize_search_text", f"Pipeline.search_text, {args.rows} rows Flat, k=10, {args.calls} calls each",
                   search_text(model_dir, args.rows, args.calls, work), ["path", "calls", "rows", "p50_ms", "ratio"])
        if "recall" in parts:
            report("quantize_recall", f"rag.evaluate retrieval on a {args.eval_rows}-row tiny shapes fixture, fp32 vs "
                   "RAG_QUANTIZE=auto", evaluation_recall(args.eval_rows, work),
                   ["RAG_QUANTIZE", "task", "queries", "R@1 %", "R@5 %", "R@10 %", "MRR"])


if __name__ == "__main__":
    main()
