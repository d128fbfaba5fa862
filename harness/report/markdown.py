"""Spell a report Document as Markdown with Hugo front matter: returns lines, writes nothing.

The output is a Hugo page: YAML front matter between ``---`` lines (title, date,
description, ``series: ["Live-Dead Assay"]``, tags), then GitHub-flavoured Markdown
whose images point at ``plots/NAME.png`` beside it. ``ipcbench report --hugo DIR``
writes the same text as ``DIR/index.md`` of a leaf bundle with the figures under
``DIR/plots/`` (:mod:`.hugo`), where the relative image links resolve unchanged; on
GitHub the file renders as is.

YAML scalars are written as JSON strings, which YAML reads as double-quoted strings,
so a colon or a quote in a title cannot break the front matter.
"""

from __future__ import annotations

import json
from typing import Any

from .document import Bullets, Document, Heading, Image, Paragraph, Table


def front_matter_lines(front_matter: dict[str, Any]) -> list[str]:
    lines = ["---"]
    for key, value in front_matter.items():
        if isinstance(value, list | tuple):
            lines.append(f"{key}: [{', '.join(json.dumps(str(v)) for v in value)}]")
        elif isinstance(value, int) and not isinstance(value, bool):  # a number Hugo sorts by (weight)
            lines.append(f"{key}: {value}")
        else:
            lines.append(f"{key}: {json.dumps(str(value))}")
    lines.append("---")
    return lines


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table_lines(table: Table) -> list[str]:
    lines = ["| " + " | ".join(_cell(h) for h in table.header) + " |"]
    lines.append("|" + "|".join("---:" if numeric else ":---" for numeric in table.numeric) + "|")
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in table.rows]
    return lines


def render_markdown(document: Document) -> list[str]:
    """The report as Markdown lines (no trailing newlines)."""
    lines = front_matter_lines(document.front_matter)
    for block in document.blocks:
        lines.append("")
        match block:
            case Heading(level=level, text=text):
                lines.append(f"{'#' * level} {text}")
            case Paragraph(text=text):
                lines.append(text)
            case Bullets(items=items):
                lines += [f"- {item}" for item in items]
            case Table():
                lines += table_lines(block)
            case Image(path=path, alt=alt, caption=caption):
                lines += [f"![{alt}]({path})", "", caption]
    lines.append("")
    return lines
