"""Shared bits of the benchmark scripts: timing statistics, generated data, and the Markdown/JSON output that
records what produced it (benchmarks.provenance)."""

from __future__ import annotations

import argparse
import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import psutil

from benchmarks import provenance

ROOT = Path(__file__).resolve().parents[1]
RESULTS_ENV = "RAG_BENCH_RESULTS"
SMOKE_ENV = "RAG_BENCH_SMOKE"  # set by ``benchmarks.run --quick``: tiny models, numbers not for publishing


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    """``--threads``: torch's intra-op threads for the run (see ``apply_threads``)."""
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's); 1 gives steadier ratios on a "
                        "machine other jobs load")


def apply_threads(args: argparse.Namespace) -> None:
    """Set torch's threads when ``--threads`` was given."""
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)


def evaluation_results(argv: list[str], env: dict[str, str]) -> dict[str, Any]:
    """``rag.evaluate`` in this process with ``env`` set for the run (RAG_QUANTIZE, RAG_CACHE_DIR... are read by
    its Settings.from_env); the report's ``results``. ``argv`` must name an ``--out`` file."""
    from rag import evaluate

    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        code = evaluate.main(argv)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    assert code == 0, f"rag.evaluate failed with {env}"
    return json.loads(Path(argv[argv.index("--out") + 1]).read_text())["results"]


def machine() -> dict[str, Any]:
    """Cores, CPU model, memory and library versions (rag.machine.machine_info), plus the short keys the tables use."""
    from rag.machine import machine_info

    info = machine_info()
    versions = info["versions"]
    return {**info, "cores": info["cpus"], "torch": versions.get("torch"), "faiss": versions.get("faiss-cpu")}


def results_dir() -> Path:
    """Where tables are written: ``$RAG_BENCH_RESULTS`` when set (``benchmarks.run --out``), else benchmarks/results."""
    return Path(os.environ.get(RESULTS_ENV) or ROOT / "benchmarks" / "results")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now, for a server the benchmark starts."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def smoke() -> bool:
    """Whether this is a smoke run (``benchmarks.run --quick``), which swaps the real-size models for tiny ones."""
    return os.environ.get(SMOKE_ENV) == "1"


def speed_clip(out: Path) -> str:
    """The CLIP a speed benchmark times: random weights of the real ViT-B/32 sizes (weights do not change the time);
    in a smoke run the tiny test architecture, untrained, so that the script runs in seconds."""
    from testkit.tiny_models import make_random_clip_vit_b32, make_tiny_clip

    return make_tiny_clip(out, train_seconds=0) if smoke() else make_random_clip_vit_b32(out)


def clip_dim(model_dir: str) -> int:
    """The embedding size of ``speed_clip``'s model: 512 (ViT-B/32), or the tiny model's in a smoke run."""
    if not smoke():
        return 512
    from rag.models.encoder import Encoder

    return Encoder(model_dir).dim


def timings(function: Callable[[], Any], repeat: int, warmup: int = 3) -> np.ndarray:
    """Seconds per call over ``repeat`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        function()
    out = np.empty(repeat)
    for i in range(repeat):
        start = time.perf_counter()
        function()
        out[i] = time.perf_counter() - start
    return out


def summary(seconds: np.ndarray) -> dict[str, float]:
    """p50/p95 in milliseconds and calls per second."""
    return {
        "p50_ms": float(np.percentile(seconds, 50) * 1e3),
        "p95_ms": float(np.percentile(seconds, 95) * 1e3),
        "per_s": float(len(seconds) / seconds.sum()),
    }


def rss_mb() -> float:
    """Resident memory of this process in MB."""
    return psutil.Process().memory_info().rss / 2**20


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """Rows as a Markdown table (floats to 3 significant digits)."""

    def fmt(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
        return str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def report(name: str, title: str, rows: list[dict[str, Any]], columns: Sequence[str], extra: dict | None = None,
           out_dir: Path | None = None) -> str:
    """Print the table and write ``<name>.json`` and ``<name>.md`` with what produced them (benchmarks.provenance:
    command, commit, machine, load average before and after, date)."""
    record = provenance.record()
    info = machine()
    text = (f"### {title}\n\n{provenance.describe(record)}\n\n"
            f"torch {info['torch']} ({info['torch_threads']} threads), faiss {info['faiss']}\n\n"
            + markdown_table(rows, columns))
    print(text + "\n", flush=True)
    out_dir = out_dir or results_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {"title": title, "provenance": record, "machine": info, "columns": list(columns), "rows": rows}
    clash = set(extra or {}) & set(payload)
    if clash:
        raise ValueError(f"extra keys {sorted(clash)} would overwrite the table's own")
    payload.update(extra or {})
    (out_dir / f"{name}.json").write_text(json.dumps(payload, indent=2, default=_plain) + "\n")
    (out_dir / f"{name}.md").write_text(text + "\n")
    return text


def _plain(value: Any) -> Any:
    """NumPy scalars and paths as JSON values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def clustered_vectors(n: int, dim: int = 512, clusters: int = 2000, seed: int = 0, spread: float = 0.35) -> np.ndarray:
    """L2-normalised vectors around random centres: structured like real embeddings, unlike pure noise."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n, dim), dtype=np.float32)
    step = 100_000
    for start in range(0, n, step):
        stop = min(n, start + step)
        noise = rng.standard_normal((stop - start, dim)).astype(np.float32) * (spread / np.sqrt(dim))
        out[start:stop] = centres[rng.integers(0, clusters, stop - start)] + noise
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def queries_near(vectors: np.ndarray, count: int, seed: int = 1, noise: float = 0.5) -> np.ndarray:
    """Queries that resemble, but are not, stored vectors (as a text query resembles its image)."""
    rng = np.random.default_rng(seed)
    picked = vectors[rng.integers(0, len(vectors), count)]
    q = picked + rng.standard_normal(picked.shape).astype(np.float32) * (noise / np.sqrt(vectors.shape[1]))
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
