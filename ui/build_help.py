"""The Build tab's words: what to upload (a folder layout, the captions file's columns), what is kept, where and for
how long, and the status line after a build (which files were skipped, and why). Text only; build_tab lays it out.

The column names come from the readers themselves (rag.ingest.sources, rag.ingest.caption_files), and the times
from the Space's settings, so the page says what the code does.
"""

from __future__ import annotations

from rag.config import Settings
from rag.ingest.caption_files import CAPTION_KEYS
from rag.ingest.sources import PATH_KEYS

SKIPPED_SHOWN = 3  # skipped files named in the status line; the rest are in the JSON below it

LAYOUT = """photos.zip
├── captions.csv      (optional)
├── beach/IMG_01.jpg  (label "beach"
├── beach/IMG_02.jpg   if ticked)
└── city/IMG_07.png"""

CSV_EXAMPLE = """file,caption,label
beach/IMG_01.jpg,two dogs on sand,beach
beach/IMG_01.jpg,a dog and a ball,beach"""


def _names(keys: tuple[str, ...]) -> str:
    return ", ".join(f"`{key}`" for key in keys)


def what_to_upload(settings: Settings) -> str:
    """The example folder layout and the captions file's columns, as Markdown."""
    return (
        f"**What to upload.** A `.zip`, `.tar` or `.tar.gz` of up to {settings.build_max_images:,} images "
        f"(JPEG, PNG, WebP…) and {settings.build_max_mb} MB, in folders or not:\n\n"
        f"```text\n{LAYOUT}\n```\n\n"
        "**Captions (optional):** a `captions.csv` (or `captions.jsonl`, one JSON object a line) at the archive's "
        f"root, one row per caption:\n\n```text\n{CSV_EXAMPLE}\n```\n\n"
        f"- the image: a column named {_names(PATH_KEYS[:3])} (or {_names(PATH_KEYS[3:])}): its path in the archive, "
        "or just its file name;\n"
        f"- the caption: {_names(CAPTION_KEYS[:1])} (or {_names(CAPTION_KEYS[1:])}); repeat the image in "
        "another row to give it more captions;\n"
        "- `label` (optional) names its class; any other column is kept with the image and can be a Search filter."
    )


def what_is_kept(settings: Settings) -> str:
    """Exactly what a visitor's build stores, where and for how long (ui.uploads and rag.space.sessions do it)."""
    return (
        "**What is kept, where, for how long.** Your archive is unpacked on this Space's server; the archive and "
        "the unpacked images are deleted as soon as the build ends (finished, failed or cancelled), and an archive "
        f"that no build uses is deleted after {settings.upload_grace // 60} minutes. What stays is your collection: "
        "the images' vectors, their captions and labels, and small thumbnails, in a folder on this server that "
        "only this browser tab searches. It is deleted when you close the tab, or "
        f"{settings.session_ttl // 60} minutes after the build, whichever comes first (and when the Space restarts). "
        "Nothing is written to the Hub unless you publish it below."
    )


def _code(text: str) -> str:
    return "`" + str(text).replace("`", "'").replace("\n", " ")[:120] + "`"


def skipped_line(skipped: list[dict[str, str]]) -> str:
    """"2 skipped: `a.txt` (not an image), `b.jpg` (unreadable)", naming the first SKIPPED_SHOWN."""
    if not skipped:
        return "nothing skipped"
    named = ", ".join(f"{_code(item.get('source', '?'))} ({str(item.get('reason', 'skipped'))[:100]})"
                      for item in skipped[:SKIPPED_SHOWN])
    more = len(skipped) - SKIPPED_SHOWN
    rest = f" and {more} more (listed in the JSON below)" if more > 0 else ""
    return f"{len(skipped)} skipped: {named}{rest}"


def built_line(result: dict) -> str:
    """The status line after a successful build."""
    return (f"✅ **{result['rows']} images** indexed in {result['seconds']} s "
            f"({result['images_per_second']} images/s); {skipped_line(result.get('skipped') or [])}. "
            "Every tab now searches **your collection** (only in this browser tab).")
