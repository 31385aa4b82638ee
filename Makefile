# koe — `make demo` runs the pipeline on the built-in demo data; `make test` runs the tests.
# Everything lives in .venv/ at the project root, so make, JupyterLab, cron and your shell share it.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(CURDIR)/$(VENV)/bin
STAMP  := $(VENV)/.koe-setup
# `dvc plots show` page template with the Vega bundle inlined (.dvc/config › plots.html_template names it)
PLOTS_TEMPLATE := build/dvc-plots-template.html
UV_VERSION := 0.13.8
export PATH := $(BIN):$(PATH)

.PHONY: setup demo test test-fast lab lock clean-outputs browser lint

setup: $(STAMP) $(PLOTS_TEMPLATE)

# The pinned, torch-free closure (requirements.lock is complete, hence --no-deps: bertopic would
# otherwise pull sentence-transformers and torch), the project itself, and a Jupyter kernel "koe"
# whose interpreter path is absolute (cron runs without the venv on PATH). --compile-bytecode: uv writes no .pyc
# by default, so every stage's process and kernel would compile its imports from source (measured: most of a
# stage's start-up), and cron users or PYTHONDONTWRITEBYTECODE never get the cache written.
$(STAMP): requirements.lock pyproject.toml jupyter/overrides.json
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q uv==$(UV_VERSION)
	$(VENV)/bin/uv pip install -q --python $(VENV)/bin/python --no-deps --compile-bytecode -r requirements.lock
	$(VENV)/bin/uv pip install -q --python $(VENV)/bin/python --no-deps -e .
	$(VENV)/bin/python -m ipykernel install --sys-prefix --name koe --display-name koe >/dev/null
	@# UMAP's numba code compiled once and kept in the venv (pipelines/jit_cache.py): ~30 s here, not in every topics run
	$(VENV)/bin/python -m pipelines.jit_cache
	@# JupyterLab defaults for this venv: no news or update pop-up (a user's own settings still win)
	@mkdir -p $(VENV)/share/jupyter/lab/settings && cp jupyter/overrides.json $(VENV)/share/jupyter/lab/settings/overrides.json
	@# notebook outputs never reach a commit (.gitattributes names the filter; git config holds its command)
	@! git rev-parse --is-inside-work-tree >/dev/null 2>&1 || { \
		git config filter.nbstripout.clean "'$(BIN)/nbstripout' --keep-id" && git config filter.nbstripout.smudge cat && \
		git config diff.ipynb.textconv "'$(BIN)/nbstripout' --keep-id -t"; }
	@touch $@

# Outputs are git-ignored and dvc.lock / reports/metrics.json are committed for this demo (deterministic), so
# `git status` stays clean afterwards; on your own data, commit what `dvc repro` changes.
demo: setup
	koe demo-data
	dvc repro
	@echo
	@echo "report: $(CURDIR)/reports/report.html"

# The Vega bundle, pinned by package-lock.json (npm is needed at setup only; the page it makes works offline).
node_modules/.package-lock.json: package.json package-lock.json
	@command -v npm >/dev/null || { sudo=$$( [ "$$(id -u)" = 0 ] || echo sudo ); $$sudo apt-get update -q && $$sudo apt-get install -y -q npm; } >/dev/null
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

$(PLOTS_TEMPLATE): node_modules/.package-lock.json scripts/dvc_plots_template.py
	$(PYTHON) scripts/dvc_plots_template.py --out $@ >/dev/null

# Two workers; tests that share an expensive fixture (the demo workspace, the shape kernel …) run on one worker
# (tests/conftest.py groups them). --durations lists the slowest tests, so a CI log shows where time goes.
test: setup browser
	python -m pytest -n 2 --dist loadgroup --durations=15

# Unit and contract tests: no end-to-end pipeline, no Monte-Carlo, no topic-model fits (tests marked slow).
test-fast: setup
	python -m pytest -n 2 --dist loadgroup -m "not slow"

# Headless Chromium drives the report and JupyterLab tests; the CJK font makes their screenshots readable.
# Debian packages, installed once (root, or sudo).
browser:
	@dpkg -s chromium fonts-noto-cjk >/dev/null 2>&1 || { sudo=$$( [ "$$(id -u)" = 0 ] || echo sudo ); $$sudo apt-get update -q && $$sudo apt-get install -y -q chromium fonts-noto-cjk; } >/dev/null

# JupyterLab on the project, on loopback, with a fresh token printed as a ready-to-open URL. LAB_PORT picks the
# port (default 8888, or a free one when 8888 is taken); port_retries=0 so the printed URL is the one served.
LAB_PORT ?=
lab: setup
	@port=$${LAB_PORT:-$$(python -c 'import socket; taken = socket.socket().connect_ex(("127.0.0.1", 8888)) == 0; s = socket.socket(); s.bind(("127.0.0.1", 0 if taken else 8888)); print(s.getsockname()[1])')}; \
	token=$$(python -c 'import secrets; print(secrets.token_hex(24))'); \
	echo "JupyterLab: http://127.0.0.1:$$port/lab?token=$$token"; \
	exec jupyter lab --no-browser --ip 127.0.0.1 --port $$port --ServerApp.port_retries=0 \
		--IdentityProvider.token=$$token $$( [ "$$(id -u)" = 0 ] && echo --allow-root ) --notebook-dir=$(CURDIR)

# Re-pin after editing requirements.in (sentence-transformers/torch are excluded on purpose).
lock: setup
	uv pip compile -q --python-version 3.11 requirements.in --override overrides.txt -o requirements.lock
	python scripts/sync_environment.py

# ruff, configured in pyproject.toml
lint: setup
	ruff check pipelines tests
