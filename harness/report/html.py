"""Spell a report Document as one standalone HTML page: returns lines, writes nothing.

Standalone means self-contained: every figure is embedded as a base64 ``data:`` URI,
so ``report.html`` can be mailed or attached to a CI run on its own, with no
``plots/`` folder beside it (it costs ~4/3 of the PNG bytes). The inline marks the
Document allows (```code```, ``**bold**``, ``*emphasis*``) become tags after the
text is escaped, so no text from a results file can inject markup.
"""

from __future__ import annotations

import base64
import html
import re

from .document import Bullets, Document, Heading, Image, Paragraph, Table

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 860px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.5; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.85em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25em 0.6em; }
th { background: #f5f5f5; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1.5em 0; }
figure img { width: 100%; max-width: 800px; }
figcaption { font-size: 0.9em; color: #444; }
code { background: #f3f3f3; padding: 0 0.2em; }
"""

_CODE = re.compile(r"`([^`]+)`")
_ESCAPED = re.compile(r"\\([\\`*\[\]])")
_MARKS = (
    (re.compile(r"\*\*([^*]+)\*\*"), r"<strong>\1</strong>"),
    (re.compile(r"\*([^*]+)\*"), r"<em>\1</em>"),
)


def inline(text: str) -> str:
    """Escape ``text``, then turn its markdown marks into tags.

    Backslash-escaped characters (``document.escape``), then code spans, are set
    aside first, as Markdown does, so a ``*`` inside them never starts emphasis.
    """
    kept: list[str] = []

    def keep(value: str) -> str:
        kept.append(value)
        return f"\x00{len(kept) - 1}\x00"

    out = html.escape(text, quote=False)
    out = _ESCAPED.sub(lambda m: keep(m.group(1)), out)  # first: an escaped backtick opens no code span
    out = _CODE.sub(lambda m: keep(f"<code>{m.group(1)}</code>"), out)
    for pattern, replacement in _MARKS:
        out = pattern.sub(replacement, out)
    return re.sub("\x00(\\d+)\x00", lambda m: kept[int(m.group(1))], out)


def render_html(document: Document, images: dict[str, bytes]) -> list[str]:
    """The report as HTML lines; ``images`` maps each Image.path to its PNG bytes."""
    front = document.front_matter
    lines = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{html.escape(str(front.get('title', 'ipcbench report')))}</title>",
        f'<meta name="description" content="{html.escape(str(front.get("description", "")))}">',
        f"<style>{STYLE}</style>",
        "</head>",
        "<body>",
        f"<h1>{html.escape(str(front.get('title', 'ipcbench report')))}</h1>",
        f"<p><em>{html.escape(str(front.get('date', '')))}</em></p>",
    ]
    for block in document.blocks:
        match block:
            case Heading(level=level, text=text):
                lines.append(f"<h{level}>{inline(text)}</h{level}>")
            case Paragraph(text=text):
                lines.append(f"<p>{inline(text)}</p>")
            case Bullets(items=items):
                lines += ["<ul>", *(f"<li>{inline(item)}</li>" for item in items), "</ul>"]
            case Table(header=header, rows=rows, numeric=numeric):
                lines += _table(header, rows, numeric)
            case Image(path=path, alt=alt, caption=caption):
                data = base64.b64encode(images[path]).decode("ascii")
                lines += [
                    "<figure>",
                    f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">',
                    f"<figcaption>{inline(caption)}</figcaption>",
                    "</figure>",
                ]
    lines += ["</body>", "</html>", ""]
    return lines


def _table(header: tuple[str, ...], rows: tuple[tuple[str, ...], ...], numeric: tuple[bool, ...]) -> list[str]:
    def cell(tag: str, text: str, is_numeric: bool) -> str:
        klass = ' class="num"' if is_numeric else ""
        return f"<{tag}{klass}>{inline(text)}</{tag}>"

    lines = ["<table>", "<tr>" + "".join(cell("th", h, n) for h, n in zip(header, numeric, strict=True)) + "</tr>"]
    lines += ["<tr>" + "".join(cell("td", c, n) for c, n in zip(row, numeric, strict=True)) + "</tr>" for row in rows]
    lines.append("</table>")
    return lines
