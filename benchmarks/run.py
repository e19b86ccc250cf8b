"""Run every benchmark script in turn (each prints its Markdown table and writes results/<name>.json|md).

Usage: python benchmarks/run.py [--quick]   (quick: smaller sizes, for a smoke run)
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FULL = [
    ["search.py", "--sizes", "30000,1000000"],
    ["build_speed.py", "--images", "320"],
    ["end_to_end.py", "--rows", "30000"],
    ["startup.py", "--sizes", "30000,1000000"],
]
QUICK = [
    ["search.py", "--sizes", "5000", "--queries", "50"],
    ["build_speed.py", "--images", "64"],
    ["end_to_end.py", "--rows", "2000", "--queries", "10"],
    ["startup.py", "--sizes", "5000"],
]


def main() -> int:
    plan = QUICK if "--quick" in sys.argv else FULL
    for script, *args in plan:
        started = time.perf_counter()
        code = subprocess.call([sys.executable, str(HERE / script), *args])
        print(f"[{script} finished in {time.perf_counter() - started:.0f} s, exit {code}]\n", flush=True)
        if code:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
