# elastic-pool: every target bootstraps what it needs (virtualenv, packages, servers).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: install demo test test-fast lint bench chaos clean condor-root

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

test: $(STAMP)
	bash scripts/ensure-rabbitmq.sh
	$(BIN)/python -m condor.install --if-possible
	bash slurm/ensure-slurm.sh
	bash scripts/ensure-debian-packages.sh dashboard "chromium chromedriver" chromium chromium-driver
	$(BIN)/python -m pytest -q -p no:cacheprovider

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not slow"

# HTCondor's daemons in a Debian trixie chroot, built once per machine (about a minute)
condor-root: $(STAMP)
	$(BIN)/python -m condor.install

lint: $(STAMP)
	$(BIN)/ruff check pool sensors policies spark condor slurm tests bench examples
	$(BIN)/mypy

BENCHES := reaction drain overhead popkill tts faults chaos policies spark condor slurm scalein simulator fuzz api

bench: $(addprefix bench-,$(BENCHES))

# `make bench-NAME` runs bench/NAME.py, writes bench/results/NAME.json and rewrites BENCHMARKS.md
bench-%: $(STAMP)
	$(BIN)/python -m bench.$*
	$(BIN)/python -m bench.report

# the policy table, then the wait-target hindsight search on the same traces (bench/waittarget.py)
bench-policies: $(STAMP)
	$(BIN)/python -m bench.policies
	$(BIN)/python -m bench.waittarget --jobs 2
	$(BIN)/python -m bench.report

# the kill-busy scenarios five times each (seeds 1-5): a loss window is rare, one run proves little
bench-chaos: $(STAMP)
	$(BIN)/python -m bench.chaos --repeat-kills 5
	$(BIN)/python -m bench.report

chaos: bench-chaos

clean:
	rm -rf $(VENV) .state build *.egg-info
