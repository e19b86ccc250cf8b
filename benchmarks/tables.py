"""The docs' benchmark tables and figures, generated from the committed results files (benchmarks/results/*.json).

A table in README.md or docs/*.md sits between two markers::

    <!-- generated: search (python -m benchmarks.tables --write) -->
    ...table, then the sentence saying when, by which command, at which commit and under what load...
    <!-- end generated -->

and a figure quoted in prose is registered in ``benchmarks.table_specs.FIGURES`` with the phrase it appears in.
``--write`` rewrites every marked block and every registered figure from the JSON; ``--check`` (and
tests/test_benchmarks.py) fails when the Markdown and the JSON disagree, when a results file lacks its
provenance, or when a marker names a table that does not exist.

    python -m benchmarks.tables --check | --write
"""

from __future__ import annotations

import argparse
import json
import re
import string
import sys
from pathlib import Path
from typing import Any

from benchmarks.provenance import ROOT, describe

BLOCK = re.compile(r"(?P<start><!-- generated: (?P<id>[\w-]+) [^>]*-->\n)(?P<body>.*?)(?P<end><!-- end generated -->)", re.S)
START = "<!-- generated: {id} (python -m benchmarks.tables --write) -->"
PROVENANCE_KEYS = ("command", "commit", "dirty", "machine", "load_before", "load_after", "started", "finished")


class ResultsError(ValueError):
    """A results file is missing, or does not say what produced it."""


def load(name: str, results: Path) -> dict[str, Any]:
    """``results/<name>.json``, checked to carry its provenance."""
    path = results / f"{name}.json"
    if not path.is_file():
        raise ResultsError(f"benchmarks/results/{name}.json does not exist")
    data = json.loads(path.read_text(encoding="utf-8"))
    lacking = [key for key in PROVENANCE_KEYS if key not in data.get("provenance", {})]
    if lacking:
        raise ResultsError(f"benchmarks/results/{name}.json does not record {', '.join(lacking)}: rerun its script")
    if data["provenance"].get("smoke") and results.resolve() == (ROOT / "benchmarks" / "results").resolve():
        raise ResultsError(f"benchmarks/results/{name}.json comes from a smoke run (tiny models): rerun its script")
    return data


def cell(value: Any, spec: str = "g3") -> str:
    """One table cell: ``g3`` = 3 significant digits (thousands with commas), ``int``, ``text`` or a format spec."""
    if value is None or value == "":
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str) or spec == "text":
        return str(value)
    if spec == "int":
        return f"{value:,.0f}"
    if spec == "g3":
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return format(value, spec)


def markdown(columns: list[tuple], rows: list[dict]) -> str:
    """A Markdown table; ``columns`` are (header, key or function of the row, format[, "left"])."""
    head = "| " + " | ".join(c[0] for c in columns) + " |"
    rule = "|" + "".join("---|" if len(c) > 3 and c[3] == "left" else "---:|" for c in columns)
    body = []
    for row in rows:
        values = [c[1](row) if callable(c[1]) else row.get(c[1]) for c in columns]
        body.append("| " + " | ".join(cell(v, c[2]) for v, c in zip(values, columns)) + " |")
    return "\n".join([head, rule, *body])


def overview(results: Path) -> str:
    """Every results file with when, at which commit and under what load it was measured, and its command."""
    rows = []
    for path in sorted(results.glob("*.json")):
        record = load(path.stem, results)["provenance"]
        rows.append({"file": f"`{path.name}`", "date": record["finished"][:10],
                     "commit": f"`{(record['commit'] or 'unknown')[:10]}`" + (" + changes" if record["dirty"] else ""),
                     "load": f"{record['load_before'][0]:.1f} → {record['load_after'][0]:.1f}",
                     "cores": record["machine"]["cpus"], "command": f"`{record['command']}`"})
    columns = [("results file", "file", "text", "left"), ("measured", "date", "text", "left"),
               ("commit", "commit", "text", "left"), ("load average before → after", "load", "text"),
               ("cores", "cores", "int"), ("command", "command", "text", "left")]
    return markdown(columns, rows) + "\n"


def render(table_id: str, results: Path) -> str:
    """The generated body of one marked block: the table, its provenance sentence, its notes."""
    from benchmarks.table_specs import TABLES

    if table_id == "overview":
        return overview(results)
    if table_id not in TABLES:
        raise ResultsError(f"no table named {table_id!r} in benchmarks/table_specs.py")
    spec = TABLES[table_id]
    data = load(spec.source, results)
    try:
        text = markdown(spec.columns, spec.rows(data))
        notes = spec.notes(data, lambda name: load(name, results)) if spec.notes else ""
    except (KeyError, TypeError, ValueError, StopIteration) as error:
        raise ResultsError(f"benchmarks/results/{spec.source}.json lacks what table {table_id!r} shows "
                           f"({type(error).__name__}: {error}): rerun its script") from error
    text += f"\n\n{describe(data['provenance'])} Source: `benchmarks/results/{spec.source}.json`."
    return text + (f"\n\n{notes}" if notes else "") + "\n"


