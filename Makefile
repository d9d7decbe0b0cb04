# vecap: `make demo` and `make test` are the whole set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed-stamp
# vLLM's CPU build lives in its own venv (it pins its own transformers): scripts/setup_vllm_venv.sh
VLLM_VENV := .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.vecap-vllm-stamp
# test files with vllm-marked tests; only these are collected in .venv-vllm
VLLM_TESTS = $(shell grep -rlE --include='test_*.py' 'mark\.vllm' tests)

.PHONY: venv demo test test-fast bench lint format clean chromium vllm-venv test-vllm \
	portable-runners flink-job-server prism minio test-minio

# torch first, pinned (PyPI's build; on a machine without CUDA it runs on the CPU), so the rest
# resolves against it.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev,train]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/vecap demo

test: $(STAMP) chromium $(VLLM_STAMP) portable-runners
	$(PY) -m pytest -q -m "not vllm"
	$(VLLM_PY) -m pytest -q -m vllm $(VLLM_TESTS)

# The report's browser test opens the page in Debian's chromium; installed once, then a no-op.
# Without root or apt it says so and goes on: that test then fails with the same hint.
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	echo "warning: could not install chromium (apt-get install -y chromium needs root); the browser test will fail"

# The portable-runner test (tests/pipeline/test_portable.py) needs a job server: Beam's Flink
# job-server jar (Maven, cached in ~/.cache/vecap/flink; where Maven Central does not serve it the
# script records why and the Flink case skips with that reason) and Prism (Go module proxy, cached
# in ~/.cache/vecap/prism). Both are no-ops once cached.
portable-runners: flink-job-server prism

flink-job-server: $(STAMP)
	PYTHON=$(PY) bash scripts/fetch_flink_job_server.sh

prism: $(STAMP)
	PYTHON=$(PY) bash scripts/build_prism.sh

# ~2 min the first time (pip); rebuilt when the scripts or pyproject.toml change
$(VLLM_STAMP): scripts/setup_vllm_venv.sh scripts/vllm_requirements.py pyproject.toml
	rm -f $(VLLM_STAMP)
	PYTHON=$(PYTHON) bash scripts/setup_vllm_venv.sh $(VLLM_VENV)

vllm-venv: $(VLLM_STAMP)

test-vllm: $(VLLM_STAMP)
	$(VLLM_PY) -m pytest -q -m vllm $(VLLM_TESTS)

# The S3 tests run on moto's S3 server (the dev extra). MinIO, built from its Go module (needs Go;
# ~20 min on 2 cores, so not part of `make test`), runs them on a second, independent server:
# atomic conditional PUTs, and 412s that do not name the condition, unlike moto's.
MINIO := .cache/minio/bin/minio
MINIO_VERSION := v0.0.0-20260212201848-7aac2a2c5b7c
$(MINIO):
	GOBIN=$(CURDIR)/.cache/minio/bin go install github.com/minio/minio@$(MINIO_VERSION)

minio: $(MINIO)

test-minio: $(STAMP) $(MINIO)
	VECAP_S3_SERVER=minio $(PY) -m pytest -q tests/pipeline/test_shard_commits.py

# everything but slow tests, for the edit-test loop
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow and not vllm and not browser"

# each benchmark prints its figures and ends with one JSON line
bench: $(STAMP)
	set -e; for f in $(filter-out bench/sim_gpu_server.py,$(wildcard bench/*.py)); do echo "== $$f"; $(PY) $$f; done

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) $(VLLM_VENV) .pytest_cache build *.egg-info
