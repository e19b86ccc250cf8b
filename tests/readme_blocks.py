"""Read the fenced code blocks of README.md and docs/*.md, the CLI commands inside their shell blocks, and account
for every shell line the tests do not run (tests/test_readme.py runs them; tests/test_docs.py checks the account).

Every line of a ```bash block is one of:

* **run**: a ``python index_build.py ...`` / ``python -m rag.evaluate ...`` command (run in page order by
  tests/test_readme.py), or any line of a block that calls curl (run whole, as a script, against the test app);
* **skipped**: it carries ``# readme-test: skip (reason)``, with a reason;
* **allowed**: it is in ``NOT_RUN`` below, with a reason.

Anything else is *unexplained*, and tests/test_docs.py fails on it: a new shell line cannot go untested silently.
The whole account is printed at the end of every pytest run that collects the README tests (tests/conftest.py).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w+-]*)\s*$")
LANGS = {"python": "python", "py": "python", "bash": "bash", "sh": "bash", "shell": "bash", "console": "bash",
         "js": "js", "javascript": "js", "mjs": "js"}
# Fences that hold data, not commands: never run, but every fence must be tagged (a command cannot hide untagged).
DATA_LANGS = {"json": "JSON, checked to parse by tests/test_docs.py", "text": "a file layout or printed output"}
CLI_PROGRAMS = (("python", "index_build.py"), ("python", "-m", "rag.evaluate"))
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
SKIP_MARK = "# readme-test: skip"  # a shell line carrying this comment is listed as skipped, with its reason

# The order a reader follows: later pages' commands use what earlier ones built (collections/tin-valid,
# you/photos-collection). Pages not named here follow in name order, so a new page is covered too.
READING_ORDER = ("README.md", "docs/building.md", "docs/explore.md", "docs/evaluation.md", "docs/api.md")
# Pages whose blocks another test runs, with that test: the harness leaves them to it and says so.
TESTED_ELSEWHERE = {"docs/library.md": "tests/test_library.py"}

# Shell lines the tests do not run, each with the reason. The key is the command as the shell reads it
# (comments dropped, ``VAR=value`` prefixes first); an entry no page uses any more fails tests/test_docs.py.
NOT_RUN = {
    "./scripts/run_app.sh": "installs the requirements (network) and serves until stopped; "
                            "tests/test_app.py launches the same app",
    "./scripts/test.sh": "runs the whole test suite, this harness included (CI runs it: .ci/run)",
    "pip install -r requirements-build.txt": "installs packages from PyPI (network); scripts/setup.sh --dev "
                                             "installs the same file, and tests/test_ray_build.py uses it",
    ". .venv/bin/activate": "activates the virtual environment the tests already run in",
}


@dataclass(frozen=True)
class Block:
    """One fenced block: its language, text (indent removed), first line number, the heading above it, its page."""

    lang: str
    text: str
    line: int
    heading: str
    source: str = "README.md"

    @property
    def name(self) -> str:
        return f"{self.source}:{self.lang}@L{self.line}"


@dataclass(frozen=True)
class Command:
    """One shell command of a block, continuation lines joined, comments dropped, ``VAR=value`` prefixes apart."""

    argv: tuple[str, ...]
    line: int
    text: str
    env: tuple[tuple[str, str], ...] = ()
    source: str = "README.md"

    @property
    def name(self) -> str:
        return f"{self.source}:L{self.line}:{' '.join(self.argv[:4])}"

    @property
    def key(self) -> str:
        """The command as the shell reads it: ``VAR=value`` prefixes, then the words; no comment."""
        return " ".join([*(f"{name}={value}" for name, value in self.env), *self.argv])


@dataclass(frozen=True)
class ShellLine:
    """How the tests treat one shell command: ``run``, ``skipped``, ``allowed`` or ``unexplained``, and why."""

    command: Command
    status: str
    reason: str

    def describe(self) -> str:
        return f"{self.command.source}:{self.command.line}: {self.command.key}  [{self.status}: {self.reason}]"


def all_fences(markdown: str, source: str = "README.md") -> list[Block]:
    """Every fenced block, whatever its language tag ("" when it has none), in page order."""
    blocks, heading, lines = [], "", markdown.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#") and not line.startswith("#!"):
            heading = line.lstrip("#").strip()
        match = FENCE.match(line)
        if not match:
            i += 1
            continue
        indent, lang, body, start = len(match["indent"]), match["lang"].lower(), [], i + 1
        i += 1
        while i < len(lines) and not FENCE.match(lines[i]):
            body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i])
            i += 1
        i += 1  # closing fence
        blocks.append(Block(LANGS.get(lang, lang), "\n".join(body) + "\n", start, heading, source))
    return blocks


def fenced_blocks(markdown: str, source: str = "README.md") -> list[Block]:
    """Every fenced block with a language tag we run (python, bash/sh, js), in page order."""
    return [b for b in all_fences(markdown, source) if b.lang in LANGS.values()]


def shell_commands(block: Block) -> list[Command]:
    """The block's commands: backslash continuations joined, ``#`` comments removed, blank lines skipped."""
    commands, pending, first = [], "", 0
    for number, raw in enumerate(block.text.splitlines(), block.line + 1):
        if not pending:
            first = number
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        text = (pending + raw).strip()
        pending = ""
        argv = tuple(shlex.split(text, comments=True)) if text else ()
        env = []
        while argv and ASSIGNMENT.match(argv[0]):
            name, _, value = argv[0].partition("=")
            env.append((name, value))
            argv = argv[1:]
        if argv or env:
            commands.append(Command(argv, first, text, tuple(env), block.source))
    return commands


