.DEFAULT_GOAL := help
SHELL := /bin/bash

VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed-stamp
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

# The tools and test dependencies, pinned loosely; the package's own deps come from pyproject.toml.
DEV_DEPS := 'maturin>=1.9.4,<2' 'pytest>=8' 'anyio>=4.4' 'trio>=0.25' 'uvloop>=0.19' \
	'pydantic-ai-slim>=2' 'logfire>=3' 'opentelemetry-sdk>=1.20' 'opentelemetry-api>=1.20' \
	'ruff>=0.6' 'basedpyright>=1.20' 'mypy>=1.10' 'tqdm>=4'

$(STAMP): Makefile
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(DEV_DEPS)
	@touch $(STAMP)

.PHONY: install  ## Create .venv with every tool and test dependency
install: $(STAMP)

.PHONY: build-dev  ## Build the extension (debug) into .venv
build-dev: $(STAMP)
	$(VENV)/bin/maturin develop -q

.PHONY: build-prod  ## Build the extension (release, LTO) into .venv
build-prod: $(STAMP)
	$(VENV)/bin/maturin develop -q --release

.PHONY: format  ## Format Rust and Python code
format: $(STAMP)
	cargo fmt --all
	$(VENV)/bin/ruff format
	$(VENV)/bin/ruff check --fix

.PHONY: lint-rust  ## cargo fmt --check, clippy (with and without Python), rustdoc
lint-rust:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy --all-targets --no-default-features -- -D warnings
	RUSTDOCFLAGS=-Dwarnings cargo doc --no-deps -q

.PHONY: lint-python  ## ruff, pyright (strict on the package), stubtest
lint-python: build-dev
	$(VENV)/bin/ruff check
	$(VENV)/bin/ruff format --check
	$(VENV)/bin/basedpyright
	$(PY) -m mypy.stubtest ferrolimit._ferrolimit --allowlist tests/stubtest_allowlist.txt

.PHONY: lint  ## All linters
lint: lint-rust lint-python

.PHONY: test-rust  ## Rust tests: the core without Python, then with the python feature
test-rust:
	cargo test -q --no-default-features
	cargo test -q

.PHONY: test-python  ## pytest against a fresh debug build
test-python: build-dev
	$(PY) -m pytest -q

.PHONY: test  ## Every test, Rust and Python (sets everything up first)
test: test-rust loom test-python

.PHONY: loom  ## Model-check the admission/handoff core with loom
loom:
	RUSTFLAGS="--cfg ferrolimit_loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release --no-default-features --lib loom

.PHONY: bench  ## Benchmarks: Rust (criterion) and Python (vs pydantic-ai and asyncio.Semaphore)
bench: build-prod
	cargo bench --no-default-features --bench limiter
	$(PY) benches/bench_python.py
	$(PY) benches/bench_threads.py

.PHONY: demo  ## Many pydantic-ai agent runs sharing one ferrolimit limiter, vs pydantic-ai's own
demo: build-prod
	$(PY) examples/demo.py

.PHONY: clean  ## Remove build products and the virtualenv
clean:
	cargo clean
	rm -rf $(VENV) python/ferrolimit/*.so

.PHONY: help  ## List the targets
help:
	@grep -E '^\.PHONY: [a-zA-Z_-]+ +## ' $(MAKEFILE_LIST) | sed -E 's/^\.PHONY: ([a-zA-Z_-]+) +## (.*)/  \1\t\2/' | expand -t 16
