# Two entry points (README): `make demo` (set up + the embedded-default search) and `make test`.
# Each does its own set-up on a fresh machine: a local virtual environment with torch pinned to
# the CPU build (2.13.0; an unpinned torch pulls a multi-GB CUDA build), then this project.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.fsray-installed

.PHONY: setup demo test bench clean gpu-wheels gpu-check

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

demo: setup
	$(VENV)/bin/fsray tune search_spaces/demo_cpu.yaml --out runs/demo_cpu

# Two workers, a test file each at a time (--dist loadfile keeps a file's module fixtures, such as
# its S3 server or Ray cluster, in one process): much of the suite waits on Ray clusters and
# subprocesses, so two at a time on 2 cores takes ~7.5 min instead of ~11; a third adds nothing.
test: setup
	$(VENV)/bin/pytest -q -n 2 --dist loadfile

bench: setup
	for f in bench/*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

# bench/gpu_check.sh on a GPU machine without network: the wheels it may lack, for the usual Pythons
# (~20 MiB; the device tool carries .gpu_wheels with the tree). fla-core and the test tools are pure Python.
gpu-wheels: setup
	$(PY) -m pip download -q -d .gpu_wheels --only-binary=:all: pytest fla-core einops
	for v in 3.10 3.11 3.12 3.13; do $(PY) -m pip download -q -d .gpu_wheels --only-binary=:all: \
	    --python-version $$v --platform manylinux2014_x86_64 pydantic pyrwkv-tokenizer || exit 1; done

gpu-check:
	OUT=$${OUT:-runs/gpu_check} bash bench/gpu_check.sh

clean:
	rm -rf $(VENV) runs .pytest_cache