def is_cli(command: Command) -> bool:
    return any(command.argv[: len(p)] == p for p in CLI_PROGRAMS)


def cli_commands(block: Block) -> list[Command]:
    """The ``python index_build.py ...`` and ``python -m rag.evaluate ...`` commands of a shell block."""
    return [c for c in shell_commands(block) if is_cli(c)]


def skip_reason(command: Command) -> str | None:
    """The reason of a ``# readme-test: skip (reason)`` marker ("" when it gives none), or None without a marker."""
    if SKIP_MARK not in command.text:
        return None
    return command.text.split(SKIP_MARK, 1)[1].strip().removeprefix("(").removesuffix(")").strip()


def uses_curl(block: Block) -> bool:
    """A shell block that calls curl (run whole, as a script, since its lines share variables)."""
    return block.lang == "bash" and any(re.search(r"(^|[\s$(])curl\s", line) for line in block.text.splitlines())


def shell_line_account(blocks: list[Block], allowed: dict[str, str] = NOT_RUN) -> list[ShellLine]:
    """Every command of every shell block, with what the tests do with it and why."""
    account = []
    for block in blocks:
        if block.lang != "bash":
            continue
        curl = uses_curl(block)
        for command in shell_commands(block):
            reason = skip_reason(command)
            if reason is not None:
                status, why = ("skipped", reason) if reason else ("unexplained", "skip marker without a reason")
            elif curl:
                status, why = "run", "the block runs as one script against the test apps"
            elif is_cli(command):
                status, why = "run", "run in page order through the real entry point"
            elif command.key in allowed:
                status, why = "allowed", allowed[command.key]
            else:
                status, why = "unexplained", (f"not run: give it '{SKIP_MARK} (reason)' or an entry in "
                                              "NOT_RUN (tests/readme_blocks.py)")
            account.append(ShellLine(command, status, why))
    return account


def doc_pages(root: Path = ROOT) -> list[Path]:
    """README.md and every docs/*.md page whose blocks the README tests run, in reading order."""
    pages = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    named = [p for p in pages if p.relative_to(root).as_posix() not in TESTED_ELSEWHERE]
    rank = {name: i for i, name in enumerate(READING_ORDER)}
    return sorted(named, key=lambda p: (rank.get(p.relative_to(root).as_posix(), len(rank)), p.name))


def read_blocks(page: Path, root: Path = ROOT) -> list[Block]:
    """The runnable blocks of one page, each knowing its page (relative to ``root``)."""
    return fenced_blocks(page.read_text(encoding="utf-8"), page.relative_to(root).as_posix())


def read_all_blocks(root: Path = ROOT) -> list[Block]:
    """The runnable blocks of README.md and docs/, in reading order."""
    return [block for page in doc_pages(root) for block in read_blocks(page, root)]


def summary_lines(root: Path = ROOT) -> list[str]:
    """What the terminal summary prints: every shell line not run (with its reason), pages tested elsewhere, totals."""
    account = shell_line_account(read_all_blocks(root))
    lines = [line.describe() for line in account if line.status != "run"]
    lines += [f"{page}: every block tested by {test}" for page, test in TESTED_ELSEWHERE.items() if (root / page).exists()]
    counts = {status: sum(line.status == status for line in account) for status in ("run", "skipped", "allowed", "unexplained")}
    lines.append(", ".join(f"{n} {status}" for status, n in counts.items()) + " (shell lines of README.md and docs/)")
    return lines
