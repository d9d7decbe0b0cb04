# vecap: `make demo` and `make test` are the whole set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed-stamp

.PHONY: venv demo test test-fast bench lint format clean chromium

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

test: $(STAMP) chromium
	$(PY) -m pytest -q

# The report's browser test opens the page in Debian's chromium; installed once, then a no-op.
# Without root or apt it says so and goes on: that test then fails with the same hint.
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	echo "warning: could not install chromium (apt-get install -y chromium needs root); the browser test will fail"

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
