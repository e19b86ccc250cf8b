"""The README extraction itself: indented fences, continuations, comments and VAR=value prefixes are read as a shell would."""

from __future__ import annotations

from readme_blocks import cli_commands, fenced_blocks, uses_curl

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
