"""Reports from stored results: RUN/report.md (+ report.html) and RUN/plots/*.png.

::

    samples.jsonl, env.json,      harness.results (load, benchjson, summary)
    summary.csv?, faults.jsonl?  ------------------------>  RunData (pandas; summary recomputed)
    or pytest-benchmark JSON                                    |
                                   plots.py (Figures) <---------+---------> document.py (blocks)
                                        |                                        |
                                   PNG bytes ----------> markdown.py / html.py (lines)
                                        \\_______________________|
                                                                 v
                                          write_report: temp files, then rename

Everything is rendered in memory first (figures to PNG bytes, the document to
lines); only then is anything written, each file to a temporary name in the same
folder and renamed over the old one. A failure while loading or drawing therefore
leaves the previous report untouched, and a reader never sees half a report.md.

Public API: :func:`build_report` (also called at the end of ``ipcbench run``) and
:func:`build_benchmark_report`; ``ipcbench report`` is the command around them. With
``hugo=DIR`` either also writes the report as a Hugo leaf bundle (:mod:`.hugo`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.errors import IpcbenchError
from harness.results import RunData, load_benchmark_json, load_run, write_atomic

from .hugo import TAXONOMIES_LINE
from .hugo import check_target as check_hugo_target
from .hugo import write_bundle as write_hugo_bundle

FORMATS = ("md", "html")
PLOTS_DIR = "plots"


@dataclass(frozen=True, slots=True)
class RenderedReport:
    """A report in memory: figure PNGs by relative path, and each format's text."""

    images: dict[str, bytes]
    markdown: str
    html: str | None


def build_report(run_dir: Path, *, fmt: str = "md", hugo: Path | None = None) -> Path:
    """Write ``run_dir/report.md`` and ``run_dir/plots/*.png`` (and ``report.html`` for ``fmt="html"``).

    ``hugo``: also write the report as a Hugo leaf bundle into that folder (:mod:`.hugo`).
    Returns the path of the report in the requested format.
    """
    run_dir = Path(run_dir)
    if hugo is not None:
        check_hugo_target(Path(hugo))  # before anything is loaded or written
    return write_report(load_run(run_dir), run_dir, fmt=fmt, hugo=hugo)


def build_benchmark_report(
    json_path: Path, *, out_dir: Path | None = None, fmt: str = "md", hugo: Path | None = None
) -> Path:
    """A report from pytest-benchmark ``--benchmark-json`` output, in ``out_dir``.

    ``out_dir`` defaults to ``<json stem>-report/`` beside the JSON file; ``hugo`` as in
    :func:`build_report`.
    """
    json_path = Path(json_path)
    if hugo is not None:
        check_hugo_target(Path(hugo))
    run = load_benchmark_json(json_path)
    out_dir = Path(out_dir) if out_dir is not None else json_path.with_name(f"{json_path.stem}-report")
    return write_report(run, out_dir, fmt=fmt, hugo=hugo)


def render_report(run: RunData, *, fmt: str = "md") -> RenderedReport:
    """Draw every figure and spell the document, writing nothing."""
    if fmt not in FORMATS:
        raise IpcbenchError(f"report format {fmt!r} is not one of {', '.join(FORMATS)}")
    from . import plots, style
    from .document import build_document
    from .html import render_html
    from .markdown import render_markdown

    style.apply()
    specs = plots.available(run)
    images = {}
    for spec in specs:
        images[f"{PLOTS_DIR}/{spec.name}.png"] = style.png_bytes(spec.draw(run))
    document = build_document(run, specs)
    markdown = "\n".join(render_markdown(document))
    html = "\n".join(render_html(document, images)) if fmt == "html" else None
    return RenderedReport(images, markdown, html)


def write_report(run: RunData, out_dir: Path, *, fmt: str = "md", hugo: Path | None = None) -> Path:
    """Render ``run`` then write it into ``out_dir`` atomically, file by file; returns the main report path.

    ``hugo``: then write the same report as a Hugo leaf bundle into that folder, whole or
    not at all (:func:`.hugo.write_bundle`); a folder it may not replace is refused
    before anything is written.
    """
    from .plots import FAULTS_FIGURE, FIGURES

    if hugo is not None:
        check_hugo_target(Path(hugo))
    rendered = render_report(run, fmt=fmt)
    out_dir = Path(out_dir)
    try:
        (out_dir / PLOTS_DIR).mkdir(parents=True, exist_ok=True)
        for relative, data in rendered.images.items():
            write_atomic(out_dir / relative, data)
        # A figure this run no longer has (faults.jsonl removed) must not linger from an older report.
        for spec in (*FIGURES, FAULTS_FIGURE):
            relative = f"{PLOTS_DIR}/{spec.name}.png"
            if relative not in rendered.images:
                (out_dir / relative).unlink(missing_ok=True)
        write_atomic(out_dir / "report.md", rendered.markdown.encode())
        if rendered.html is not None:
            write_atomic(out_dir / "report.html", rendered.html.encode())
    except OSError as exc:
        raise IpcbenchError(f"cannot write the report into {out_dir}: {exc}") from exc
    if hugo is not None:
        write_hugo_bundle(rendered.markdown, rendered.images, Path(hugo))
    return out_dir / ("report.html" if fmt == "html" else "report.md")


__all__ = [
    "FORMATS",
    "TAXONOMIES_LINE",
    "RenderedReport",
    "build_benchmark_report",
    "build_report",
    "render_report",
    "write_report",
]
