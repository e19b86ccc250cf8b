"""Start-up: time and memory to load collections of 30k and 1M rows (memory-mapped index, lazy metadata).

Usage: python -m benchmarks.startup [--sizes 30000,1000000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import ROOT, clustered_vectors, report
from benchmarks.synthetic import write_synthetic_collection

LOAD = """
import json, time, psutil
from pathlib import Path
from rag.collection.reader import Collection
p = psutil.Process(); base = p.memory_info().rss
t = time.perf_counter()
c = Collection.open(Path({path!r}), verify_checksums={verify!r}, verified_stamp_dir={stamp!r})
load = time.perf_counter() - t
after = p.memory_info().rss
t = time.perf_counter(); rows = c.rows(range(0, len(c), max(1, len(c) // 10))); thumb = c.thumbnail(len(c) - 1)
first = time.perf_counter() - t
print(json.dumps({{"load_s": load, "rss_mb": (after - base) / 2**20, "first_rows_s": first}}))
"""


def load_once(path: Path, verify: bool, stamp: str | None) -> dict:
    code = LOAD.format(path=str(path), verify=verify, stamp=stamp)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="30000,1000000")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in [int(s) for s in args.sizes.split(",")]:
            path = write_synthetic_collection(Path(tmp) / f"c{n}", clustered_vectors(n), "synthetic/model")
            index_mb = (path / "index.faiss").stat().st_size / 2**20
            data_mb = sum(p.stat().st_size for p in (path / "data").glob("*.parquet")) / 2**20
            stamp = str(Path(tmp) / "stamps")
            for mode, verify in [("full sha256 check (first start)", True), ("checksums stamped (restart)", True),
                                 ("no checksum check", False)]:
                result = load_once(path, verify, stamp)
                rows.append({"rows": n, "load": mode, "load_s": result["load_s"],
                             "s_per_100k_rows": result["load_s"] / n * 100_000, "rss_after_load_MB": result["rss_mb"],
                             "index_MB": index_mb, "metadata_MB": data_mb, "first_rows+thumb_s": result["first_rows_s"]})
            # drop the big collection before the next size
            import shutil
            shutil.rmtree(path)
    report("startup", "Start-up: Collection.open (memory-mapped Flat index, metadata without thumbnails)", rows,
           ["rows", "load", "load_s", "s_per_100k_rows", "rss_after_load_MB", "index_MB", "metadata_MB",
            "first_rows+thumb_s"])


if __name__ == "__main__":
    main()
