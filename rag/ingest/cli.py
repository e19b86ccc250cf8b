"""Build, verify and publish a searchable image collection (FAISS index + parquet metadata + thumbnails).

Examples:
  python index_build.py --images photos/ --captions captions.csv --out collections/photos
  python index_build.py --dataset royokong/flickr30k_test --split test --limit 1000 --out collections/flickr
  python index_build.py --verify collections/photos
  python index_build.py --images photos/ --out collections/photos --push-to-hub user/photos
  python index_build.py --add-map collections/photos
"""
# The command of index_build.py and of the installed ``rag-build`` console script (pyproject.toml): one parser,
# one main(), the same flags, output and exit codes either way.

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from rag.ingest.builder import BuildOptions, build_collection
from rag.ingest.paths import UnsafeOutput, check_output
from rag.collection.reader import Collection, data_files
from rag.config import DEFAULT_CAPTIONER_MODELS, DEFAULT_EMBEDDING_MODEL, default_cache_dir, hf_token
from rag.errors import RagError
from rag.collection.hub import push_collection, resolve_collection

CONSOLE_SCRIPT = "rag-build"


def _add_engine_args(parser: argparse.ArgumentParser) -> None:
    """--engine local|ray and the Ray flags (--workers is shared: decode threads or model replicas)."""
    eng = parser.add_argument_group("engine")
    eng.add_argument("--engine", choices=("local", "ray"), default="local", help="local: this process, decode threads "
                     "+ one model (default); ray: Ray Data, reading/decoding in tasks and the model in --workers replicas "
                     "(needs requirements-build.txt)")
    eng.add_argument("--ray-address", metavar="ADDRESS", help="--engine ray: 'auto' or ray://host:port to join a cluster "
                     "(source files must be readable from every node); default: start a local Ray on this machine")
    eng.add_argument("--num-gpus", type=float, default=0.0, help="--engine ray: GPUs per model replica (default: 0)")


