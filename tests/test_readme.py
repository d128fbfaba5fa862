"""The README's code blocks, as a reader pastes them.

Python blocks run as scripts, unchanged, in a fresh interpreter whose working folder
has a small dataset at ``data/real`` (the README's path), once with every loader's
default start method set to ``spawn`` and once to ``forkserver``: both import the
script in every worker, which is where a pasted example breaks first.

Shell blocks would take minutes (``make bench``), so each of their commands is
checked for what pasting it needs: every ``make`` target is in the Makefile, every
``ipcbench`` command line parses with the real parser (options and subcommands
exist), every path it names exists. A command the check does not know fails the test,
so the README cannot grow a command nobody checks.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import write_dataset

from harness.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)

# Runs the block as the main script (so spawn/forkserver workers import it as they
# would a reader's script), after setting the LoaderConfig default start method.
RUNNER = textwrap.dedent(
    """\
    import runpy, sys
    from strategies.config import LoaderConfig
    LoaderConfig.__init__.__kwdefaults__["start_method"] = sys.argv[2]
    runpy.run_path(sys.argv[1], run_name="__main__")
    """
)


def blocks(language: str) -> list[str]:
    return [code for lang, code in FENCE.findall(README.read_text()) if lang == language]


PYTHON_BLOCKS = blocks("python")
SHELL_BLOCKS = blocks("sh")


def test_the_readme_has_the_blocks_a_reader_needs() -> None:
    # The two commands come first, and there is a training loop to paste.
    first = FENCE.search(README.read_text())
    assert first is not None and first.group(1) == "sh"
    assert [line.split()[:2] for line in first.group(2).splitlines()] == [["make", "bench"], ["make", "test"]]
    assert any("make_generator" in code and '__name__ == "__main__"' in code for code in PYTHON_BLOCKS)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Images big enough for the default tile (256): 4 tiles each, so an epoch is one batch of 32 or less.
    root = tmp_path_factory.mktemp("readme")
    write_dataset(root / "data" / "real", images=3, height=512, width=600, channels=1, classes=True)
    (root / "runner.py").write_text(RUNNER)
    return root


@pytest.mark.timeout(300)
@pytest.mark.parametrize("start_method", ["spawn", "forkserver"])
@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)))
def test_python_block_runs_as_pasted(workdir: Path, index: int, start_method: str) -> None:
    script = workdir / f"readme_block_{index}.py"
    script.write_text(PYTHON_BLOCKS[index])
    result = subprocess.run(
        [sys.executable, str(workdir / "runner.py"), str(script), start_method],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, f"block {index} failed under {start_method}:\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr, result.stderr[-3000:]


def commands(block: str) -> list[str]:
    """One string per command: continuation lines joined, comments and blank lines dropped."""
    joined = block.replace("\\\n", " ")
    out = []
    for line in joined.splitlines():
        line = line.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


def make_targets() -> set[str]:
    return set(re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), re.M))


def make_variables() -> set[str]:
    return set(re.findall(r"^([A-Z][A-Z_]*)\s*[?:]?=", (ROOT / "Makefile").read_text(), re.M))


def parses(argv: list[str]) -> None:
    parser, _ = build_parser()
    try:
        parser.parse_args(argv)
    except SystemExit as exc:  # argparse's way of refusing a command line
        raise AssertionError(f"`ipcbench {shlex.join(argv)}` does not parse") from exc


def check_command(command: str) -> None:
    words = shlex.split(command)
    program, args = words[0], words[1:]
    if program == "make":
        assignments = {a.split("=", 1)[0] for a in args if "=" in a}
        assert set(args) - {a for a in args if "=" in a} <= make_targets(), f"{command}: no such make target"
        assert assignments <= make_variables(), f"{command}: sets a variable the Makefile does not use"
    elif program == ".venv/bin/ipcbench":
        parses(args)
    elif program == "torchrun":
        # torchrun's own options, then the script and its arguments.
        script = next(i for i, w in enumerate(args) if w.endswith("ipcbench"))
        assert args[script] == ".venv/bin/ipcbench", command
        parses(args[script + 1 :])
    elif program in (".venv/bin/python", ".venv/bin/jupyter"):
        # The files it reads (an option's value, such as an output file, is not one).
        paths = [
            w.split("::")[0]
            for previous, w in zip(["", *args], args, strict=False)
            if "/" in w and not w.startswith("-") and not previous.startswith("--")
        ]
        if args[:1] == ["-m"]:
            assert importlib.util.find_spec(args[1]) is not None, f"{command}: no module {args[1]}"
        else:
            assert paths, f"{command}: names no file"
        for path in paths:
            assert (ROOT / path).exists(), f"{command}: {path} does not exist"
    else:
        raise AssertionError(f"the README runs {program!r}, which this test does not know how to check")


@pytest.mark.parametrize("index", range(len(SHELL_BLOCKS)))
def test_shell_block_commands_exist(index: int) -> None:
    found = commands(SHELL_BLOCKS[index])
    assert found, f"shell block {index} has no command"
    for command in found:
        check_command(command)
