# Two commands on a fresh machine: `make demo` (the whole flow on the embedded default) and `make test`.
# Each creates the virtual environment when it is missing.
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel of torch 2.13.0 is what these machines serve; on a GPU machine pass e.g. TORCH="torch==2.13.0 --index-url ...".
TORCH ?= torch==2.13.0
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS ?= 1

.PHONY: env demo test test-slow test-all bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[test]'
	touch $@

env: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/merginguriel quickstart --config quickstart

test: $(VENV)/.installed
	$(PY) -m pytest -q -m "not slow"

# the slow end-to-end checks (kills at several moments, a non-editable install, studies): CI runs them after `make test`
test-slow: $(VENV)/.installed
	$(PY) -m pytest -q -m slow

test-all: $(VENV)/.installed
	$(PY) -m pytest -q

clean:
	rm -rf checkpoints/embedded checkpoints/embedded-tiny lightning_logs
