"""Export the blog notebooks as posts: execute each one and write it as a Hugo leaf bundle.

::

    make blog                                      # every post, into $(BLOG_OUT), default blog/
    .venv/bin/python notebooks/blog.py --out blog  # the same
    .venv/bin/python notebooks/blog.py --out blog 03_queues 08_verdict   # some posts

Each notebook ``notebooks/NN_NAME.ipynb`` is executed top to bottom in a fresh kernel of *this* interpreter
(never a kernelspec found on the machine, which may point at a Python without ipcbench), from ``notebooks/``,
against the committed results; then ``OUT/SLUG/`` is written:

- ``index.md``: YAML front matter (title from the notebook's first heading, description, date, the series
  and its order, tags), then the notebook as Markdown: prose as written, code in ``python`` fences, printed
  output in ``text`` fences, tables and computed sentences (``harness.notebook.table`` and ``say``) as
  Markdown, figures as images with their titles as ``alt`` text;
- ``plots/NN.png``: every figure the post shows, and nothing else.

A code cell whose first line is ``# blog: output only`` is shown by its output alone (plotting code that
would bury the point). A cell that raises stops the export with its traceback. Each bundle is written
whole or not at all (``harness.report.hugo.write_bundle``); a folder that is neither empty nor a bundle
written by ipcbench is refused.

To publish, copy the bundles into a Hugo site's ``content/posts/`` and declare the ``series`` taxonomy
(``harness.report.TAXONOMIES_LINE``).
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
OUTPUT_ONLY = "# blog: output only"
CELL_TIMEOUT_S = 120  # the slowest cell (a live demo with worker processes) takes a few seconds
TITLE = re.compile(r"#\s+(?:\d+\s*·\s*)?(?P<title>.+)")


@dataclass(frozen=True)
class Post:
    """What the front matter says about one notebook's post."""

    slug: str
    description: str
    tags: tuple[str, ...] = ()


# One entry per notebook, in series order (the notebook's number). The title is the notebook's first heading.
POSTS = {
    "01_generator_interface": Post(
        "image-generator-training-loop",
        "The DataGenerator a training loop drives, iterables and iterators, and the single-process baseline "
        "that every design must beat: how many batches a second a training step needs.",
        ("iterators",),
    ),
    "02_pipes": Post(
        "image-generator-pipes",
        "A request/response loop over one Pipe per worker: the raw-bytes path, what a second worker buys on "
        "two cores, and what makes the design fragile unless every wait is guarded.",
        ("pipes",),
    ),
    "03_queues": Post(
        "image-generator-queues",
        "multiprocessing.Queue with big arrays: the pickling copies, the feeder thread, and what they cost "
        "measured on their own and in the full workload.",
        ("queues",),
    ),
    "04_shared_memory": Post(
        "image-generator-shared-memory",
        "Per-worker slots of shared memory with the pipe handshake as an implicit lock; zero-copy batches; "
        "what memory really costs (PSS, USS, /dev/shm) and one batch on a timeline.",
        ("shared memory",),
    ),
    "05_shutting_down": Post(
        "image-generator-shutdown",
        "A shutdown protocol that survives dead workers, hung workers and early breaks: what breaks without it, "
        "the fault matrix and the soak test.",
        ("shutdown",),
    ),
    "06_comparison": Post(
        "image-generator-comparison",
        "Every strategy side by side on real 16-bit microscopy tiles: throughput, waits, memory and CPU, and "
        "which differences the measurements can tell apart.",
        ("benchmark",),
    ),
    "07_torch_dataloader": Post(
        "image-generator-torch-dataloader",
        "torch's DataLoader mapped onto the three designs: index queues, a result queue, shared-memory tensors "
        "and its own shutdown, measured beside them; pinned memory, and what was not measured.",
        ("pytorch",),
    ),
    "08_verdict": Post(
        "image-generator-verdict",
        "Which way to feed the training loop, by step time, per-image cost, cores and memory: the evidence, its "
        "limits, and what to run on your own machine.",
        ("verdict",),
    ),
}


class ThisPythonKernels(KernelSpecManager):
    """Knows one kernel: ipykernel in the interpreter running this code."""

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        return KernelSpec(
            argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            display_name=f"Python ({sys.executable})",
            language="python",
            resource_dir=str(HERE),
        )


def notebooks() -> list[Path]:
    """The blog's notebooks, in series order."""
    return sorted(HERE.glob("[0-9][0-9]_*.ipynb"))


def execute(path: Path, timeout: int = CELL_TIMEOUT_S) -> nbformat.NotebookNode:
    """``path`` executed top to bottom in a fresh kernel of this interpreter, from ``notebooks/``.

    Raises nbclient's ``CellExecutionError`` (the failing cell's source and traceback) if a cell raises.
    """
    notebook = nbformat.read(path, as_version=4)
    manager = KernelManager(kernel_name="ipcbench-this-python", kernel_spec_manager=ThisPythonKernels())
    client = NotebookClient(
        notebook, km=manager, timeout=timeout, startup_timeout=60, resources={"metadata": {"path": str(HERE)}}
    )
    client.execute()
    return notebook


