# make demo: the main job on the embedded default.  make test: the whole test suite.
# Both create .venv and install the project into it when needed, so a fresh clone is enough.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test bench gpu-wheels clean

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mssr train

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

bench: $(STAMP)
	$(VENV)/bin/python bench/cli_startup.py

# Wheels a GPU machine (no network; torch and transformers already there) lacks, for bench/gpu_check.py:
# the pins in its GPU_WHEELS, for that machine's Python, into gpu_wheels/ (git-ignored; carry it along).
gpu-wheels: $(STAMP)
	$(VENV)/bin/python bench/gpu_check.py --download-wheels gpu_wheels

clean:
	rm -rf $(VENV) runs wandb .pytest_cache