def _check_engine_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Ray-only flags need --engine ray; at least one worker."""
    if args.engine == "local" and (args.ray_address or args.num_gpus):
        parser.error("--ray-address and --num-gpus need --engine ray")
    if args.engine == "ray" and args.quantize == "int8":
        parser.error("--quantize int8 needs --engine local: Ray replicas encode in fp32 (fp16 on CUDA), and only the "
                     "local engine ships the int8 text tower with the collection")
    if args.workers < 1:
        parser.error("--workers must be at least 1")


def _map_arguments(parser: argparse.ArgumentParser) -> None:
    """--map / --no-map, --map-seed and --add-map (the Explore tab's map, rag.explore.map_file)."""
    group = parser.add_argument_group("map (the Space's Explore tab)")
    group.add_argument("--map", action=argparse.BooleanOptionalAction, default=True,
                       help="compute the 2-D map of all rows shown in the Explore tab (default: on)")
    group.add_argument("--map-seed", type=int, default=42, help="seed of the map layout: same seed, same map (default: 42)")
    group.add_argument("--add-map", metavar="DIR_OR_REPO", help="add a map to a built collection from its stored "
                       "vectors (no re-encoding); a folder is updated in place, a Hub repo is copied to --out first "
                       "(publish the copy with --push-to-hub)")


def _source_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the images come from: a folder or archive, or a `datasets` dataset."""
    src = parser.add_argument_group("source (one of --images / --dataset)")
    src.add_argument("--images", metavar="DIR", help="index every image under DIR, recursively "
                     "(jpg, jpeg, png, webp, gif, bmp, tif, tiff); or a .zip/.tar/.tar.gz of images, extracted "
                     "safely (a captions.csv/.jsonl at its root works like --captions)")
    src.add_argument("--captions", metavar="FILE", help="CSV or JSONL mapping a file path (relative to --images) "
                     "to a caption; several rows per file = several captions; 'label' and other columns kept")
    src.add_argument("--label-from-folder", action="store_true", help="use each image's parent folder name as label")
    src.add_argument("--dataset", metavar="NAME_OR_PATH", help="a `datasets` dataset: Hub id, local folder or parquet files")
    src.add_argument("--config", help="dataset configuration name")
    src.add_argument("--split", default="train", help="dataset split (default: train)")
    src.add_argument("--image-column", help="image column (default: the first Image column)")
    src.add_argument("--caption-column", help="caption column(s), comma-separated; string or list-of-strings columns "
                     "(default: the first of caption/captions/text/sentences)")
    src.add_argument("--label-column", help="label column; ClassLabel ints become their names")
    src.add_argument("--where", action="append", default=[], metavar="COLUMN=VALUE",
                     help="keep only dataset rows whose COLUMN equals VALUE (repeatable), e.g. split=test")
    src.add_argument("--limit", type=int, help="take only the first N rows (a --dataset is then streamed)")
    src.add_argument("--streaming", action="store_true", help="stream the --dataset even without --limit")


def _embedding_arguments(parser: argparse.ArgumentParser) -> None:
    """The CLIP model and how it runs."""
    emb = parser.add_argument_group("embedding")
    emb.add_argument("--model", default=DEFAULT_EMBEDDING_MODEL, help=f"sentence-transformers CLIP model (default: {DEFAULT_EMBEDDING_MODEL})")
    emb.add_argument("--model-revision", help="revision of --model (recorded in the manifest)")
    emb.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default: 32)")
    emb.add_argument("--device", help="cpu, cuda, ... (default: cuda if available)")
    emb.add_argument("--quantize", choices=("int8", "none"), help="int8 encoder (CPU, ~2x img/s); default none, CUDA fp16")
    emb.add_argument("--workers", type=int, default=2, help="--engine local: threads decoding images while the model "
                     "runs; --engine ray: model replicas, one Ray actor each (default: 2)")
    emb.add_argument("--caption-missing", action="store_true", help="caption rows that have none with a captioner")
    emb.add_argument("--captioner-model", default=DEFAULT_CAPTIONER_MODELS["git"], help="GIT model for --caption-missing")


def _examples() -> str:
    """The docstring's examples, written as the running command spells itself (``rag-build`` when installed)."""
    examples = __doc__.split("\n\n", 1)[1]
    program = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return examples.replace("python index_build.py", program) if program == CONSOLE_SCRIPT else examples


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command's flags, checked: exactly one source, --out to build, engine flags only with their engine."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog=_examples(), formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _source_arguments(parser)
    _embedding_arguments(parser)
    _add_engine_args(parser)
    idx = parser.add_argument_group("index and output")
    idx.add_argument("--index-factory", default="auto", help="FAISS factory string (inner product), or 'auto': "
                     "Flat up to 250k rows, HNSW32 up to 3M, IVF-SQ8 beyond (default: auto)")
    idx.add_argument("--out", metavar="DIR", help="collection directory to write: new, empty or holding a collection "
                     "(built aside in DIR.partial, moved in when complete)")
    idx.add_argument("--overwrite", action="store_true", help="replace the collection already in --out (kept in place "
                     "until the new one is complete)")
    idx.add_argument("--resume", action="store_true", help="continue an interrupted build of --out from its saved chunks")
    idx.add_argument("--chunk-rows", type=int, default=1024, help="rows per committed chunk / parquet file (default: 1024)")
    idx.add_argument("--no-progress", action="store_true", help="no progress bar")
    _map_arguments(parser)

    hub = parser.add_argument_group("hub")
    hub.add_argument("--push-to-hub", metavar="REPO_ID", help="upload the collection to this dataset repo (created if needed)")
    hub.add_argument("--private", action="store_true", help="create the dataset repo as private")
    hub.add_argument("--revision", help="branch to push to, or revision to --verify")
    hub.add_argument("--verify", metavar="DIR_OR_REPO", help="check a collection and print a summary; non-zero exit if broken")
    args = parser.parse_args(argv)
    if args.add_map:
        return args
    if not args.verify and bool(args.images) == bool(args.dataset):
        parser.error("give exactly one source: --images DIR or --dataset NAME (or --verify / --add-map DIR_OR_REPO)")
    if not args.verify and not args.out:
        parser.error("--out DIR is required to build")
    _check_engine_args(parser, args)
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    return args


def _size(path: Path) -> str:
    size = float(path.stat().st_size)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return ""


def verify(spec: str, revision: str | None, token: str | None) -> str:
    """Load a collection with every check on and return a one-screen summary."""
    directory = resolve_collection(spec, revision, token)
    collection = Collection.open(directory, verify_checksums=True)
    m = collection.manifest
    shards = data_files(directory)
    generated = m.generated_captions
    lines = [
        f"OK  {spec}" + (f" @ {revision}" if revision else ""),
        f"rows            {m.rows}",
        f"model           {m.model_id}" + (f" @ {m.model['revision']}" if m.model.get("revision") else ""),
        f"dim / metric    {m.dim} / {m.metric}",
        f"index           {m.index_factory} -> {collection.index_type} ({_size(directory / 'index.faiss')})",
        f"metadata        {len(shards)} parquet file(s), {_size_total(shards)}; columns: {', '.join(m.columns) or '-'}",
        f"captions        {m.caption_source}; {generated} generated, {m.rows - generated} from the source",
        f"labels          {sum(1 for l in collection.all_labels() if l)} rows labelled",
        f"skipped inputs  {m.skipped.get('count', 0)}",
        f"source          {m.source.get('kind')}: {m.source.get('name')}",
        f"built           {m.build.get('time')} in {m.build.get('seconds')} s",
        f"map             {_map_line(m)}",
        f"checksums       {len(m.files)} files verified (sha256)",
    ]
    return "\n".join(lines)


def _map_line(manifest) -> str:
    record = manifest.build.get("map")
    if "map.parquet" not in manifest.files or not record:
        return "none (add one with --add-map)"
    return f"{record.get('method')}, seed {record.get('seed')}, {record.get('seconds')} s"


def add_map_command(args: argparse.Namespace, token: str | None) -> int:
    """--add-map: compute the map from the stored vectors, then optionally push the collection."""
    from rag.explore.map_file import add_map_to

    target = add_map_to(args.add_map, args.out, args.revision, token, seed=args.map_seed, progress=not args.no_progress)
    print(f"added map.parquet to {target}")
    if args.push_to_hub:
        url = push_collection(target, args.push_to_hub, private=args.private, revision=args.revision, token=token)
        print(f"pushed to https://huggingface.co/datasets/{args.push_to_hub} ({url})")
    return 0


def _size_total(paths: list[Path]) -> str:
    total = sum(p.stat().st_size for p in paths)
    return f"{total / 1024 / 1024:.1f} MB"


def _source_path(args: argparse.Namespace) -> Path | None:
    """The local source folder (or dataset path) that --out must stay clear of."""
    if args.images:
        return Path(args.images)
    return Path(args.dataset) if args.dataset and Path(args.dataset).exists() else None


def make_source(args: argparse.Namespace, token: str | None):
    """The CLI's source, opened the one way every caller opens one (rag.ingest.open_source), as the owner."""
    from rag.ingest.open_source import OWNER, SourceSpec, open_source

    where = {}
    for item in args.where:
        column, sep, value = item.partition("=")
        if not sep:
            raise RagError(f"--where expects COLUMN=VALUE, got {item!r}")
        where[column] = value
    captions = [c.strip() for c in args.caption_column.split(",")] if args.caption_column else None
    return open_source(SourceSpec(
        dataset=None if args.images else args.dataset, images=args.images, captions=args.captions,
        label_from_folder=args.label_from_folder, config=args.config, split=args.split,
        image_column=args.image_column, caption_columns=captions, label_column=args.label_column, where=where,
        limit=args.limit, token=token, asker=OWNER, streaming=args.streaming or None,
    ))


def _build_local(args: argparse.Namespace, source, token: str | None):
    """Today's builder: decode threads and one model in this process."""
    from rag.models.captioner import load_captioner
    from rag.models.encoder import Encoder
    from rag.models.quantize import quantize_for_build

    encoder = Encoder(args.model, revision=args.model_revision, device=args.device, token=token)
    quantized = quantize_for_build(encoder, args.quantize, cache_dir=default_cache_dir())  # ONNX exports cached there
    captioner = (
        load_captioner("git", args.captioner_model, encoder, device=args.device, token=token)
        if args.caption_missing else None
    )
    options = BuildOptions(index_factory=args.index_factory, batch_size=args.batch_size, workers=args.workers,
                           chunk_rows=args.chunk_rows, progress=not args.no_progress,
                           caption_missing=args.caption_missing, quantize=quantized, map=args.map,
                           map_seed=args.map_seed, text_export=_text_export(encoder, quantized))
    return build_collection(source, args.out, encoder, options, resume=args.resume, captioner=captioner,
                            overwrite=args.overwrite)


def _text_export(encoder, quantized: str) -> tuple[Path, dict] | None:
    """The int8 ONNX text tower this build runs (its file and export key), which the collection then ships."""
    from rag.models.quantize import fp32_probe, probe_entry

    runner = getattr(encoder, "text_runner", None)
    if quantized != "int8" or not getattr(runner, "key", None):
        return None
    return Path(runner.path), {**runner.key, "probe": probe_entry(fp32_probe(encoder, ("text",)))}


def _build_ray(args: argparse.Namespace, source, token: str | None):
    """The Ray builder: the model loads in the replicas only, never in this (driver) process."""
    try:
        from rag.ingest.ray.engine import RayOptions, build_collection_ray
    except ImportError as exc:
        raise RagError(f"--engine ray needs Ray: pip install -r requirements-build.txt ({exc})") from exc
    options = RayOptions(model=args.model, revision=args.model_revision, device=args.device, token=token,
                         index_factory=args.index_factory, batch_size=args.batch_size, chunk_rows=args.chunk_rows,
                         progress=not args.no_progress, caption_missing=args.caption_missing,
                         captioner_model=args.captioner_model, address=args.ray_address, workers=args.workers,
                         num_gpus=args.num_gpus, map=args.map, map_seed=args.map_seed)
    return build_collection_ray(source, args.out, options, resume=args.resume, overwrite=args.overwrite)


def main(argv: list[str] | None = None) -> int:
    """Run the command: 0 on success, 1 when the source, a model or the collection fails, 2 for a bad flag or a
    refused --out, 130 when interrupted."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    token = hf_token()
    try:
        if args.verify:
            print(verify(args.verify, args.revision, token))
            return 0
        if args.add_map:
            return add_map_command(args, token)
        check_output(Path(args.out), _source_path(args), args.overwrite)  # refuse before loading anything
        source = make_source(args, token)
        count = f"at most {len(source)}" if getattr(source, "limit", None) else str(len(source) or "an unknown number of")
        print(f"source: {count} item(s) from {args.images or args.dataset}", file=sys.stderr)
        for entry in getattr(source, "archive_skipped", []):
            print(f"skipped in the archive: {entry['source']}: {entry['reason']}", file=sys.stderr)
        if args.engine == "ray":
            manifest = _build_ray(args, source, token)
        else:
            manifest = _build_local(args, source, token)
        print(f"wrote {args.out}: {manifest.rows} rows, {manifest.skipped['count']} skipped, "
              f"index {manifest.index_factory}, {manifest.build['seconds']} s")
        if args.push_to_hub:
            commit = push_collection(Path(args.out), args.push_to_hub, private=args.private, revision=args.revision,
                                     token=token)
            print(f"pushed to https://huggingface.co/datasets/{args.push_to_hub} at commit {commit} (verified); "
                  f"pin it on the Space with RAG_REVISION={commit}")
        return 0
    except UnsafeOutput as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    except RagError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: run again with --resume to continue from the saved chunks", file=sys.stderr)
        return 130