def title_of(notebook: nbformat.NotebookNode, name: str) -> str:
    """The post's title: the notebook's first heading, without its number (``# 3 · Queues`` -> ``Queues``)."""
    first = notebook.cells[0]
    line = first.source.splitlines()[0] if first.cell_type == "markdown" and first.source else ""
    match = TITLE.fullmatch(line.strip())
    if not line.startswith("# ") or not match:
        raise ValueError(f"{name}: the first cell must be a markdown cell opening with '# N · Title', not {line!r}")
    return match["title"].strip()


def _fence(kind: str, text: str) -> str:
    text = text.rstrip("\n")
    ticks = "```"
    while ticks in text:
        ticks += "`"
    return f"{ticks}{kind}\n{text}\n{ticks}"


def _output_blocks(output: nbformat.NotebookNode, image_path) -> list[str]:
    """The Markdown for one cell output; ``image_path(png_bytes, alt)`` stores a figure and returns its link."""
    kind = output.get("output_type")
    if kind == "error":
        raise ValueError(f"a cell raised {output.get('ename')}: {output.get('evalue')}")
    if kind == "stream":
        return [_fence("text", output["text"])] if output.get("name") == "stdout" and output["text"].strip() else []
    data = output.get("data", {})
    if "image/png" in data:
        alt = output.get("metadata", {}).get("image/png", {}).get("alt", "figure")
        return [f"![{alt}]({image_path(base64.b64decode(data['image/png']), alt)})"]
    if "text/markdown" in data:
        return [data["text/markdown"].strip()]
    if "text/plain" in data:
        return [_fence("text", data["text/plain"])]
    return []


def to_markdown(notebook: nbformat.NotebookNode, name: str) -> tuple[str, dict[str, bytes]]:
    """An executed notebook as a post's body (without front matter) and its images (``plots/NN.png`` -> PNG)."""
    images: dict[str, bytes] = {}

    def image_path(png: bytes, alt: str) -> str:
        relative = f"plots/{len(images) + 1:02d}.png"
        images[relative] = png
        return relative

    blocks: list[str] = []
    for number, cell in enumerate(notebook.cells):
        source = cell.source.strip("\n")
        if cell.cell_type == "markdown":
            if number == 0:  # the title is the front matter's
                source = "\n".join(source.splitlines()[1:]).strip("\n")
            if source:
                blocks.append(source)
            continue
        if cell.cell_type != "code":
            continue
        if source and not source.startswith(OUTPUT_ONLY):
            blocks.append(_fence("python", source))
        for output in cell.get("outputs", []):
            try:
                blocks += _output_blocks(output, image_path)
            except ValueError as exc:
                raise ValueError(f"{name}, cell {number}: {exc}") from exc
    return "\n\n".join(blocks) + "\n", images


def front_matter(notebook: nbformat.NotebookNode, name: str, date: str) -> dict[str, object]:
    from harness.report.document import SERIES

    post = POSTS[name]
    return {
        "title": title_of(notebook, name),
        "date": date,
        "description": post.description,
        "series": [SERIES],
        "series_order": int(name[:2]),
        "weight": int(name[:2]),
        "slug": post.slug,
        "tags": ["ipcbench", "python", "multiprocessing", "microscopy", *post.tags],
    }


def export(notebook: nbformat.NotebookNode, name: str, out: Path, date: str) -> Path:
    """Write the executed ``notebook`` as the bundle ``out/SLUG``; returns its index.md."""
    from harness.report.hugo import write_bundle
    from harness.report.markdown import front_matter_lines

    body, images = to_markdown(notebook, name)
    text = "\n".join(front_matter_lines(front_matter(notebook, name, date))) + "\n\n" + body
    return write_bundle(text, images, out / POSTS[name].slug)


def today() -> str:
    """Today's date in ISO 8601, or ``$SOURCE_DATE_EPOCH``'s (reproducible builds)."""
    from datetime import UTC, datetime

    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    moment = datetime.fromtimestamp(int(epoch), UTC) if epoch else datetime.now(UTC)
    return moment.date().isoformat()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Execute the blog notebooks and write each as a Hugo leaf bundle.")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("BLOG_OUT", "blog")), help="output folder")
    parser.add_argument("names", nargs="*", help="notebooks to export (e.g. 03_queues); default every one")
    args = parser.parse_args(argv)
    known = {path.stem: path for path in notebooks()}
    missing = sorted(set(POSTS) ^ set(known))
    if missing:
        print(f"blog: notebooks and posts disagree on {', '.join(missing)} (notebooks/blog.py POSTS)", file=sys.stderr)
        return 2
    unknown = [name for name in args.names if name not in known]
    if unknown:
        print(f"blog: no notebook {', '.join(unknown)}; there are {', '.join(known)}", file=sys.stderr)
        return 2
    from nbclient.exceptions import CellExecutionError

    from harness.errors import IpcbenchError

    date = today()
    for name in args.names or list(known):
        print(f"blog: executing {name} ...", file=sys.stderr, flush=True)
        try:
            index = export(execute(known[name]), name, args.out, date)
        except (CellExecutionError, ValueError, IpcbenchError) as exc:
            print(f"blog: {name}: {exc}", file=sys.stderr)
            return 1
        print(f"blog: wrote {index}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
