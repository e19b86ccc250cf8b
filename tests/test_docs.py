"""The docs cannot drift: the code map names exactly the modules that exist, every page is reachable from the
README, every relative link lands on a file (and heading), and every shell line is run or has a stated reason.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from readme_blocks import (DATA_LANGS, LANGS, NOT_RUN, ROOT, TESTED_ELSEWHERE, all_fences, doc_pages, fenced_blocks,
                           read_all_blocks, shell_line_account)
from test_house import RANK

README = ROOT / "README.md"
DOCS = ROOT / "docs"
ARCHITECTURE = DOCS / "architecture.md"
MAX_README_LINES = 450
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCED = re.compile(r"^\s*```.*?^\s*```[ \t]*$", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")


# -- helpers (each takes a root, so the tests below can show that they catch drift) -------------------------


def code_map_paths(markdown: str) -> list[str]:
    """The paths in the first cell of the code map's table rows (`rag/...`, `ui/...`, top-level `*.py`)."""
    cells = re.findall(r"^\|\s*`([^`]+)`\s*\|", markdown, re.M)
    return [c for c in cells if c.startswith(("rag/", "ui/")) or ("/" not in c and c.endswith(".py"))]


def existing_paths(root: Path) -> set[str]:
    """Every package folder (``rag/search/``) and module (``rag/search/flat.py``) of rag/ and ui/, by path, except
    ``__init__.py`` / ``__main__.py``; and the top-level Python files."""
    paths = {p.name for p in root.glob("*.py")}
    for package in ("rag", "ui"):
        for path in (root / package).rglob("*.py"):
            if path.name == "__init__.py":
                paths.add(path.parent.relative_to(root).as_posix() + "/")
            elif path.name != "__main__.py":
                paths.add(path.relative_to(root).as_posix())
    return paths


def code_map_drift(root: Path) -> tuple[set[str], set[str], set[str]]:
    """(missing from the map, named but not in the tree, named twice)."""
    named = code_map_paths((root / "docs" / "architecture.md").read_text(encoding="utf-8"))
    actual = existing_paths(root)
    return actual - set(named), set(named) - actual, {p for p in named if named.count(p) > 1}


