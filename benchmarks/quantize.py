"""RAG_QUANTIZE on CPU: which int8 way, how faithful, and what it buys a text search through the pipeline.

A random-weight CLIP of the real ViT-B/32 size (weights do not change the time). Three tables:
1. ways to run the text tower for one query, interleaved call by call: fp32, ``quantize_dynamic`` int8 (what
   rag.quantize uses), and, where installed, torchao int8 configs and ONNX Runtime fp32/int8 (export timed);
2. fidelity of rag.quantize's int8 towers: min / mean cosine to fp32 over generated texts and images;
3. ``Pipeline.search_text`` p50 on a 30k-row synthetic Flat collection, fp32 vs RAG_QUANTIZE=auto (int8),
   fresh queries each call (no cache hits), plus a repeated query (cache hit).
Usage: python -m benchmarks.quantize [--texts 1000] [--images 1000] [--rows 30000] [--calls 30]
"""

from __future__ import annotations

import argparse
import copy
import itertools
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from benchmarks.common import clustered_vectors, report
from benchmarks.synthetic import write_synthetic_collection
from testkit.tiny_models import make_random_clip_vit_b32, make_shape_images

from rag.config import Settings
from rag.encoder import Encoder
from rag.pipeline import Pipeline
from rag.quantize import convert_module, quantize_encoder

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
    ways["torch.ao quantize_dynamic int8 (chosen)"] = (dynamic, None)
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
    for name, (model, session) in ways.items():
        if session is None:
            functions[name] = lambda m=model: _text_features(m, one)
        else:
            feed = {"ids": one["input_ids"].numpy(), "mask": one["attention_mask"].numpy()}
            functions[name] = lambda s=session, f=feed: s.run(None, f)
    p50 = interleaved(functions, calls)
    for name, (model, session) in ways.items():
        if session is None:
            got = _norm(_text_features(model, probe))
        else:
            got = _norm(session.run(None, {"ids": probe["input_ids"].numpy(), "mask": probe["attention_mask"].numpy()})[0])
        rows.append({"way": name, "p50_ms": p50[name], "ratio": p50[name] / p50["torch fp32 (baseline)"],
                     "min_cosine": float(np.min(np.sum(got * reference, axis=1))), "note": notes.get(name, "")})
    rows += [{"way": k, "note": v} for k, v in notes.items() if k not in ways]
    return rows


def _onnx_ways(clip, probe, work: Path, notes: dict) -> dict:
    try:
        import onnxruntime as ort
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        notes["onnxruntime"] = "not installed"
        return {}

    class TextTower(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, ids, mask):
            out = self.model.get_text_features(input_ids=ids, attention_mask=mask)
            return getattr(out, "pooler_output", out)

    start = time.perf_counter()
    torch.onnx.export(TextTower(clip), (probe["input_ids"], probe["attention_mask"]), str(work / "text.onnx"),
                      input_names=["ids", "mask"], output_names=["emb"], opset_version=17, dynamo=False,
                      dynamic_axes={"ids": {0: "b", 1: "s"}, "mask": {0: "b", 1: "s"}})
    exported = time.perf_counter() - start
    quantize_dynamic(str(work / "text.onnx"), str(work / "text.int8.onnx"), weight_type=QuantType.QInt8)
    quantized = time.perf_counter() - start
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    out = {}
    for name, path, seconds in (("onnxruntime fp32", "text.onnx", exported), ("onnxruntime int8", "text.int8.onnx", quantized)):
        out[name] = (None, ort.InferenceSession(str(work / path), options, providers=["CPUExecutionProvider"]))
        notes[name] = f"export{' + quantise' if 'int8' in name else ''} {seconds:.1f} s at every cold start"
    return out


def fidelity(model_dir: str, n_texts: int, n_images: int) -> list[dict]:
    """Table 2: rag.quantize int8 towers against fp32 on generated texts and images."""
    encoder = Encoder(model_dir)
    sample_texts = texts(n_texts)
    images = [image for image, _, _ in make_shape_images(n_images, seed=3, size=128)]
    reference_t, reference_i = encoder.encode_texts(sample_texts), encoder.encode_images(images)
    result = quantize_encoder(encoder, "int8", towers=("text", "image"))
    got_t, got_i = encoder.encode_texts(sample_texts), encoder.encode_images(images)
    rows = []
    for what, ref, got in (("text", reference_t, got_t), ("image", reference_i, got_i)):
        cos = np.sum(ref * got, axis=1)
        rows.append({"inputs": f"{len(ref)} {what}s", "mode": result.mode, "min_cosine": float(cos.min()),
                     "mean_cosine": float(cos.mean()), "probe_min_cosine": result.min_cosine})
    return rows


def search_text(model_dir: str, rows: int, calls: int, work: Path) -> list[dict]:
    """Table 3: Pipeline.search_text p50 at ``rows`` rows, fp32 vs int8 text tower, fresh queries."""
    collection = write_synthetic_collection(work / "synthetic", clustered_vectors(rows), model_dir)
    pipelines = {
        mode: Pipeline.from_settings(Settings(cache_dir=work / "cache", quantize=mode), collection_dir=collection,
                                     with_captioner=False)
        for mode in ("none", "auto")
    }
    queries = iter(texts(4 * (calls + 2) + 8))
    p50 = interleaved({f"RAG_QUANTIZE={m} ({p.quantize})": (lambda p=p: p.search_text(next(queries), 10))
                       for m, p in pipelines.items()}, calls)
    cached = pipelines["auto"]
    cached.search_text("a photo of a dog", 10)
    hit = interleaved({"repeated query (cache hit)": lambda: cached.search_text("a photo of a dog", 10)}, calls)
    base = p50["RAG_QUANTIZE=none (none)"]
    out = [{"path": name, "rows": rows, "p50_ms": ms, "ratio": ms / base} for name, ms in p50.items()]
    out += [{"path": f"RAG_QUANTIZE=auto, {name}", "rows": rows, "p50_ms": ms, "ratio": ms / base} for name, ms in hit.items()]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--texts", type=int, default=1000)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=30_000)
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--parts", default="ways,fidelity,search", help="which tables: ways,fidelity,search")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's); 1 gives steadier ratios on a "
                        "machine other jobs load")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    load = f"load average {os.getloadavg()[0]:.1f} at start: other agents share this 2-core machine"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model_dir = make_random_clip_vit_b32(work / "vit-b32")
        parts = args.parts.split(",")
        if "ways" in parts:
            report("quantize_ways", f"Text tower, one query, random-weight ViT-B/32, {args.calls} interleaved calls ({load})",
                   candidate_ways(model_dir, args.calls, work), ["way", "p50_ms", "ratio", "min_cosine", "note"])
        if "fidelity" in parts:
            report("quantize_fidelity", "rag.quantize int8 towers vs fp32, random-weight ViT-B/32",
                   fidelity(model_dir, args.texts, args.images),
                   ["inputs", "mode", "min_cosine", "mean_cosine", "probe_min_cosine"])
        if "search" in parts:
            report("quantize_search_text", f"Pipeline.search_text, {args.rows} rows Flat, k=10, {args.calls} calls each ({load})",
                   search_text(model_dir, args.rows, args.calls, work), ["path", "rows", "p50_ms", "ratio"])


if __name__ == "__main__":
    main()
