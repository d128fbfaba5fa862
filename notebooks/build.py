"""Write the blog notebooks (notebooks/*.ipynb) from their sources (notebooks/src/*.py).

Each source is a plain Python file in jupytext's "percent" format, linted and formatted with the rest of
the project; ``notebooks/src/NAME.py`` becomes ``notebooks/NAME.ipynb``, committed without outputs and
executed by ``tests/test_notebooks.py``::

    .venv/bin/python notebooks/build.py           # rewrite every notebook
    .venv/bin/python notebooks/build.py --check   # exit 1 if a committed notebook differs from its source

The format is read by the small parser below, not by jupytext: it takes the subset of the format that the
sources use, and its output depends on nothing but nbformat, so building twice, or with any jupytext
installed or none, gives identical bytes. The subset:

- ``# %%`` starts a code cell and ``# %% [markdown]`` a markdown cell; only blank lines may precede the first;
- a markdown cell is comment lines: ``# text`` is the line ``text``, a bare ``#`` an empty line;
- blank lines at the start and the end of a cell are dropped (ruff format puts one or two between cells).

Anything else (a cell title, ``[raw]``, cell metadata, a markdown line that is not a comment) is an error
naming the file and line. Cell ids are fixed (``cell-00``, ``cell-01``, ...) and the notebook metadata is
constant, so a notebook changes only when its source does.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
SOURCES = HERE / "src"
MARKER = re.compile(r"# %%(?P<rest>.*)")
METADATA = {
    "kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"},
    "language_info": {"name": "python"},
}


def sources() -> list[Path]:
    """The notebook sources, in order: ``notebooks/src/NN_*.py``."""
    return sorted(SOURCES.glob("[0-9][0-9]_*.py"))


def parse(text: str, name: str = "<source>") -> list[tuple[str, str]]:
    """The cells of a percent-format source as ``(kind, source)`` pairs; kind is "markdown" or "code"."""
    cells: list[tuple[str, list[str]]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        marker = MARKER.fullmatch(line)
        if marker:
            rest = marker["rest"]
            if rest not in ("", " [markdown]"):
                raise ValueError(f"{name}:{number}: a cell starts with '# %%' or '# %% [markdown]', not {line!r}")
            cells.append(("markdown" if rest else "code", []))
        elif not cells:
            if line.strip():
                raise ValueError(f"{name}:{number}: text before the first '# %%' cell marker")
        elif cells[-1][0] == "markdown" and line.strip():
            if not line.startswith("#"):
                raise ValueError(f"{name}:{number}: a markdown cell holds only comment lines, not {line!r}")
            cells[-1][1].append(line[2:] if line.startswith("# ") else line[1:])
        else:
            cells[-1][1].append(line)
    if not cells:
        raise ValueError(f"{name}: no cells (a cell starts with '# %%')")
    return [(kind, "\n".join(lines).strip("\n")) for kind, lines in cells]


def build(cells: list[tuple[str, str]]) -> nbformat.NotebookNode:
    """A notebook (v4, no outputs, ids ``cell-NN``) from ``(kind, source)`` pairs."""
    notebook = new_notebook(metadata=METADATA)
    for number, (kind, source) in enumerate(cells):
        cell = new_markdown_cell(source) if kind == "markdown" else new_code_cell(source)
        cell.id = f"cell-{number:02d}"
        notebook.cells.append(cell)
    nbformat.validate(notebook)
    return notebook


def rendered() -> dict[Path, str]:
    """Every notebook's path and its text, as built from its source."""
    return {
        HERE / f"{source.stem}.ipynb": nbformat.writes(build(parse(source.read_text(), source.name))) + "\n"
        for source in sources()
    }


def main(argv: list[str]) -> int:
    if any(arg != "--check" for arg in argv):
        print("usage: build.py [--check]", file=sys.stderr)
        return 2
    check = "--check" in argv
    notebooks = rendered()
    stale = []
    for path, text in notebooks.items():
        if check:
            if not path.is_file() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.write_text(text)
    orphans = [path.name for path in sorted(HERE.glob("[0-9][0-9]_*.ipynb")) if path not in notebooks]
    if stale:
        print(f"out of date (run notebooks/build.py): {', '.join(stale)}", file=sys.stderr)
    if orphans:
        print(f"no source in notebooks/src/ (delete them or add one): {', '.join(orphans)}", file=sys.stderr)
    return 1 if stale or orphans else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
