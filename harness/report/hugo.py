"""A report as a Hugo leaf bundle: ``DIR/index.md`` and the figures it shows under ``DIR/plots/``.

::

    DIR/index.md            report.md as is: YAML front matter (title, date, description,
                            series, tags), then Markdown whose images are plots/NAME.png
    DIR/plots/NAME.png      every figure index.md shows, and nothing else

Copied into a site's ``content/`` (``content/posts/DIR``), the folder is one page
whose relative image links resolve inside it. The front matter's ``series`` is a
taxonomy Hugo knows only when the site declares it (:data:`TAXONOMIES_LINE`); declaring
any taxonomy replaces Hugo's defaults (``categories``, ``tags``), so ``tags`` is declared
again beside it.

DIR must be absent, empty, or a bundle written here before (:func:`check_target`),
which is replaced whole. The new bundle is built in a hidden folder beside DIR and
renamed into place (the previous one renamed aside first, and back if that fails), so
a failure leaves DIR as it was, or absent: never half a bundle.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from harness.errors import IpcbenchError

INDEX = "index.md"
PLOTS_DIR = "plots"
TAG = "ipcbench"  # every report's first tag: how a previous bundle is recognised
TAXONOMIES_LINE = "taxonomies: {tag: tags, series: series}"


def read_front_matter(text: str) -> dict[str, object] | None:
    """The front matter as :func:`.markdown.front_matter_lines` writes it (values in JSON syntax); None if not."""
    lines = text.splitlines()
    if not lines or lines[0] != "---" or "---" not in lines[1:]:
        return None
    end = lines.index("---", 1)
    meta: dict[str, object] = {}
    for line in lines[1:end]:
        key, sep, value = line.partition(": ")
        if not sep:
            return None
        try:
            meta[key] = json.loads(value)
        except ValueError:
            return None
    return meta


def check_target(bundle_dir: Path) -> None:
    """Raise unless ``bundle_dir`` may be (re)written: absent, empty, or a bundle :func:`write_bundle` wrote.

    A previous bundle holds nothing but ``index.md`` (front matter tagged "ipcbench")
    and ``plots/*.png``; anything else there (a page of one's own, an extra file) is kept
    safe by refusing the folder.
    """
    bundle_dir = Path(bundle_dir)
    where = f"Hugo bundle folder {bundle_dir}"
    if bundle_dir.is_symlink():
        raise IpcbenchError(f"{where} is a symbolic link; give the real folder")
    if not bundle_dir.exists():
        return
    if not bundle_dir.is_dir():
        raise IpcbenchError(f"{where} is a file, not a folder")
    entries = sorted(p.name for p in bundle_dir.iterdir())
    if not entries:
        return
    refuse = f"{where} is not empty and not a bundle written by `ipcbench report --hugo`"
    unexpected = [name for name in entries if name not in (INDEX, PLOTS_DIR)]
    plots = bundle_dir / PLOTS_DIR
    if plots.exists():
        if plots.is_symlink() or not plots.is_dir():
            unexpected.append(PLOTS_DIR)
        else:
            unexpected += [
                f"{PLOTS_DIR}/{p.name}"
                for p in sorted(plots.iterdir())
                if p.suffix != ".png" or p.is_symlink() or not p.is_file()
            ]
    if unexpected:
        shown = ", ".join(unexpected[:5]) + (f" and {len(unexpected) - 5} more" if len(unexpected) > 5 else "")
        raise IpcbenchError(f"{refuse} (it holds {shown}); give a new or empty folder")
    index = bundle_dir / INDEX
    try:
        meta = read_front_matter(index.read_text(encoding="utf-8")) if index.is_file() else None
    except (OSError, UnicodeDecodeError) as exc:
        raise IpcbenchError(f"{refuse}: cannot read its {INDEX}: {exc}") from exc
    tags = meta.get("tags") if meta else None
    if not (isinstance(tags, list) and TAG in tags):
        raise IpcbenchError(f"{refuse} ({INDEX} missing, or not an ipcbench report); give a new or empty folder")


def write_bundle(markdown: str, images: dict[str, bytes], bundle_dir: Path) -> Path:
    """Write ``markdown`` as ``bundle_dir/index.md`` and ``images`` (``plots/NAME.png`` -> PNG) beside it.

    Built in a hidden folder beside ``bundle_dir``, then renamed into place; returns the
    path of index.md.
    """
    bundle_dir = Path(bundle_dir)
    check_target(bundle_dir)
    for relative in images:
        parts = Path(relative).parts
        if len(parts) != 2 or parts[0] != PLOTS_DIR or not parts[1].endswith(".png"):
            raise IpcbenchError(f"a bundle image must be {PLOTS_DIR}/NAME.png, not {relative!r}")
    parent = bundle_dir.parent
    temporary: Path | None = None
    previous: Path | None = None
    done = False
    try:
        parent.mkdir(parents=True, exist_ok=True)
        temporary = Path(tempfile.mkdtemp(dir=parent, prefix=f".{bundle_dir.name}.", suffix=".tmp"))
        os.chmod(temporary, 0o755)  # mkdtemp makes 0700; a bundle is for a web server to read
        (temporary / PLOTS_DIR).mkdir()
        for relative, data in images.items():
            (temporary / relative).write_bytes(data)
        (temporary / INDEX).write_text(markdown, encoding="utf-8")
        if bundle_dir.exists():  # empty, or a previous bundle (check_target): set aside until the new one is in
            previous = Path(tempfile.mkdtemp(dir=parent, prefix=f".{bundle_dir.name}.", suffix=".old"))
            os.rename(bundle_dir, previous / bundle_dir.name)
        try:
            os.rename(temporary, bundle_dir)
        except OSError:
            if previous is not None:
                os.rename(previous / bundle_dir.name, bundle_dir)
            raise
        done = True
    except OSError as exc:
        kept = previous / bundle_dir.name if previous is not None else None
        aside = f"; the previous bundle is at {kept}" if kept is not None and kept.exists() else ""
        raise IpcbenchError(f"cannot write the Hugo bundle {bundle_dir}: {exc}{aside}") from exc
    finally:
        if temporary is not None and not done:
            shutil.rmtree(temporary, ignore_errors=True)
        if previous is not None and (done or not (previous / bundle_dir.name).exists()):
            shutil.rmtree(previous, ignore_errors=True)
    return bundle_dir / INDEX
