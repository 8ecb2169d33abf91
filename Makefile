# rldyn: `make demo` runs the demo study (experiments/two_phase.py:persist) on CPU from the shipped base; `make test` runs the test suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/demo

.PHONY: install test demo demo-pretrain bench clean

# What the demo needs (the core and matplotlib for phases.png); the test suite's extras go on top of it.
$(VENV)/.installed-core: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[report]'
	touch $@

$(VENV)/.installed: $(VENV)/.installed-core
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -q tests

demo: $(VENV)/.installed-core
	$(PY) -m rldyn.demo --workdir=$(WORKDIR)

# The same study with its base pretrained here instead of the shipped one (rldyn/data/demo_base).
demo-pretrain: $(VENV)/.installed-core
	$(PY) -m rldyn.demo --workdir=$(WORKDIR) --base=pretrain

bench: install
	for f in benchmarks/bench_*.py; do $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) *.egg-info .jax_cache
