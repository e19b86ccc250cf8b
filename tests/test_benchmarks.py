"""Published numbers are traceable: every docs table and quoted figure equals its committed results file, every
results file says what produced it (command, commit, machine, load), the search benchmark measures every recall
it shows, and ``python -m benchmarks.run`` runs every script or says why not (a smoke run at small sizes)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pytest

from benchmarks import provenance, run, tables
from benchmarks.common import clustered_vectors, queries_near, report
from benchmarks.table_specs import TABLES, Figure

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
NOT_BENCHMARKS = {"run", "tables", "gpu_check"}  # the runner, the docs generator, the GPU check (tests/test_gpu_check.py)
# a measured-looking number: a decimal, or a number with a unit
MEASURED = re.compile(r"\b\d+\.\d+\b|\b\d[\d,]*\s?(?:ms|s|MB|GB|KB|%|×)(?![\w])")


def _tables_outside_markers(markdown: str) -> list[str]:
    """Markdown tables of a page that are not inside a generated block."""
    rest = tables.BLOCK.sub("", markdown)
    return re.findall(r"(?:^\|.*\|[ \t]*\n)+", rest, re.M)


# -- the committed docs and results -----------------------------------------------------------------------


def test_every_docs_table_and_quoted_figure_equals_its_results_file():
    problems = tables.drift(ROOT)
    assert not problems, "\n".join(problems)


def test_every_results_file_names_its_command_commit_machine_and_load():
    files = sorted(RESULTS.glob("*.json"))
    assert files
    for path in files:
        record = tables.load(path.stem, RESULTS)["provenance"]
        assert re.fullmatch(r"[0-9a-f]{40}", record["commit"] or ""), f"{path.name}: no commit"
        assert record["command"].startswith("python "), path.name
        assert isinstance(record["dirty"], bool), path.name
        assert len(record["load_before"]) == len(record["load_after"]) == 3, path.name
        assert record["machine"]["cpus"] >= 1 and record["machine"]["cpu"], path.name
        assert re.match(r"\d{4}-\d\d-\d\dT", record["finished"]), path.name


def test_every_results_file_is_shown_and_every_table_is_on_a_page():
    sources = {spec.source for spec in TABLES.values()}
    unused = sorted(p.stem for p in RESULTS.glob("*.json") if p.stem not in sources)
    assert not unused, f"results files no docs table shows: {unused}"
    marked = {m["id"] for page in tables.pages(ROOT) for m in tables.BLOCK.finditer(page.read_text(encoding="utf-8"))}
    assert set(TABLES) | {"overview"} <= marked, f"tables on no page: {sorted(set(TABLES) - marked)}"
    hand_made = {p.stem for p in RESULTS.glob("*.md")} - {p.stem for p in RESULTS.glob("*.json")}
    assert not hand_made, f"results .md files no script wrote with its .json: {sorted(hand_made)}"


def test_the_benchmarks_page_types_no_measured_number_into_a_table():
    for table in _tables_outside_markers((ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")):
        assert not MEASURED.search(table), f"a hand-written table with measured numbers:\n{table}"


def test_the_hand_written_table_check_catches_a_typed_figure():
    page = ("| a | b |\n|---|---|\n| x | 12.5 ms |\n\n<!-- generated: search (x) -->\n| n |\n|---|\n| 3.2 |\n"
            "<!-- end generated -->\n")
    found = _tables_outside_markers(page)
    assert len(found) == 1 and MEASURED.search(found[0])


# -- the generator and its check --------------------------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the search results and a page with its generated table and a quoted figure."""
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "docs").mkdir()
    shutil.copy(RESULTS / "search.json", tmp_path / "benchmarks" / "results" / "search.json")
    (tmp_path / "README.md").write_text("# Demo\n")
    (tmp_path / "docs" / "page.md").write_text(
        "# Page\n\n<!-- generated: search (python -m benchmarks.tables --write) -->\nstale\n<!-- end generated -->\n\n"
        "The exact index reaches recall\n1.5 on\nthese vectors.\n")
    return tmp_path


FLAT_RECALL = Figure("docs/page.md", "The exact index reaches recall {recall:.3f} on", lambda load: {
    "recall": next(r for r in load("search")["rows"] if r["method"].startswith("rag.search.index.search Flat"))["recall@10"]})


def test_write_fills_tables_and_figures_and_then_nothing_drifts(project: Path):
    assert tables.drift(project, [FLAT_RECALL])  # stale table, wrong figure
    assert tables.write(project, [FLAT_RECALL]) == ["docs/page.md"]
    assert tables.drift(project, [FLAT_RECALL]) == []
    text = (project / "docs" / "page.md").read_text()
    assert "| N | method |" in text and "load average" in text and "recall\n1.000 on\nthese" in text


def test_a_number_changed_in_the_page_or_in_the_results_is_caught(project: Path):
    tables.write(project, [FLAT_RECALL])
    page = project / "docs" / "page.md"
    good = page.read_text()
    page.write_text(good.replace("| 1.000 |", "| 0.999 |", 1))
    assert any("table 'search' differs" in p for p in tables.drift(project, [FLAT_RECALL]))
    page.write_text(good)
    results = project / "benchmarks" / "results" / "search.json"
    data = json.loads(results.read_text())
    flat = next(r for r in data["rows"] if r["method"].startswith("rag.search.index.search Flat"))
    flat["recall@10"] = 0.5
    results.write_text(json.dumps(data))
    problems = tables.drift(project, [FLAT_RECALL])
    assert any("table 'search' differs" in p for p in problems) and any("0.500" in p for p in problems)


