"""House rules a reviewer would otherwise check by hand: the package layout of ``rag/``, the allowed import
directions between its units (no cycles), rag never importing the UI, and module/function sizes as a backstop.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RAG = ROOT / "rag"
CHECKED = [ROOT / "app.py", ROOT / "index_build.py", *sorted(RAG.rglob("*.py")), *sorted((ROOT / "ui").rglob("*.py"))]
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
MAX_TOP_MODULES = 12

# A unit is a module directly in rag/ or a package directly under it. A unit may import only units of a lower
# rank: data flows down (space -> startup -> pipeline / ingest -> explore -> collection / models -> search /
# images -> config -> errors), so no two units can import each other, directly or round a loop.
RANK = {
    "rag.errors": 0, "rag.machine": 0, "rag.metrics": 0,
    "rag.config": 1,
    "rag.images": 2, "rag.search": 2,
    "rag.models": 3, "rag.collection": 3,
    "rag.explore": 4,
    "rag.ingest": 5, "rag.pipeline": 5,
    "rag.startup": 6, "rag.create": 6,  # create sits below evaluate, whose `create` task runs it
    "rag.space": 7, "rag.evaluate": 7, "rag.finetune": 7,
    "rag": 9,  # rag/__init__.py: the public library API may use anything
}


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _unit_of_path(path: Path) -> str:
    parts = path.relative_to(RAG).parts
    if parts == ("__init__.py",):
        return "rag"
    return "rag." + parts[0].removesuffix(".py")


def _imported_modules(path: Path) -> set[str]:
    """Every absolute module an import statement names, anywhere in the file (lazy imports count too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.update(f"rag.{a.name}" for a in node.names) if node.module == "rag" else names.add(node.module)
    return names


def _unit_edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for path in RAG.rglob("*.py"):
        unit = _unit_of_path(path)
        for module in _imported_modules(path):
            if module.startswith("rag."):
                target = ".".join(module.split(".")[:2])
                if target != unit:
                    edges.setdefault(unit, set()).add(target)
    return edges


def test_rag_has_few_top_level_modules_and_every_package_says_what_it_owns() -> None:
    top = sorted(p.name for p in RAG.glob("*.py") if p.name != "__init__.py")
    assert len(top) <= MAX_TOP_MODULES, f"{len(top)} modules directly in rag/ ({', '.join(top)}): group them"
    for init in sorted(RAG.rglob("__init__.py")):
        assert ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))), f"{_name(init)} has no docstring"


def test_every_unit_has_a_place_in_the_layers() -> None:
    units = {_unit_of_path(p) for p in RAG.rglob("*.py")}
    assert units <= set(RANK), f"place these in tests/test_house.py RANK: {sorted(units - set(RANK))}"


def test_units_import_only_downwards() -> None:
    upward = [f"{unit} -> {target}" for unit, targets in sorted(_unit_edges().items()) for target in sorted(targets)
              if RANK.get(target, 99) >= RANK.get(unit, -1)]
    assert not upward, "imports against the layering (or between siblings): " + "; ".join(upward)


def test_no_import_cycle_between_units() -> None:
    edges = _unit_edges()
    state: dict[str, int] = {}

    def visit(unit: str, trail: list[str]) -> None:
        state[unit] = 1
        for target in sorted(edges.get(unit, ())):
            assert state.get(target) != 1, "import cycle: " + " -> ".join([*trail, unit, target])
            if target not in state:
                visit(target, [*trail, unit])
        state[unit] = 2

    for unit in sorted(edges):
        if unit not in state:
            visit(unit, [])


@pytest.mark.parametrize("path", CHECKED, ids=_name)
def test_modules_and_functions_stay_small(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    assert len(source.splitlines()) <= MAX_MODULE_LINES, f"{_name(path)} has over {MAX_MODULE_LINES} lines: split it"
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"{_name(path)}: functions over {MAX_FUNCTION_LINES} lines: {', '.join(long)}"


@pytest.mark.parametrize("path", sorted(RAG.rglob("*.py")), ids=_name)
def test_rag_never_imports_the_ui(path: Path) -> None:
    """Data flows one way: app/ui -> rag. The library stays usable without gradio (CLI, evaluation, builds)."""
    roots = {name.split(".")[0] for name in _imported_modules(path)}
    assert not roots & {"gradio", "ui", "app"}, f"{_name(path)} imports the UI layer"


def test_the_layer_rule_catches_an_upward_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rule is not vacuous: a search module importing the pipeline is reported."""
    fake = tmp_path / "rag"
    (fake / "search").mkdir(parents=True)
    (fake / "search" / "bad.py").write_text("from rag.pipeline import Pipeline\n")
    (fake / "pipeline.py").write_text("from rag.search.bad import x\n")
    monkeypatch.setattr(sys.modules[__name__], "RAG", fake)
    with pytest.raises(AssertionError, match="rag.search -> rag.pipeline"):
        test_units_import_only_downwards()
    with pytest.raises(AssertionError, match="import cycle"):
        test_no_import_cycle_between_units()
