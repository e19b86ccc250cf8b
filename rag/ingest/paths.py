"""Where a build may write: ``--out`` checks, the builder's own marked side folders, and the final swap.

The builder writes only into folders it made. A build goes to ``<out>.partial`` (marked with a
``.rag-build`` file naming its role); the finished folder then replaces ``<out>``:

* where the OS can swap two folders atomically (Linux ``renameat2(RENAME_EXCHANGE)``), ``<out>.partial``
  and ``<out>`` are exchanged in one step, so ``<out>`` always holds a complete collection, then the old
  one (now at ``<out>.partial``) is renamed to ``<out>.old`` and deleted;
* elsewhere ``<out>`` is renamed to ``<out>.old`` (marked) and ``<out>.partial`` to ``<out>``. A crash
  between the two renames leaves ``<out>`` missing but both complete folders on disk; the next build
  (or :func:`recover`) puts the finished new one, else the old one, back at ``<out>``.

Anything the builder did not make is refused, before anything is touched: ``--out`` holding other files,
``--out`` equal to, inside or above the source folder, and an unmarked ``<out>.partial`` / ``<out>.old``.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rag.collection.reader import (ADAPTER_FILE, CARD_FILE, DATA_DIR, FORMAT_VERSION, INDEX_FILE, MANIFEST, MAP_FILE,
                                   TEXT_EXPORT_FILE)
from rag.errors import UsageError

log = logging.getLogger(__name__)

MARKER = ".rag-build"
PARTIAL_SUFFIX = ".partial"
OLD_SUFFIX = ".old"
CORRUPT_SUFFIX = ".corrupt-"
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


class UnsafeOutput(UsageError):
    """``--out`` (or a side folder next to it) holds something the builder did not make: nothing was touched."""


def partial_dir(out: Path) -> Path:
    """The folder a build of ``out`` writes into."""
    return out.with_name(out.name + PARTIAL_SUFFIX)


def old_dir(out: Path) -> Path:
    """Where the replaced collection waits while the new one moves in."""
    return out.with_name(out.name + OLD_SUFFIX)


def mark(folder: Path, role: str) -> None:
    """Label ``folder`` as made by the builder (so later builds may replace or delete it)."""
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / MARKER, {"made_by": "index_build.py", "role": role})


def marker_role(folder: Path) -> str | None:
    """The role written by :func:`mark` ("partial", "old"), or None for a folder the builder did not make."""
    try:
        data = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("made_by") != "index_build.py":
        return None
    return str(data.get("role"))


def is_marked(folder: Path) -> bool:
    """Whether ``folder`` carries the builder's marker file."""
    return marker_role(folder) is not None


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temporary name and rename it over ``path``: readers see the old or the new file, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _is_collection_file(relative: str) -> bool:
    return relative in (MANIFEST, INDEX_FILE, CARD_FILE, MAP_FILE, ADAPTER_FILE, TEXT_EXPORT_FILE, MARKER, DATA_DIR) or (
        relative.startswith(f"{DATA_DIR}/metadata-") and relative.endswith(".parquet")
    )


def holds_collection(folder: Path) -> bool:
    """A folder with a manifest of this format and nothing but collection files in it."""
    try:
        version = json.loads((folder / MANIFEST).read_text(encoding="utf-8")).get("format_version")
    except (OSError, ValueError, AttributeError):
        return False
    if version != FORMAT_VERSION:
        return False
    return all(_is_collection_file(p.relative_to(folder).as_posix()) for p in folder.rglob("*"))


def _related(a: Path, b: Path) -> bool:
    return a == b or a in b.parents or b in a.parents


def check_output(out: Path, source_folder: Path | None, overwrite: bool) -> None:
    """Raise UnsafeOutput (one sentence) unless building into ``out`` can only touch the builder's own folders."""
    out = Path(out).expanduser().resolve()
    for side in (partial_dir(out), old_dir(out)):
        if side.exists() and not is_marked(side):
            raise UnsafeOutput(f"{side.name} next to --out was not made by index_build.py; move it away first.")
    if source_folder is not None:
        source = Path(source_folder).expanduser().resolve()
        for target in (out, partial_dir(out), old_dir(out)):
            if _related(target, source):
                raise UnsafeOutput(
                    f"--out {out.name} is the source folder, inside it or above it; choose a folder outside the images."
                )
    if not out.exists():
        return
    if not out.is_dir():
        raise UnsafeOutput(f"--out {out.name} is a file, not a folder; choose another --out.")
    if not any(out.iterdir()):
        return
    if not holds_collection(out):
        raise UnsafeOutput(
            f"--out {out.name} holds files that are not a collection; choose an empty or new folder."
        )
    if not overwrite:
        raise UnsafeOutput(f"--out {out.name} already holds a collection; pass --overwrite to replace it.")


def set_aside_corrupt(partial: Path, why: str) -> Path:
    """Rename an unreadable partial build (ours) out of the way so the build can start over."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    target = partial.with_name(partial.name.removesuffix(PARTIAL_SUFFIX) + CORRUPT_SUFFIX + stamp)
    os.replace(partial, target)
    log.warning("the unfinished build %s is unreadable (%s); set aside as %s, starting over", partial.name, why, target.name)
    return target


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two folders (Linux renameat2 RENAME_EXCHANGE); False where the OS cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return result == 0


def move_into_place(partial: Path, out: Path) -> None:
    """Put the finished ``partial`` at ``out``; a collection already there is replaced without a gap."""
    old = old_dir(out)
    if old.exists():
        shutil.rmtree(old)  # marked ours (check_output refused it otherwise): a leftover of an earlier swap
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(partial, out)
        return
    mark(out, "old")  # the replaced collection is ours to delete from here on
    if _exchange(partial, out):
        os.replace(partial, old)  # `partial` now holds the old collection
    else:
        os.replace(out, old)
        os.replace(partial, out)
    shutil.rmtree(old)


def recover(out: Path) -> None:
    """After a crash between the two renames of a swap: put the new, else the old, collection back at ``out``."""
    if out.exists():
        return
    partial, old = partial_dir(out), old_dir(out)
    for candidate in (partial, old):
        if candidate.is_dir() and is_marked(candidate) and (candidate / MANIFEST).is_file():
            os.replace(candidate, out)
            log.warning("restored %s from %s after an interrupted swap", out.name, candidate.name)
            return
