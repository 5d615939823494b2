# `make test` and `make demo` set up everything they need on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
DEMO   ?= demo

.PHONY: test demo up system-deps clean

# Debian packages the browser tests (chromium) and the team-deployment tests (postgresql) use.
SYSTEM_BINS := chromium:chromium postgresql:/usr/lib/postgresql/*/bin/initdb

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned: pip takes these from the local wheel store where one exists.
	$(PY) -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

system-deps:
	@missing=""; for pair in $(SYSTEM_BINS); do pkg=$${pair%%:*}; bin=$${pair#*:}; \
	  ls $$bin >/dev/null 2>&1 || command -v $$bin >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then echo "installing$$missing (apt-get)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; fi

test: $(STAMP) system-deps
	$(PY) -m pytest

up: $(STAMP)
	$(VENV)/bin/dataslayer up

demo: $(STAMP)
	$(VENV)/bin/dataslayer demo "$(DEMO)"

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache mlflow.db mlartifacts