def rank_table(markdown: str) -> dict[str, int]:
    """The units and ranks of the table under "## Import directions"."""
    section = markdown.split("## Import directions", 1)[1].split("\n## ", 1)[0]
    ranks = {}
    for rank, cell in re.findall(r"^\|\s*(\d+)\s*\|([^|]*)\|", section, re.M):
        ranks.update({unit: int(rank) for unit in re.findall(r"`(rag(?:\.\w+)*)`", cell)})
    return ranks


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (``_`` and ``-`` kept), spaces to ``-``."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """Every heading anchor of a page, GitHub-style (a repeated heading gets ``-1``, ``-2``...)."""
    seen: dict[str, int] = {}
    found = set()
    for line in FENCED.sub("", markdown).splitlines():
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            base = slug(match[1])
            found.add(base if base not in seen else f"{base}-{seen[base]}")
            seen[base] = seen.get(base, 0) + 1
    return found


def links(markdown: str) -> list[str]:
    """Every Markdown link target outside code blocks and code spans."""
    return LINK.findall(INLINE_CODE.sub("", FENCED.sub("", markdown)))


def broken_links(root: Path) -> list[str]:
    """Relative links of README.md and docs/*.md whose file, or heading anchor, does not exist."""
    broken = []
    for page in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        for target in links(page.read_text(encoding="utf-8")):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            where = f"{page.relative_to(root)} -> {target}"
            if not file.is_file():
                broken.append(f"{where} (no such file)")
            elif anchor and file.suffix == ".md" and anchor not in anchors(file.read_text(encoding="utf-8")):
                broken.append(f"{where} (no such heading)")
    return broken


# -- the code map -----------------------------------------------------------------------------------------


def test_the_code_map_names_exactly_the_packages_and_modules_that_exist():
    missing, stale, twice = code_map_drift(ROOT)
    assert not missing, f"docs/architecture.md does not name: {sorted(missing)} (add one table row each)"
    assert not stale, f"docs/architecture.md names what is not in the tree: {sorted(stale)}"
    assert not twice, f"docs/architecture.md names these twice: {sorted(twice)}"


def test_the_code_map_check_catches_a_new_and_a_removed_module(tmp_path):
    (tmp_path / "docs").mkdir()
    for path in ("rag/__init__.py", "rag/search/__init__.py", "rag/search/new.py", "rag/evaluate/__main__.py",
                 "ui/__init__.py", "app.py"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("")
    (tmp_path / "docs" / "architecture.md").write_text(
        "| `rag/` | x |\n| `rag/search/` | x |\n| `rag/search/gone.py` | x |\n| `ui/` | x |\n| `app.py` | x |\n")
    assert code_map_drift(tmp_path) == ({"rag/search/new.py"}, {"rag/search/gone.py"}, set())


def test_the_import_directions_on_the_page_are_the_house_rules():
    assert rank_table(ARCHITECTURE.read_text(encoding="utf-8")) == RANK


# -- pages and links ---------------------------------------------------------------------------------------


def test_the_readme_is_a_short_front_door_with_the_space_card_on_top():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= MAX_README_LINES, f"README.md has {len(text.splitlines())} lines: move reference to docs/"
    card = text.split("\n---\n", 1)[0]
    assert text.startswith("---\n") and "sdk: gradio" in card and "app_file: app.py" in card


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in links(README.read_text(encoding="utf-8"))}
    unlinked = [p.name for p in sorted(DOCS.glob("*.md")) if p.resolve() not in linked]
    assert not unlinked, f"README.md links no page {unlinked}"
    for page in TESTED_ELSEWHERE:  # pages written elsewhere are linked even before they exist
        assert (ROOT / page).resolve() in linked, f"README.md does not link {page}"


def test_every_relative_link_resolves():
    assert not broken_links(ROOT), "\n".join(broken_links(ROOT))


def test_the_link_check_catches_a_missing_file_and_a_missing_heading(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A page\n\n## Section `one`\n\n[back](../README.md#title)\n")
    (tmp_path / "README.md").write_text(
        "# Title\n\n[ok](docs/a.md#section-one) [gone](docs/b.md) [typo](docs/a.md#section-two) `[code](x.md)`\n")
    assert broken_links(tmp_path) == ["README.md -> docs/b.md (no such file)",
                                      "README.md -> docs/a.md#section-two (no such heading)"]


def test_pages_left_to_other_tests_have_those_tests():
    for page, test in TESTED_ELSEWHERE.items():
        if (ROOT / page).exists():
            assert (ROOT / test).is_file(), f"{page} says its blocks are tested by {test}, which does not exist"


# -- code blocks: nothing untested goes unsaid -------------------------------------------------------------


@pytest.mark.parametrize("page", doc_pages(ROOT), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_fence_says_its_language_and_json_parses(page):
    for block in all_fences(page.read_text(encoding="utf-8"), page.relative_to(ROOT).as_posix()):
        assert block.lang in set(LANGS.values()) | set(DATA_LANGS), (
            f"{block.name}: tag the fence with one of {sorted(set(LANGS) | set(DATA_LANGS))} "
            "(an untagged block is never run)")
        if block.lang == "json":
            json.loads(block.text)


def test_every_shell_line_is_run_or_has_a_reason():
    unexplained = [line.describe() for line in shell_line_account(read_all_blocks(ROOT)) if line.status == "unexplained"]
    assert not unexplained, "shell lines neither run nor explained:\n" + "\n".join(unexplained)


def test_the_not_run_list_has_no_stale_entry():
    used = {line.command.key for line in shell_line_account(read_all_blocks(ROOT))}
    assert not set(NOT_RUN) - used, f"NOT_RUN in tests/readme_blocks.py lists lines no page has: {set(NOT_RUN) - used}"


def test_a_new_unrun_shell_line_without_a_reason_fails():
    markdown = ("```bash\npython index_build.py --images photos/ --out c\n"
                "./scripts/run_app.sh\nrm -rf collections/\n"
                "npm install left-pad  # readme-test: skip (needs the network)\n"
                "make docs  # readme-test: skip\n```\n")
    account = shell_line_account(fenced_blocks(markdown, "docs/new.md"))
    assert [(line.command.key, line.status) for line in account] == [
        ("python index_build.py --images photos/ --out c", "run"), ("./scripts/run_app.sh", "allowed"),
        ("rm -rf collections/", "unexplained"), ("npm install left-pad", "skipped"), ("make docs", "unexplained")]
    assert account[3].reason == "needs the network" and account[1].reason == NOT_RUN["./scripts/run_app.sh"]
