"""Read the README's fenced code blocks and the CLI commands inside its shell blocks, for tests/test_readme.py."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w+-]*)\s*$")
LANGS = {"python": "python", "py": "python", "bash": "bash", "sh": "bash", "shell": "bash", "console": "bash",
         "js": "js", "javascript": "js", "mjs": "js"}
CLI_PROGRAMS = (("python", "index_build.py"), ("python", "-m", "rag.evaluate"))
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


@dataclass(frozen=True)
class Block:
    """One fenced block: its language, text (indent removed), first line number and the heading above it."""

    lang: str
    text: str
    line: int
    heading: str

    @property
    def name(self) -> str:
        return f"{self.lang}@L{self.line}"


@dataclass(frozen=True)
class Command:
    """One CLI command of a shell block, continuation lines joined, comments dropped, ``VAR=value`` prefixes apart."""

    argv: tuple[str, ...]
    line: int
    text: str
    env: tuple[tuple[str, str], ...] = ()

    @property
    def name(self) -> str:
        return f"L{self.line}:{' '.join(self.argv[:4])}"


def fenced_blocks(markdown: str) -> list[Block]:
    """Every fenced block with a language tag we know (python, bash/sh, js), in README order."""
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
        if lang in LANGS:
            blocks.append(Block(LANGS[lang], "\n".join(body) + "\n", start, heading))
    return blocks


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
        if argv:
            commands.append(Command(argv, first, text, tuple(env)))
    return commands


def cli_commands(block: Block) -> list[Command]:
    """The ``python index_build.py ...`` and ``python -m rag.evaluate ...`` commands of a shell block."""
    return [c for c in shell_commands(block) if any(c.argv[: len(p)] == p for p in CLI_PROGRAMS)]


def uses_curl(block: Block) -> bool:
    """A shell block that calls curl (run whole, as a script, since its lines share variables)."""
    return block.lang == "bash" and any(re.search(r"(^|[\s$(])curl\s", line) for line in block.text.splitlines())


def read_blocks(readme: Path) -> list[Block]:
    return fenced_blocks(readme.read_text(encoding="utf-8"))