def pages(root: Path) -> list[Path]:
    """README.md and every docs page."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def _figure_pattern(template: str, values: dict, exact: bool) -> re.Pattern:
    """A regex for a figure's phrase: literal text with any whitespace between words; each field is captured, as its
    rendered value (``exact``) or as any number (any text, for a text field) so that ``--write`` can replace it."""
    parts = []
    for literal, field, spec, _ in string.Formatter().parse(template):
        parts.append(r"\s+".join(re.escape(word) for word in re.split(r"\s+", literal)))
        if field is None:
            continue
        if exact:
            parts.append(f"({re.escape(format(values[field], spec))})")
        else:
            parts.append(r"(.+?)" if isinstance(values[field], str) else r"([-+]?\d[\d,]*(?:\.\d+)?)")
    return re.compile("".join(parts))


def _figure_fields(template: str) -> list[tuple[str, str]]:
    return [(field, spec) for _, field, spec, _ in string.Formatter().parse(template) if field is not None]


def drift(root: Path = ROOT, figures: list | None = None) -> list[str]:
    """Every place where the Markdown and the results disagree (an empty list when all agree); ``figures``
    defaults to benchmarks.table_specs.FIGURES."""
    from benchmarks.table_specs import FIGURES

    results, problems = root / "benchmarks" / "results", []
    for page in pages(root):
        text = page.read_text(encoding="utf-8")
        for match in BLOCK.finditer(text):
            try:
                expected = render(match["id"], results)
            except ResultsError as error:
                problems.append(f"{page.relative_to(root)}: {error}")
                continue
            if match["body"] != expected:
                problems.append(f"{page.relative_to(root)}: table {match['id']!r} differs from its results file "
                                "(python -m benchmarks.tables --write)")
    for figure in FIGURES if figures is None else figures:
        page = root / figure.page
        try:
            values = figure.values(lambda name: load(name, results))
        except ResultsError as error:
            problems.append(f"{figure.page}: {error}")
            continue
        if not page.is_file() or not _figure_pattern(figure.template, values, exact=True).search(page.read_text(encoding="utf-8")):
            problems.append(f"{figure.page}: the figure {figure.template.format(**values)!r} is not on the page "
                            "(python -m benchmarks.tables --write, or reword FIGURES in benchmarks/table_specs.py)")
    return problems


def _write_figure(text: str, template: str, values: dict) -> str:
    match = _figure_pattern(template, values, exact=False).search(text)
    if match is None:
        return text
    out, last = [], match.start()
    for group, (field, spec) in enumerate(_figure_fields(template), start=1):
        out += [text[last:match.start(group)], format(values[field], spec)]
        last = match.end(group)
    return text[:match.start()] + "".join(out) + text[last:]


def _rewrite_block(match: re.Match, results: Path) -> str:
    """A marked block with its body generated afresh; left as it is when its results file cannot be read (the
    check then names the file)."""
    try:
        return START.format(id=match["id"]) + "\n" + render(match["id"], results) + match["end"]
    except ResultsError:
        return match[0]


def write(root: Path = ROOT, figures: list | None = None) -> list[str]:
    """Rewrite every marked block and registered figure from the results; returns the pages changed."""
    from benchmarks.table_specs import FIGURES

    results, changed = root / "benchmarks" / "results", []
    figures = FIGURES if figures is None else figures
    for page in pages(root):
        text = page.read_text(encoding="utf-8")
        new = BLOCK.sub(lambda m: _rewrite_block(m, results), text)
        for figure in (f for f in figures if root / f.page == page):
            try:
                values = figure.values(lambda name: load(name, results))
            except ResultsError:
                continue
            new = _write_figure(new, figure.template, values)
        if new != text:
            page.write_text(new, encoding="utf-8")
            changed.append(page.relative_to(root).as_posix())
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", action="store_true", help="rewrite the docs' tables and figures from the results")
    group.add_argument("--check", action="store_true", help="exit 1 if the docs and the results disagree")
    args = parser.parse_args(argv)
    if args.write:
        for page in write():
            print(f"rewrote {page}")
    problems = drift()
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0

if __name__ == "__main__":
    sys.exit(main())