def test_a_results_file_without_provenance_is_refused(project: Path):
    results = project / "benchmarks" / "results" / "search.json"
    data = json.loads(results.read_text())
    del data["provenance"]
    results.write_text(json.dumps(data))
    assert any("does not record" in p for p in tables.drift(project, []))


# -- what report() records --------------------------------------------------------------------------------


def test_report_records_command_commit_machine_load_and_date(tmp_path: Path):
    report("demo", "A demo table", [{"what": "x", "ms": 1.5}], ["what", "ms"], out_dir=tmp_path)
    data = json.loads((tmp_path / "demo.json").read_text())
    record = data["provenance"]
    assert data["rows"] == [{"what": "x", "ms": 1.5}] and data["columns"] == ["what", "ms"]
    assert re.fullmatch(r"[0-9a-f]{40}", record["commit"]) and isinstance(record["dirty"], bool)
    assert record["command"].startswith("python ") and record["arguments"] == sys.argv[1:]
    assert all(x >= 0 for x in record["load_before"] + record["load_after"])
    assert record["machine"]["cpus"] >= 1 and "versions" in record["machine"]
    assert "load average" in (tmp_path / "demo.md").read_text()


def test_the_dirty_flag_counts_code_changes_but_not_the_results_written(tmp_path: Path, monkeypatch):
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tmp_path)]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "code.py").write_text("x = 1\n")
    subprocess.run([*git, "add", "code.py"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "c"], check=True)
    monkeypatch.setattr(provenance, "ROOT", tmp_path)
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "benchmarks" / "results" / "new.json").write_text("{}")
    state = provenance.git_state()
    assert re.fullmatch(r"[0-9a-f]{40}", state["commit"]) and state["dirty"] is False
    (tmp_path / "code.py").write_text("x = 2\n")
    assert provenance.git_state()["changed"] == ["code.py"]


# -- the search benchmark measures each recall it shows ---------------------------------------------------


def test_search_benchmark_measures_recall_for_every_row():
    from benchmarks.search import K, baselines, index_rows, measured_recall

    x = clustered_vectors(4000, clusters=40, seed=2)
    queries = queries_near(x, 20)
    truth = faiss.IndexFlatIP(x.shape[1])
    truth.add(x)
    exact = truth.search(queries, K)[1]
    assert measured_recall(lambda q: np.arange(K), queries, exact) < 0.2
    rows = baselines(x, queries, exact, repeat=2, with_datasets=True)
    assert [r["recall@10"] for r in rows] == [1.0, 1.0]
    pq = index_rows(x, "IVF64,PQ16x4fs", queries, exact, repeat=2, numpy_p50=rows[0]["p50_ms"])
    assert pq[0]["method"].startswith("bare faiss") and all(r["recall@10"] < 0.95 for r in pq)


# -- benchmarks.run ---------------------------------------------------------------------------------------


def test_the_run_plan_names_every_benchmark_script():
    scripts = {p.stem for p in (ROOT / "benchmarks").glob("*.py")
               if '__name__ == "__main__"' in p.read_text(encoding="utf-8")} - NOT_BENCHMARKS
    assert len(scripts) >= 17
    assert scripts <= {bench.script for bench in run.PLAN}


def test_a_script_the_machine_cannot_run_is_skipped_with_its_reason(monkeypatch, capsys, tmp_path: Path):
    real = run.importlib.util.find_spec
    monkeypatch.setattr(run.importlib.util, "find_spec", lambda name: None if name == "ray" else real(name))
    outcome = run.run_plan([run.Bench("ray_build", needs=("ray",)), run.Bench("gone", needs=("script",))], True, tmp_path)
    assert outcome["ran"] == [] and outcome["failed"] == []
    assert outcome["skipped"] == ["ray_build: needs Ray (pip install -r requirements-build.txt)",
                                  "gone: benchmarks/gone.py is not in this checkout"]
    assert "[skipped ray_build: needs Ray" in capsys.readouterr().out


def test_a_failing_script_fails_the_run(tmp_path: Path):
    outcome = run.run_plan([run.Bench("no_such_benchmark")], True, tmp_path)
    assert outcome["ran"] == [] and len(outcome["failed"]) == 1


QUICK_SCRIPTS = sorted({bench.script for bench in run.PLAN})


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("script", QUICK_SCRIPTS)
def test_quick_run_of_each_script_writes_results_with_provenance(script: str, tmp_path: Path):
    before = {p.name: p.stat().st_mtime for p in RESULTS.iterdir()}
    done = subprocess.run([sys.executable, "-m", "benchmarks.run", "--quick", "--only", script, "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=1150)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert {p.name: p.stat().st_mtime for p in RESULTS.iterdir()} == before, "a smoke run wrote into benchmarks/results"
    written = sorted(tmp_path.glob("*.json"))
    if script == "gpu_check":  # a pass/fail check with its own report lines (tests/test_gpu_check.py), no table
        assert "PASS" in done.stdout or "[skipped gpu_check:" in done.stdout, done.stdout[-3000:]
        return
    if not written:  # allowed only when the run printed why the script could not run here
        assert re.search(rf"\[skipped {script}: .+\]", done.stdout), done.stdout[-3000:]
        return
    quick_arguments = [list(bench.quick) for bench in run.PLAN if bench.script == script]
    for path in written:
        data = tables.load(path.stem, tmp_path)
        assert data["rows"], path.name
        assert data["provenance"]["arguments"] in quick_arguments, path.name
