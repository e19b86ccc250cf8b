"""What produced a results file: the command, the code (git commit, uncommitted changes), the machine, the load.

Every ``benchmarks/results/*.json`` carries this record under ``provenance`` (written by ``common.report``), so a
reader can rerun the exact command at the exact commit and judge a timing by the load it was measured under.
The load averages are the kernel's (``os.getloadavg``: 1, 5 and 15 minutes); "before" is taken when the script
started (or when it wrote its previous table), "after" when it writes this one.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUTPUT_DIR = "benchmarks/results/"  # what the scripts write is not a change to the code that measured
MAX_LISTED = 40

_section = {"load": os.getloadavg(), "wall": time.time()}  # at import: when the script started


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def git_state() -> dict[str, Any]:
    """The commit checked out and the paths that differ from it (tracked changes and untracked files), the
    results folder excepted; ``commit`` is None outside a git checkout."""
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=all") or ""
    paths = sorted({line[3:].split(" -> ")[-1].strip('"') for line in status.splitlines() if len(line) > 3})
    changed = [p for p in paths if not p.startswith(OUTPUT_DIR)]
    return {"commit": commit.strip() if commit else None, "dirty": bool(changed), "changed_paths": len(changed),
            "changed": changed[:MAX_LISTED]}


def script_and_arguments() -> tuple[str, list[str]]:
    """The running script as ``python -m`` names it (``benchmarks.search``), and its command-line arguments."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name:
        return spec.name, sys.argv[1:]
    path = Path(sys.argv[0]).resolve() if sys.argv and sys.argv[0] else None
    name = path.relative_to(ROOT).as_posix() if path and path.is_relative_to(ROOT) else str(sys.argv[0])
    return name, sys.argv[1:]


def command_line(script: str, arguments: list[str]) -> str:
    """The shell command that reruns the script with the same arguments, from the repository root."""
    import shlex

    head = f"python {script}" if script.endswith(".py") else f"python -m {script}"
    return " ".join([head, *(shlex.quote(a) for a in arguments)])


def record() -> dict[str, Any]:
    """The provenance of a table written now; the next table's "before" is this one's "after"."""
    from rag.machine import machine_info

    script, arguments = script_and_arguments()
    load_after, now = os.getloadavg(), time.time()
    started = _section["wall"]
    out = {
        "script": script,
        "arguments": arguments,
        "command": command_line(script, arguments),
        "smoke": os.environ.get("RAG_BENCH_SMOKE") == "1",  # benchmarks.run --quick: tiny models, not for publishing
        **git_state(),
        "machine": machine_info(),
        "load_before": [round(x, 2) for x in _section["load"]],
        "load_after": [round(x, 2) for x in load_after],
        "started": dt.datetime.fromtimestamp(started, dt.timezone.utc).isoformat(timespec="seconds"),
        "finished": dt.datetime.fromtimestamp(now, dt.timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(now - started, 1),
    }
    _section.update(load=load_after, wall=now)
    return out


def describe(provenance: dict[str, Any]) -> str:
    """One sentence for a table's caption: when, by which command at which commit, on what, under what load."""
    commit = (provenance.get("commit") or "unknown")[:10]
    changes = f", with {provenance['changed_paths']} uncommitted changed paths" if provenance.get("dirty") else ""
    machine = provenance["machine"]
    before, after = provenance["load_before"][0], provenance["load_after"][0]
    return (f"Measured {provenance['finished'][:10]} by `{provenance['command']}` at commit `{commit}`{changes}; "
            f"{machine['cpu']}, {machine['cpus']} cores, {machine['memory_gb']} GB; load average "
            f"{before:.1f} before, {after:.1f} after (1 minute).")
