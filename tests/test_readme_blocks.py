"""The README extraction itself: indented fences, continuations, comments and VAR=value prefixes are read as a shell would."""

from __future__ import annotations

from readme_blocks import all_fences, cli_commands, doc_pages, fenced_blocks, read_all_blocks, uses_curl

MARKDOWN = """# Title

## Build
1. Inside a list item:
   ```bash
   python index_build.py --images photos/ --out collections/photos \\
       --push-to-hub you/photos   # add --private for a private repo
   ./scripts/run_app.sh
   RAG_DEVICE=cpu python -m rag.evaluate --collection "my collection"
   ```

```python
print("hi")
```

```js
console.log(1);
```

```bash
EVENT=$(curl -s -X POST "$URL/gradio_api/call/info")
```

```
not a known language: not extracted
```
"""


def test_blocks_keep_language_heading_and_line():
    blocks = fenced_blocks(MARKDOWN)
    assert [(b.lang, b.heading, b.line) for b in blocks] == [
        ("bash", "Build", 5), ("python", "Build", 12), ("js", "Build", 16), ("bash", "Build", 20)]
    assert blocks[0].text.startswith("python index_build.py")  # the list item's indent is removed
    assert [uses_curl(b) for b in blocks] == [False, False, False, True]


def test_cli_commands_join_continuations_and_drop_comments_and_other_programs():
    commands = cli_commands(fenced_blocks(MARKDOWN)[0])
    assert [c.argv for c in commands] == [
        ("python", "index_build.py", "--images", "photos/", "--out", "collections/photos", "--push-to-hub", "you/photos"),
        ("python", "-m", "rag.evaluate", "--collection", "my collection"),
    ]
    assert [c.line for c in commands] == [6, 9]
    assert commands[0].env == () and commands[1].env == (("RAG_DEVICE", "cpu"),)


def test_untagged_and_data_fences_are_seen_but_not_run():
    fences = all_fences(MARKDOWN, "docs/x.md")
    assert [b.lang for b in fences] == ["bash", "python", "js", "bash", ""]
    assert all(b.source == "docs/x.md" for b in fences) and fences[1].name == "docs/x.md:python@L12"


def test_pages_are_read_in_reading_order_and_pages_tested_elsewhere_are_left_out(tmp_path):
    (tmp_path / "docs").mkdir()
    for name in ("README.md", "docs/zeta.md", "docs/api.md", "docs/building.md", "docs/library.md", "docs/alpha.md"):
        (tmp_path / name).write_text("```bash\npython index_build.py --verify x\n```\n")
    pages = [p.relative_to(tmp_path).as_posix() for p in doc_pages(tmp_path)]
    assert pages == ["README.md", "docs/building.md", "docs/api.md", "docs/alpha.md", "docs/zeta.md"]
    commands = [c for b in read_all_blocks(tmp_path) for c in cli_commands(b)]
    assert [c.source for c in commands] == pages and commands[0].key == "python index_build.py --verify x"
