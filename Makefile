PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: venv install lint test demo bench bench-deps clean

venv: $(PY)

$(PY):
	$(PYTHON) -m venv $(VENV)

install: $(STAMP)

# torch is pinned to the local CPU wheel; a bare "torch" would pull a multi-GB CUDA build.
# .[dev] = the library + the application extra (YAML configs, CLI, figures) + test and lint tools.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install torch==2.13.0
	$(PIP) install -e ".[dev]"
	touch $@

lint: install
	$(VENV)/bin/ruff check src tests benchmarks examples

# one pytest worker per core (pytest-xdist); tests/conftest.py sets torch to one thread in each worker
test: install
	$(PY) -m pytest -n auto --dist worksteal

demo: install
	$(VENV)/bin/probflux demo

# torchcfm is a benchmark peer only; --no-deps keeps pip from replacing the CPU torch with a CUDA build
# (its flow matchers need only torch, numpy, scipy and POT).
bench-deps: install
	$(PY) -c "import torchcfm" 2>/dev/null || $(PIP) install --no-deps torchcfm

bench: bench-deps
	$(PY) benchmarks/bench_core.py --threads 1 --repeats 3
	$(PY) benchmarks/bench_flux_tails.py --perturb 0.1 --out benchmarks/results/flux_tails_p0.1.json
	$(PY) benchmarks/bench_populations.py --seeds 3 --budget 20
	$(PY) benchmarks/bench_scale.py --parts scaling --repeats 3
	$(PY) benchmarks/bench_scale.py --parts gmm64 --seeds 3 --budget 60
	$(PY) benchmarks/bench_scale.py --parts cite50 --seeds 3 --budget 30
	$(PY) benchmarks/bench_events.py --seeds 3 --budget 30
	$(PY) benchmarks/bench_control.py --seeds 3 --figures

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
