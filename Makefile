# koe — `make demo` runs the pipeline on the built-in demo data; `make test` runs the tests.
# Everything lives in .venv/ at the project root, so make, JupyterLab, cron and your shell share it.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(CURDIR)/$(VENV)/bin
STAMP  := $(VENV)/.koe-setup
UV_VERSION := 0.13.8
export PATH := $(BIN):$(PATH)

.PHONY: setup demo test lab lock clean-outputs browser

setup: $(STAMP)

# The pinned, torch-free closure (requirements.lock is complete, hence --no-deps: bertopic would
# otherwise pull sentence-transformers and torch), the project itself, and a Jupyter kernel "koe"
# whose interpreter path is absolute (cron runs without the venv on PATH).
$(STAMP): requirements.lock pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q uv==$(UV_VERSION)
	$(VENV)/bin/uv pip install -q --python $(VENV)/bin/python --no-deps -r requirements.lock
	$(VENV)/bin/uv pip install -q --python $(VENV)/bin/python --no-deps -e .
	$(VENV)/bin/python -m ipykernel install --sys-prefix --name koe --display-name koe >/dev/null
	@touch $@

demo: setup
	koe demo-data
	dvc repro
	@echo
	@echo "report: $(CURDIR)/reports/report.html"

test: setup browser
	python -m pytest

# Headless Chromium for the report's browser tests (tests/test_browser.py); installed once, as root.
browser:
	@command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)

lab: setup
	jupyter lab --no-browser --ip 127.0.0.1 $$( [ "$$(id -u)" = 0 ] && echo --allow-root ) --notebook-dir=$(CURDIR)

# Re-pin after editing requirements.in (sentence-transformers/torch are excluded on purpose).
lock: setup
	uv pip compile -q --python-version 3.11 requirements.in --override overrides.txt -o requirements.lock
	python scripts/sync_environment.py
