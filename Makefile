# vecap: `make demo` and `make test` are the whole set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed-stamp

.PHONY: venv demo test test-fast bench lint format clean

# torch first, pinned, so pip takes the CPU wheel from this machine's disk instead of a CUDA
# build; never torchvision (its only build here breaks transformers' processor imports).
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev,train]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/vecap demo

test: $(STAMP)
	$(PY) -m pytest -q

# everything but slow tests, for the edit-test loop
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow and not vllm and not browser"

# each benchmark prints its figures and ends with one JSON line
bench: $(STAMP)
	set -e; for f in bench/*.py; do echo "== $$f"; $(PY) $$f; done

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
