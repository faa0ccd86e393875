# make demo: the main job on the embedded default.  make test: the whole test suite.
# Both create .venv and install the project into it when needed, so a fresh clone is enough.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test test-cpu-kinds bench gpu-wheels clean

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mssr train

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

# The tests marked `trajectory` (where training goes: learning, collapse, rollback) again, as a machine with the CPU
# kernels one kind below this one's runs them (AVX-512 -> AVX2 -> default; tests/second_cpu_kind.py): a test that
# holds on one kernel set only fails here. CI runs it after `make test`.
test-cpu-kinds: $(STAMP)
	$(VENV)/bin/python tests/second_cpu_kind.py -q -m trajectory

bench: $(STAMP)
	$(VENV)/bin/python bench/cli_startup.py

# Wheels a GPU machine (no network; torch and transformers already there) lacks, for bench/gpu_check.py:
# the pins in its GPU_WHEELS, for that machine's Python, into gpu_wheels/ (git-ignored; carry it along).
gpu-wheels: $(STAMP)
	$(VENV)/bin/python bench/gpu_check.py --download-wheels gpu_wheels

clean:
	rm -rf $(VENV) runs wandb .pytest_cache
