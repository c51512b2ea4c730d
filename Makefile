# One command to set up and run the service, one to set up and run all tests (see README.md).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.samgis-installed
SAM2_VERSION := 1.1.0
SAM3_VERSION := 0.1.4
SETUPTOOLS_VERSION := 84.2.1
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=
# pytest-xdist workers: each module stays whole on one worker, SAM 3 modules share one (tests/conftest.py); 1 = no xdist.
PYTEST_WORKERS ?= 2
XDIST = $(if $(filter 1,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadfile)
NPM ?= npm
CHROMIUM := /usr/bin/chromium
# The web map (web/): npm ci when the lock file changes, vite build when a source changes.
WEB_DEPS := web/node_modules/.samgis-npm-ci
WEB_DIST := web/dist/index.html
WEB_SRC := web/index.html web/vite.config.js $(filter-out %.test.js,$(wildcard web/src/*.js web/src/*.css))

.PHONY: setup run test test-fast test-web bench clean

setup: $(STAMP) $(WEB_DIST)

# sam2 (SAM 2.1 backend) is an sdist that imports torch at build time: it is built against the venv's torch
# (build isolation would fetch another one), without its optional CUDA extension (SAM2_BUILD_CUDA=0, read by
# its setup.py), and with --no-deps so that our pins stay as they are (its runtime deps are in pyproject.toml).
# sam3 (SAM 3 backend) is a pure-Python wheel whose metadata caps numpy < 2.4 and tqdm < 4.68, below our pins:
# --no-deps too, its real runtime deps pinned in pyproject.toml (the BPE vocabulary from open-clip-torch).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m pip install --quiet 'setuptools==$(SETUPTOOLS_VERSION)'
	SAM2_BUILD_CUDA=0 $(BIN)/python -m pip install --quiet --no-deps --no-build-isolation 'sam2==$(SAM2_VERSION)'
	$(BIN)/python -m pip install --quiet --no-deps 'sam3==$(SAM3_VERSION)'
	touch $(STAMP)

$(WEB_DEPS): web/package.json web/package-lock.json
	@node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a==20&&b>=19)?0:1)' 2>/dev/null \
	  || { echo "The web map needs Node.js >= 20.19 with npm (found: $$(node --version 2>/dev/null || echo none))." >&2; exit 1; }
	cd web && $(NPM) ci --no-audit --no-fund
	touch $@

$(WEB_DIST): $(WEB_DEPS) $(WEB_SRC)
	cd web && $(NPM) run build
	touch $@

# Browser tests drive Debian's Chromium (never a downloaded browser); installed only when missing.
$(CHROMIUM):
	if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	$$SUDO apt-get update && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y --no-install-recommends chromium

run: setup
	$(BIN)/samgis serve --host $(HOST) --port $(PORT)

test: setup $(CHROMIUM) test-web
	$(BIN)/python -m pytest $(XDIST) $(PYTEST_ARGS)

test-fast: setup test-web
	$(BIN)/python -m pytest $(XDIST) -m "not slow and not browser" $(PYTEST_ARGS)

test-web: $(WEB_DEPS)
	cd web && $(NPM) test

bench: setup
	$(BIN)/python bench/bench_segment.py

clean:
	rm -rf $(VENV) web/node_modules web/dist .pytest_cache
