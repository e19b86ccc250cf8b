"""The Describe tab's readable account of a description: which neighbours were given as context, and (GIT) which
candidate won and why, in words, from the /describe result (the exact prompt stays one click away)."""

from __future__ import annotations

from typing import Any

from .components import markdown_text
from .errors import scrub_paths

GIT_QUESTION = "Questions need the Qwen2-VL captioner; GIT writes a caption."
SHOWN_CANDIDATES = 6


def captioner_kind(label: str | None) -> str:
    """"git" or "qwen2-vl" from a captioner label such as "git (microsoft/git-base-coco)"."""
    return (label or "").split(" ", 1)[0].lower()


def _quote(text: Any) -> str:
    return f"“{markdown_text(text)}”"


def neighbour_lines(result: dict[str, Any]) -> list[str]:
    """One line per neighbour given as context, numbered as in the gallery: row, likeness, label, the configured
    metadata columns and the captions the captioner read."""
    columns = result.get("context_columns") or []
    lines = []
    for number, hit in enumerate(result.get("context") or [], 1):
        parts = [f"{number}. **Row {hit['id']}** · {float(hit['score']):.2f} alike"]
        if hit.get("label"):
            parts.append(f"label {markdown_text(hit['label'])}")
        metadata = hit.get("metadata") or {}
        parts += [f"{markdown_text(c)}: {markdown_text(metadata[c])}" for c in columns if metadata.get(c) not in (None, "")]
        captions = [c for c in (hit.get("captions") or [])[:2] if c]
        parts.append("; ".join(_quote(c) for c in captions) or "no caption")
        lines.append(" · ".join(parts))
    return lines


def _origin(candidate: dict[str, Any]) -> str:
    if candidate.get("source") == "neighbour":
        row = candidate.get("row")
        return f"a caption of neighbour row {row}" if row is not None else "a neighbour's caption"
    return "written by GIT"


def _short_origin(candidate: dict[str, Any]) -> str:
    if candidate.get("source") != "neighbour":
        return "GIT"
    return f"row {candidate['row']}" if candidate.get("row") is not None else "neighbour"


def winner_lines(candidates: list[dict[str, Any]]) -> list[str]:
    """Which candidate won and why (GIT's reranking), then the runners-up as a small table."""
    best = candidates[0]
    bonus = float(best["score"]) - float(best["image_match"])
    lines = [
        f"**Chosen:** {_quote(best['text'])}, {_origin(best)}.",
        "",
        f"**Why:** GIT wrote a few captions of its own and pooled them with the neighbours' captions; each was scored "
        f"by how well it matches your image ({float(best['image_match']):.2f} for the chosen one) plus a bonus for "
        f"agreeing with what the neighbours' captions say ({bonus:.2f}), and the highest total "
        f"({float(best['score']):.2f}) won.",
    ]
    if len(candidates) > 1:
        lines += ["", "**Candidates, best first** (matches the image + agrees with the neighbours = total):", ""]
        for rank, c in enumerate(candidates[:SHOWN_CANDIDATES], 1):
            image, total = float(c["image_match"]), float(c["score"])
            sums = f"{image:.2f} + {total - image:.2f} = {total:.2f}"
            lines.append(f"{rank}. {_quote(c['text'])} ({_short_origin(c)}): "
                         + (f"**{sums}, chosen**" if rank == 1 else sums))
    return lines


def explanation(result: dict[str, Any] | None) -> str:
    """How the description was written, in words: the captioner, the neighbours used, the winner and why."""
    if not result:
        return ""
    kind = captioner_kind(result.get("captioner"))
    name = markdown_text(scrub_paths(result.get("captioner") or ""))
    lines = [f"**Written by:** {name}"]
    neighbours = neighbour_lines(result)
    if neighbours:
        lines += ["", f"**Neighbours given as context** ({len(neighbours)}, in the gallery's order):", "", *neighbours]
    else:
        lines += ["", "**No neighbours were given as context** (context 0): a plain caption of your image."]
    if kind == "git" and result.get("question"):
        lines += ["", f"⚠️ Your question was not answered. {GIT_QUESTION}"]
    candidates = result.get("candidates") or []
    if kind == "git" and candidates:
        lines += ["", *winner_lines(candidates)]
    elif kind == "git":
        lines += ["", "**Chosen:** GIT's own best caption (nothing to compare it with)."]
    elif neighbours:
        lines += ["", "**How:** Qwen2-VL read your image with the neighbours' captions beside it, and used them only "
                  "where they agree with what it sees."]
    return "\n".join(lines)
