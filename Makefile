# `make test` and `make demo` set up everything they need on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
DEMO   ?= demo

.PHONY: test lint demo up system-deps clean gpu-check

# Debian packages the browser tests (chromium) and the team-deployment tests (postgresql) use.
SYSTEM_BINS := chromium:chromium postgresql:/usr/lib/postgresql/*/bin/initdb

PIP_LOG := $(VENV)/pip-install.log
# pip's output goes to a log, shown only when an install fails.
PIP := $(PY) -m pip install --quiet --disable-pip-version-check

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "setting up $(VENV) (pip's output: $(PIP_LOG))"
	@: > $(PIP_LOG)
	@# torch first, pinned: pip takes these from the local wheel store where one exists.
	@{ $(PIP) --upgrade pip && $(PIP) "torch==2.14.1" "torchvision==0.29.1" && $(PIP) -e ".[test]"; } >>$(PIP_LOG) 2>&1 \
	  || { tail -n 40 $(PIP_LOG); echo "pip install failed; the whole log is $(PIP_LOG)"; exit 1; }
	@touch $@

system-deps:
	@missing=""; for pair in $(SYSTEM_BINS); do pkg=$${pair%%:*}; bin=$${pair#*:}; \
	  ls $$bin >/dev/null 2>&1 || command -v $$bin >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then echo "installing$$missing (apt-get)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; fi

# Style cannot drift: the formatter and the linter run before the tests.
LINTED := mlcore worker webui tests infra scripts

lint: $(STAMP)
	$(VENV)/bin/ruff format --check --quiet $(LINTED)
	$(VENV)/bin/ruff check --quiet $(LINTED)

test: $(STAMP) system-deps lint
	$(PY) -m pytest

up: $(STAMP)
	$(VENV)/bin/dataslayer up

demo: $(STAMP)
	$(VENV)/bin/dataslayer demo "$(DEMO)"

# The one prepared check for a GPU machine (docs/GPU.md); plain python3, no venv: a bare GPU box has none.
GPU_CHECK_ARGS ?= --wheels .whl --json gpu-check.json
gpu-check:
	$(PYTHON) scripts/gpu_check.py $(GPU_CHECK_ARGS)

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache mlflow.db mlartifacts
