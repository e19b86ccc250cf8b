"""The GPU check (benchmarks/gpu_check.py) in its CPU dry run: tiny models, the ZeroGPU children under the real
`spaces` package. What a maintainer relies on when they run it on a GPU: it runs end to end, no check fails on the
code as it is, the decisions of issue 28 are among its checks, the report file holds what was printed, and the
committed dry-run output (benchmarks/results/gpu_check_dry_run.txt) names the same checks as a fresh run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "benchmarks" / "results" / "gpu_check_dry_run.txt"
MUST_PASS = (
    "devices.t4_dtype",  # a T4 gets Qwen2-VL in fp32, never fp16
    "git.nan_guard", "qwen.nan_guard",  # NaN logits -> CaptionerError, not "!!!!"
    "zerogpu.placement", "zerogpu.main_process_no_cuda",
    "zerogpu.onnx_export_under_spaces",  # the int8 ONNX tower under spaces' torch patching
    "zerogpu.git_startup",  # a GIT Space registers a @spaces.GPU function and reports at start-up
    "zerogpu.describe_concurrency", "zerogpu.worker_reuse",
)


def checks(lines: list[str]) -> dict[str, str]:
    """check name -> status, from report lines."""
    found = {}
    for line in lines:
        status, _, rest = line.partition(" ")
        if status in ("PASS", "FAIL", "WARN", "SKIP", "INFO"):
            found[rest.split(":", 1)[0]] = status
    return found


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """(exit status, stdout lines, --out file lines, stderr tail) of one dry run."""
    out = tmp_path_factory.mktemp("gpu_check") / "report.txt"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPACES_", "ZEROGPU_", "RAG_"))}
    done = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--dry-run", "--out", str(out)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=900, check=False)
    lines = [line for line in done.stdout.splitlines() if line[:4] in ("PASS", "FAIL", "WARN", "SKIP", "INFO", "SUMM")]
    written = out.read_text().splitlines() if out.exists() else []
    return done.returncode, lines, written, done.stderr[-3000:]


@pytest.mark.slow
def test_the_dry_run_passes_every_check_of_issue_28(dry_run):
    code, lines, _, stderr = dry_run
    found = checks(lines)
    failed = [name for name, status in found.items() if status == "FAIL"]
    assert code == 0 and not failed, (failed, stderr)
    assert {name: found.get(name) for name in MUST_PASS} == {name: "PASS" for name in MUST_PASS}
    assert lines[-1].startswith("SUMMARY") and " 0 fail" in lines[-1]


@pytest.mark.slow
def test_the_report_file_holds_what_was_printed(dry_run):
    _, lines, written, _ = dry_run
    assert written == lines


@pytest.mark.slow
def test_the_committed_dry_run_output_names_the_same_checks(dry_run):
    committed = checks(COMMITTED.read_text().splitlines())
    assert committed == checks(dry_run[1]), "rerun: python -m benchmarks.gpu_check --dry-run --out " + str(
        COMMITTED.relative_to(ROOT))
