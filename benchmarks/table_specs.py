"""What each generated docs table shows of its results file, and the figures the prose quotes (benchmarks.tables).

A table names its results file, its columns (header, row key or function of the row, format, "left" for text)
and optionally notes: sentences computed from the same file (or others, through ``load``), so that no number
under a table is typed by hand. A figure is a phrase on a page with fields filled from results files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

Load = Callable[[str], dict]


@dataclass(frozen=True)
class Table:
    """A generated table: ``rows`` picks the rows of the results file, ``notes`` adds computed sentences."""

    source: str
    columns: list[tuple]
    rows: Callable[[dict], list[dict]] = lambda data: data["rows"]
    notes: Callable[[dict, Load], str] | None = None


@dataclass(frozen=True)
class Figure:
    """A number quoted in prose: ``template`` is the phrase on ``page``, its fields computed by ``values``."""

    page: str
    template: str
    values: Callable[[Load], dict[str, Any]]


def _row(data: dict, **match: Any) -> dict:
    """The first row whose keys equal ``match`` (strings: the row's value starts with it)."""
    for row in data["rows"]:
        if all(str(row.get(k, "")).startswith(v) if isinstance(v, str) else row.get(k) == v for k, v in match.items()):
            return row
    raise KeyError(f"no row {match}")


def _ours(data: dict, rows: int, kind: str) -> dict:
    """The search table's ``rag.search.index.search`` row for an index ``kind`` (SQ8, PQ64, HNSW, Flat) at ``rows``."""
    return next(r for r in data["rows"] if r["N"] == rows and r["method"].startswith("rag.") and kind in r["method"])


def _search_notes(data: dict, load: Load) -> str:
    largest = max(row["N"] for row in data["rows"])
    sq8, pq = (_ours(data, largest, kind) for kind in ("SQ8", "PQ64"))
    ratios = [r["wrapper/bare"] for r in data["rows"] if "wrapper/bare" in r]
    return (f"At {largest:,} rows `IVF…,SQ8` answers in {sq8['p50_ms']:.3g} ms p50 ({sq8['vs_numpy']:.3g}× NumPy's "
            f"p50) at recall@10 {sq8['recall@10']:.3f}; `IVF…,PQ64x4fs` in {pq['p50_ms']:.3g} ms at recall@10 "
            f"{pq['recall@10']:.3f}. The wrapper costs {min(ratios):.2f}–{max(ratios):.2f}× the bare `index.search` call.")


def _build_notes(data: dict, load: Load) -> str:
    return (f"Peak resident memory of the run: {data['peak_rss_mb']:,.0f} MB. The `--quantize int8` build ran at "
            f"{data['int8_vs_fp32_builds']:.2f}× the mean images/s of the two fp32 builds. The built collection's "
            f"parquet files take {data['metadata_bytes_per_row'] / 1024:.1f} KB per row (thumbnail, captions, columns).")


def _scale_notes(data: dict, load: Load) -> str:
    startup = max(load("startup")["rows"], key=lambda r: (r["rows"], -r["rss_after_load_MB"]))
    ram = startup["rss_after_load_MB"] * 2**20 / startup["rows"]
    disk = load("build")["metadata_bytes_per_row"]
    sizes = {n: (n * ram / 1e9, n * disk / 1e9) for n in (10_000_000, 100_000_000)}
    return (f"Extrapolated linearly, not measured: the metadata table takes {ram:,.0f} B per row in RAM (the "
            f"{startup['rows']:,}-row start-up above, where the index is mapped, not resident), so "
            f"{sizes[10_000_000][0]:.1f} GB at 10M rows and {sizes[100_000_000][0]:.0f} GB at 100M; thumbnails of "
            f"Flickr-sized photos take {disk / 1024:.1f} KB per row on disk (the collection of the build benchmark "
            f"below), so {sizes[10_000_000][1]:.0f} GB at 10M and {sizes[100_000_000][1] / 1000:.1f} TB at 100M. "
            "Index sizes come from FAISS's code sizes. (The generated collections here repeat 16 thumbnails, which "
            "parquet stores once: their metadata MB is not a real collection's.)")


def _decode_notes(data: dict, load: Load) -> str:
    s = data["summary"]
    return (f"Server resident memory idle {s['idle_rss_mb']:,.0f} MB, peak {s['peak_rss_mb']:,.0f} MB: **peak above "
            f"idle {s['peak_above_idle_gb']:.2f} GB** (target < 2.5 GB); every call returned results: "
            f"{'yes' if s['all_returned_results'] else 'no'}; the text search during the burst took "
            f"{s['text_during_vs_idle']:.1f}× its idle time.")


def _ray_notes(data: dict, load: Load) -> str:
    local = _row(data, engine="local")
    return (f"10M images at the local build's rate above would take {local['10M_rows_days_extrapolated']:.1f} days on "
            "one such machine (extrapolated, not measured).")


def _gpu_notes(data: dict, load: Load) -> str:
    first = _row(data, what="describe, first call")
    return (f"First call on Qwen2-VL-2B, estimated: {first['seconds']:.2f} s; suggested duration "
            f"{data['rows'][-1]['seconds']:.0f} s.")


MS = "g3"
TABLES: dict[str, Table] = {
    "search": Table("search", [
        ("N", "N", "int"), ("method", "method", "text", "left"), ("p50 ms", "p50_ms", MS), ("p95 ms", "p95_ms", MS),
        ("recall@10", "recall@10", ".3f"), ("vs NumPy", "vs_numpy", MS), ("ours / bare", "wrapper/bare", ".2f"),
        ("disk MB", "disk_MB", MS), ("RSS after load MB", "rss_load_MB", MS),
        ("RSS after 100 queries MB", "rss_after_100q_MB", MS)], notes=_search_notes),
    "build": Table("build", [("stage", "stage", "text", "left"), ("images/s", "images_per_s", MS),
                             ("vs mean bare fp32 forward", "ratio", ".2f")], notes=_build_notes),
    "end_to_end": Table("end_to_end", [("measure", "measure", "text", "left"), ("p50 ms", "p50_ms", MS),
                                       ("p95 ms", "p95_ms", MS), ("share of stages' p50", "share_of_p50", "text")]),
    "startup": Table("startup", [
        ("rows", "rows", "int"), ("checksums", "load", "text", "left"), ("load s", "load_s", MS),
        ("s per 100k rows", "s_per_100k_rows", MS), ("RSS after load MB", "rss_after_load_MB", MS),
        ("index MB", "index_MB", MS), ("metadata MB", "metadata_MB", MS), ("10 rows + 1 thumbnail s", "first_rows+thumb_s", MS)]),
    "scale": Table("scale", [
        ("rows", "rows", "int"), ("index", "index", "text", "left"), ("build s", "build_s", MS),
        ("first-start sha256 s", "first_start_sha256_s", MS), ("open s", "open_s", MS),
        ("RSS after load MB", "rss_load_MB", MS), ("RSS after 1000 queries MB", "rss_1000q_MB", MS),
        ("p50 ms", "p50_ms", MS), ("p95 ms", "p95_ms", MS), ("recall@10", "recall@10", ".3f"),
        ("index MB", "index_MB", MS), ("metadata MB", "metadata_MB", MS)]),
    "scale_extrapolated": Table("scale", [
        ("rows", "rows", "int"), ("`auto` index", "index", "text", "left"), ("index on disk MB", "index_MB", "int")],
        rows=lambda data: data["extrapolated"], notes=_scale_notes),
    "streaming": Table("streaming", [
        ("source read", "source read", "text", "left"), ("rows", "rows", "int"), ("s", "seconds", MS),
        ("time vs whole split", "time vs today", MS), ("MB read", "MB read", MS), ("bytes vs whole split", "read vs today", MS),
        ("MB written to the cache", "MB written to cache", MS)]),
    "app_latency": Table("app_latency", [
        ("endpoint", "endpoint", "text", "left"), ("input", "input", "text", "left"),
        ("bare pipeline", "bare_p50_ms", MS), ("raw HTTP", "raw_http_p50_ms", MS),
        ("gradio_client, `download_files=False`", "light_p50_ms", MS), ("gradio_client", "client_p50_ms", MS),
        ("gradio_client p90", "client_p90_ms", MS)]),
    "filtered_search": Table("filtered_search", [
        ("index", "index", "text", "left"), ("rows", "rows", "int"), ("filter passes", "filter passes", "text", "left"),
        ("path", "path", "text", "left"), ("p50 ms", "p50_ms", MS), ("p95 ms", "p95_ms", MS),
        ("vs unfiltered", "vs unfiltered", MS), ("recall@10", "recall@10", ".3f")]),
    "duplicates": Table("duplicates", [
        ("rows", "rows", "int"), ("threshold", "threshold", MS), ("planted copies", "planted copies", "int"),
        ("pairs", "pairs", "int"), ("groups", "groups", "int"), ("seconds", "seconds", MS)]),
    "decode_memory": Table("decode_memory", [("call", "call", "text", "left"), ("seconds", "seconds", ".2f"),
                                             ("outcome", "outcome", "text", "left")], notes=_decode_notes),
    "ray_build": Table("ray_build", [
        ("engine", "engine", "text", "left"), ("seconds", "seconds", MS), ("images/s", "images_per_s", MS),
        ("vs local", "ratio_vs_local", ".2f"), ("driver peak MB", "driver_peak_MB", "int"),
        ("driver + Ray processes peak MB", "tree_peak_MB", "int")], notes=_ray_notes),
    "build_contention": Table("build_contention", [
        ("build batch", "build batch", "int"), ("idle p50 ms", "idle p50 ms", MS), ("idle p95 ms", "idle p95 ms", MS),
        ("during build p50 ms", "during build p50 ms", MS), ("during build p95 ms", "during build p95 ms", MS),
        ("p50 ratio", "p50 ratio", ".2f"), ("searches during the build", "searches during build", "int"),
        ("build images/s", "build images/s", MS)]),
    "gpu_duration": Table("gpu_duration", [
        ("what", "what", "text", "left"), ("prefill ms", "prefill_ms", MS), ("ms per token", "ms_per_token", MS),
        ("seconds", "seconds", MS)], notes=_gpu_notes),
    "map_browser": Table("map_browser", [
        ("points", "points", "int"), ("figure payload MB", "payload_mb", MS), ("render s", "render_s", MS),
        ("render vs first", "render_vs_first", MS), ("zoom s", "zoom_s", MS)]),
    "quantize_ways": Table("quantize_ways", [
        ("way", "way", "text", "left"), ("p50 ms", "p50_ms", MS), ("vs fp32", "ratio", ".2f"),
        ("min cosine", "min_cosine", ".4f"), ("note", "note", "text", "left")]),
    "quantize_fidelity": Table("quantize_fidelity", [
        ("inputs", "inputs", "text", "left"), ("mode (engine)", "mode", "text", "left"), ("min cosine", "min_cosine", ".4f"),
        ("mean cosine", "mean_cosine", ".4f"), ("start-up probe min cosine", "probe_min_cosine", ".4f")]),
    "quantize_search_text": Table("quantize_search_text", [
        ("path", "path", "text", "left"), ("calls", "calls", "text", "left"), ("rows", "rows", "int"),
        ("p50 ms", "p50_ms", MS), ("vs first", "ratio", ".2f")]),
    "quantize_recall": Table("quantize_recall", [
        ("`RAG_QUANTIZE`", "RAG_QUANTIZE", "text", "left"), ("task", "task", "text", "left"), ("queries", "queries", "int"),
        ("R@1 %", "R@1 %", ".2f"), ("R@5 %", "R@5 %", ".2f"), ("R@10 %", "R@10 %", ".2f"), ("MRR", "MRR", ".4f")]),
    "flat_search": Table("flat_search", [
        ("rows", "rows", "int"), ("method", "method", "text", "left"), ("p50 ms", "p50_ms", MS), ("p95 ms", "p95_ms", MS),
        ("vs NumPy", "ratio_vs_numpy", ".2f"), ("recall@10", "recall@10", ".3f"), ("prepare s", "prepare_s", MS),
        ("extra RSS MB", "extra_rss_mb", MS)]),
    "describe_speed": Table("describe_speed", [
        ("variant", "variant", "text", "left"), ("p50 s", "p50_s", MS), ("p95 s", "p95_s", MS),
        ("vs first", "ratio", ".2f")]),
    "describe_quality": Table("describe_quality", [
        ("variant", "variant", "text", "left"), ("t2i R@1 %", "t2i_R@1", ".1f"), ("t2i R@10 %", "t2i_R@10", ".1f"),
        ("BLEU-4 k=0", "BLEU-4 k=0", ".1f"), ("ROUGE-L k=0", "ROUGE-L k=0", ".3f"), ("BLEU-4 k=5", "BLEU-4 k=5", ".1f"),
        ("ROUGE-L k=5", "ROUGE-L k=5", ".3f")]),
}

_MAP_COLUMNS = [
    ("method", "method", "text", "left"), ("rows", "rows", "int"), ("threads", "threads", "int"),
    ("wall s", "seconds", MS), ("CPU s", "cpu_seconds", MS), ("wall vs first", "time_vs_first", ".2f"),
    ("peak MB", "peak_rss_mb", "int"), ("layout's own MB", "layout_extra_mb", "int"),
    ("label agreement ceiling", "label_agreement_ceiling", ".3f"),
    ("normalised agreement, embedding", "label_agreement_embedding_normalised", ".3f"),
    ("normalised agreement, map", "label_agreement_map_normalised", ".3f"),
    ("trustworthiness", "trustworthiness", ".3f"), ("continuity", "continuity", ".3f")]
def _map_notes(data: dict, load: Load) -> str:
    methods = {row["method"]: row for row in data["rows"]}
    if not {"tsne", "umap"} <= set(methods):
        return ""
    tsne, umap = methods["tsne"], methods["umap"]
    return (f"UMAP took {umap['seconds'] / tsne['seconds']:.2f}× openTSNE's wall time and "
            f"{umap['cpu_seconds'] / tsne['cpu_seconds']:.2f}× its CPU time. On a loaded machine the CPU ratio is the "
            "fairer one: the two processes ran one after the other and got different shares of the cores.")


TABLES["map_layout"] = Table("map_layout", _MAP_COLUMNS, notes=_map_notes)
TABLES["map_layout_100k"] = Table("map_layout_100k", _MAP_COLUMNS)
TABLES["map_layout_separated"] = Table("map_layout_separated", _MAP_COLUMNS, notes=_map_notes)


def _change(before: str, after: str, spec: str = ".3f") -> Callable[[dict], str]:
    return lambda row: f"{row[before]:{spec}} → {row[after]:{spec}}"


TABLES["finetune"] = Table("finetune", [  # rag.finetune's held-out gain per method (benchmarks/finetune.py)
    ("method", "method", "text", "left"), ("held-out images", "heldout_rows", "int"), ("steps", "steps", "int"),
    ("train s (1 thread)", "train_s", ".1f"), ("text → image R@1", _change("t2i_R@1_before", "t2i_R@1_after"), "text"),
    ("text → image MRR", _change("t2i_MRR_before", "t2i_MRR_after"), "text"),
    ("image → text R@1", _change("i2t_R@1_before", "i2t_R@1_after"), "text"),
    ("R@1 points per train s", "R@1_points_per_train_s", ".1f")])
TABLES["finetune_speed"] = Table("finetune_speed", [
    ("what", "what", "text", "left"), ("rows", "rows", "int"), ("steps", "steps", "int"), ("seconds", "seconds", ".1f"),
    ("per second", "per_second", MS)])


def _search_100k(load: Load) -> dict:
    data = load("search")
    return {"sq8": _ours(data, 100_000, "SQ8")["recall@10"], "pq": _ours(data, 100_000, "PQ64")["recall@10"]}


def _contention(load: Load) -> dict:
    return {"ratio": _row(load("build_contention"), **{"build batch": 8})["p50 ratio"]}


def _client_downloads(load: Load) -> dict:
    row = _row(load("app_latency"), endpoint="/search_text")
    return {"ratio": row["client_p50_ms"] / row["light_p50_ms"]}


def _decode(load: Load) -> dict:
    summary = load("decode_memory")["summary"]
    return {"gb": summary["peak_above_idle_gb"],
            "outcome": "every call returned results" if summary["all_returned_results"] else "not every call returned results"}


def _map_separated(load: Load) -> dict:
    tsne, umap = (_row(load("map_layout_separated"), method=m) for m in ("tsne", "umap"))
    return {"noise": tsne["noise"], "t_map": tsne["label_agreement_map_normalised"],
            "u_map": umap["label_agreement_map_normalised"]}


def _map_layout(load: Load) -> dict:
    big = load("map_layout_100k")
    comparison = load("map_layout")
    tsne, umap = (_row(comparison, method=m) for m in ("tsne", "umap"))
    return {"wall": big["rows"][0]["seconds"], "cpu": big["rows"][0]["cpu_seconds"], "threads": big["rows"][0]["threads"],
            "load": big["provenance"]["load_before"][0],
            "t_map": tsne["label_agreement_map_normalised"], "u_map": umap["label_agreement_map_normalised"],
            "embedding": tsne["label_agreement_embedding_normalised"],
            "t_trust": tsne["trustworthiness"], "u_trust": umap["trustworthiness"],
            "t_cont": tsne["continuity"], "u_cont": umap["continuity"],
            "wall_ratio": umap["seconds"] / tsne["seconds"], "u_cpu": umap["cpu_seconds"], "t_cpu": tsne["cpu_seconds"],
            "comparison_load": comparison["provenance"]["load_before"][0]}


FIGURES: list[Figure] = [
    Figure("docs/building.md", "IVF-SQ8 keeps recall@10 at {sq8:.2f} while IVF-PQ64 falls to {pq:.2f}.", _search_100k),
    Figure("docs/building.md", "**Searches during a build** took {ratio:.1f}× their idle p50 latency", _contention),
    Figure("docs/api.md", "that made a k=10 search {ratio:.1f}× faster", _client_downloads),
    Figure("README.md", "returns their URLs: {ratio:.1f}× faster for a k=10 search", _client_downloads),
    Figure("docs/hardware.md", "triples the first-call estimate: {first:.2f} s for a first call",
           lambda load: {"first": _row(load("gpu_duration"), what="describe, first call")["seconds"]}),
    Figure("docs/explore.md", "openTSNE lays out 100 000 rows in {wall:.0f} s on 2 vCPU ({cpu:.0f} CPU seconds, "
           "{threads} threads, load average {load:.0f};", _map_layout),
    Figure("docs/explore.md", "attainable ceiling {t_map:.3f} vs {u_map:.3f} on the map ({embedding:.3f} in the embedding "
           "space), trustworthiness {t_trust:.3f} vs {u_trust:.3f}, continuity {t_cont:.3f} vs {u_cont:.3f} — while UMAP "
           "took {wall_ratio:.2f}× the wall time ({u_cpu:.1f} vs {t_cpu:.1f} CPU-s; measured on a loaded machine, "
           "load ≈ {comparison_load:.0f})", _map_layout),
    Figure("docs/explore.md", "With well-separated clusters (noise {noise:.1f}) the normalised agreement on the map is "
           "{t_map:.3f} vs {u_map:.3f}", _map_separated),
    Figure("docs/safety.md", "server peak **{gb:.2f} GB above idle** (target < 2.5 GB), and {outcome} (three", _decode),
]


def _create_notes(data: dict, load: Load) -> str:
    """Peak memory, threads, the UNet's size and the GPU estimate's assumptions of benchmarks/create_speed.py."""
    gpu = data["gpu_assumptions"]
    return (f"{data['threads']} torch thread(s), {data['size']} px, {data['steps']} steps, strength {data['strength']}; "
            f"UNet {data['unet_parameters_m']:,.0f} M parameters (random weights); peak resident memory of the run "
            f"{data['peak_rss_mb']:,.0f} MB. The GPU row is an estimate (counted FLOPs over "
            f"{gpu['utilisation']:.0%} of {gpu['a10g_tensor_tflops']:g} TFLOPS), not a measurement.")


TABLES["create_speed"] = Table("create_speed", [  # rag.create on a CPU, searches during a creation, GPU estimate
    ("variant", "variant", "text", "left"), ("p50 wall s", "p50_wall_s", MS), ("p50 CPU s", "p50_cpu_s", MS),
    ("safety check s", "safety_p50_s", MS), ("search idle p50 ms", "idle_p50_ms", MS),
    ("search during p50 ms", "during_p50_ms", MS), ("during / idle", "ratio", ".2f"),
    ("creation during the searches s", "creation_wall_s", MS), ("estimated s", "estimated_s", MS)],
    notes=_create_notes)


def _exact_scan_notes(data: dict, load: Load) -> str:
    """The int8 and fp16 scans at the largest size, against NumPy, FAISS and the bandwidth floor; exactness."""
    largest = max(row["rows"] for row in data["rows"])
    int8, half = (_row(data, rows=largest, queries="near", method=m) for m in ("rag int8", "rag fp16"))
    ours = [row for row in data["rows"] if row["method"].startswith("rag ")]
    return (f"At {largest:,} rows and near queries the int8 scan answers in {int8['p50_ms']:.3g} ms p50: "
            f"{int8['ratio_vs_numpy']:.2f}× NumPy's p50, {int8['ratio_vs_faiss']:.2f}× one-thread `IndexFlatIP`'s and "
            f"{int8['x_floor']:.1f}× its own floor (its {int8['read_mb']:,.0f} MB at the {int8['read_gb_s']:.1f} GB/s "
            f"read measured before that size); the fp16 scan {half['ratio_vs_numpy']:.2f}× NumPy. Over every size and "
            f"query kind the rag scans returned the exact ranking (ids and scores) for "
            f"{min(r['identical'] for r in ours):.0%} of the checked queries (the lowest share), recall@10 "
            f"{min(r['recall@10'] for r in ours):.3f} at the lowest.")


TABLES["exact_scan"] = Table("exact_scan", [
    ("rows", "rows", "int"), ("queries", "queries", "text", "left"), ("method", "method", "text", "left"),
    ("p50 ms", "p50_ms", MS), ("p95 ms", "p95_ms", MS), ("vs NumPy", "ratio_vs_numpy", ".2f"),
    ("vs FAISS, 1 thread", "ratio_vs_faiss", ".2f"), ("floor ms", "floor_ms", MS), ("× floor", "x_floor", ".2f"),
    ("identical", "identical", ".2f"), ("recall@10", "recall@10", ".3f"), ("scan copy MB", "scan_copy_mb", "int"),
    ("prepare s", "prepare_s", MS), ("load (1 min)", "load_1min", ".1f")], notes=_exact_scan_notes)

_BURST_COLUMNS = [
    ("collection", "collection", "text", "left"), ("batching", "batching", "text", "left"), ("way", "way", "text", "left"),
    ("clients", "clients", "int"), ("calls", "calls", "int"), ("qps", "qps", MS), ("qps vs unbatched", "qps_vs_unbatched", ".2f"),
    ("p50 ms", "p50_ms", MS), ("p95 ms", "p95_ms", MS), ("server queue wait p50 ms", "server_queue_wait_p50_ms", MS),
    ("server function p50 ms", "server_fn_call_p50_ms", MS), ("server total p50 ms", "server_total_p50_ms", MS),
    ("server CPU ms a call", "server_cpu_ms_per_call", MS), ("visitors' CPU ms a call", "client_cpu_ms_per_call", MS),
    ("load (1 min)", "load_1min", ".1f")]
_STAGE_COLUMNS = [
    ("collection", "collection", "text", "left"), ("encode 1 query", "encode_ms", MS),
    ("encode, per query in a batch of 16", "encode_per_query_in_batch_ms", MS), ("search 1 query", "search_ms", MS),
    ("search, per query in a batch of 16", "search_per_query_in_batch_ms", MS), ("10 rows", "rows_ms", MS),
    ("10 thumbnails", "thumbnails_ms", MS), ("gallery + JSON", "gallery_and_json_ms", MS),
    ("bare `search_text`", "bare_search_text_ms", MS)]


def _stage_rows(data: dict) -> list[dict]:
    return [{"collection": name, **stages} for name, stages in data["stages_ms"].items()]


def _burst_notes(data: dict, load: Load) -> str:
    """qps against unbatched at 16 clients (the issue's level) and at the most clients, per collection and way
    (the same run): batched, and (runs with ``--floor``) with no search at all, the ceiling Gradio leaves."""
    most = max(row["clients"] for row in data["rows"])
    sentences = []
    for level in sorted({16, most} & {row["clients"] for row in data["rows"]}):
        parts = []
        for collection, way in dict.fromkeys((row["collection"], row["way"]) for row in data["rows"]):
            found = {row["batching"]: row for row in data["rows"]
                     if (row["collection"], row["way"], row["clients"]) == (collection, way, level)}
            text = (f"{collection}, {way}: batched {found['batched']['qps_vs_unbatched']:.2f}× "
                    f"(p95/p50 {found['batched']['p95_over_p50']:.2f})")
            if "no search" in found:
                text += f", no search at all {found['no search']['qps_vs_unbatched']:.2f}×"
            parts.append(text)
        sentences.append(f"qps against unbatched at {level} clients — " + "; ".join(parts) + ".")
    return " ".join(sentences)


def _stage_notes(data: dict, load: Load) -> str:
    """What a batch of 16 saves per query, for the encoder and the search."""
    parts = [f"{name}: in a batch of 16, encoding costs {s['encode_per_query_in_batch_ms'] / s['encode_ms']:.2f}× and "
             f"the search {s['search_per_query_in_batch_ms'] / s['search_ms']:.2f}× their single-query time per query"
             for name, s in data["stages_ms"].items()]
    return "; ".join(parts) + "."


TABLES["burst"] = Table("burst", _BURST_COLUMNS, notes=_burst_notes)
TABLES["burst_stages"] = Table("burst", _STAGE_COLUMNS, rows=_stage_rows, notes=_stage_notes)
TABLES["burst_vit-b32"] = Table("burst_vit-b32", _BURST_COLUMNS, notes=_burst_notes)
TABLES["burst_vit-b32_stages"] = Table("burst_vit-b32", _STAGE_COLUMNS, rows=_stage_rows, notes=_stage_notes)
TABLES["restart"] = Table("restart", [
    ("rows", "rows", "int"), ("start", "start", "text", "left"), ("to first answer s", "total_s", MS),
    ("× as before", "x_as_before", ".2f"), ("imports s", "imports", MS), ("collection s", "collection", MS),
    ("scan copy s", "scan copy started", MS), ("encoder s", "encoder", MS), ("text tower s", "text tower", MS),
    ("captioner s", "captioner", MS), ("page s", "page", MS), ("launch s", "launch", MS),
    ("first query s", "first query", MS), ("scan copy ready s", "scan copy ready_s", MS),
    ("load (1 min)", "load_1min", ".1f")])
