"""Run every benchmark script in turn (each prints its Markdown table and writes results/<name>.json|md).

Usage (from the repository root): python -m benchmarks.run [--quick]   (quick: smaller sizes, for a smoke run)
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FULL = [
    ["search", "--sizes", "30000,1000000"],
    ["build_speed", "--images", "320"],
    ["end_to_end", "--rows", "30000"],
    ["startup", "--sizes", "30000,1000000"],
    ["flat_search", "--sizes", "250000,1000000"],
    ["quantize"],
    ["describe_speed"],
    ["streaming", "--rows", "50000", "--limit", "1000"],
]
QUICK = [
    ["search", "--sizes", "5000", "--queries", "50"],
    ["build_speed", "--images", "64"],
    ["end_to_end", "--rows", "2000", "--queries", "10"],
    ["startup", "--sizes", "5000"],
    ["flat_search", "--sizes", "20000", "--queries", "20"],
    ["quantize", "--texts", "50", "--images", "32", "--rows", "2000", "--calls", "5"],
    ["describe_speed", "--calls", "1", "--sample", "6"],
    ["streaming", "--rows", "3000", "--limit", "200", "--shards", "3"],
]


def main() -> int:
    plan = QUICK if "--quick" in sys.argv else FULL
    for script, *args in plan:
        started = time.perf_counter()
        code = subprocess.call([sys.executable, "-m", f"benchmarks.{script}", *args], cwd=HERE.parent)
        print(f"[{script} finished in {time.perf_counter() - started:.0f} s, exit {code}]\n", flush=True)
        if code:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
