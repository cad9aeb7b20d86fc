.DEFAULT_GOAL := help
SHELL := /bin/bash

VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed-stamp
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

# The tools and test dependencies, pinned loosely; the package's own deps come from pyproject.toml.
# TEST_DEPS: the build tool and what the tests import; DEV_DEPS adds the linters.
TEST_DEPS := 'maturin>=1.9.4,<2' 'pytest>=8' 'anyio>=4.4' 'trio>=0.25' 'uvloop>=0.19' \
	'pydantic-ai-slim>=2' 'logfire>=3' 'opentelemetry-sdk>=1.20' 'opentelemetry-api>=1.20' 'tqdm>=4'
DEV_DEPS := $(TEST_DEPS) 'ruff>=0.6' 'basedpyright>=1.20' 'mypy>=1.10'

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

.PHONY: lint-typing  ## pyright and mypy (strict) on tests/typing's user apps, with and without pydantic-ai
lint-typing: build-dev
	tests/typing/check.sh $(VENV)

.PHONY: lint  ## All linters
lint: lint-rust lint-python lint-typing lint-workflows

# The Redis servers the tests use: private to this checkout, on loopback ports, no persistence.
# One plain; one TLS-only with ACL users (the default user off, `app` with password `s3cret`),
# its certificates made here by openssl: a CA, the server's (for 127.0.0.1 and localhost) and a
# client's.
REDIS_PORT ?= 6390
REDIS_TLS_PORT ?= 6391
REDIS_DIR := $(CURDIR)/target/redis
REDIS_TLS_DIR := $(REDIS_DIR)/tls
REDIS_URL := redis://127.0.0.1:$(REDIS_PORT)/0
REDIS_TLS_URL := rediss://app:s3cret@127.0.0.1:$(REDIS_TLS_PORT)/0?ssl_ca_certs=$(REDIS_TLS_DIR)/ca.crt
# Runs the command $(1) with those servers up (FERROLIMIT_REDIS_URL and FERROLIMIT_REDIS_TLS_URL
# point at them, FERROLIMIT_REDIS_TLS_DIR holds the certificates), and stops them afterwards
# whether the command failed or not.
with_redis = $(MAKE) --no-print-directory redis-start && \
	{ FERROLIMIT_REDIS_URL=$(REDIS_URL) FERROLIMIT_REDIS_TLS_URL='$(REDIS_TLS_URL)' \
	FERROLIMIT_REDIS_TLS_DIR=$(REDIS_TLS_DIR) $(1); status=$$?; $(MAKE) --no-print-directory redis-stop; exit $$status; }

.PHONY: redis-install  ## Install redis-server from Debian's packages if it is missing
redis-install:
	@command -v redis-server >/dev/null || { \
		echo 'installing redis-server (apt-get)'; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }

$(REDIS_TLS_DIR)/client.crt:
	@command -v openssl >/dev/null || { echo 'installing openssl (apt-get)'; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null; }
	@mkdir -p $(REDIS_TLS_DIR)
	@cd $(REDIS_TLS_DIR) && \
		openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 -subj '/CN=ferrolimit test CA' 2>/dev/null && \
		printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > server.ext && \
		printf 'extendedKeyUsage=clientAuth\n' > client.ext && \
		for who in server client; do \
			openssl req -newkey rsa:2048 -nodes -keyout $$who.key -out $$who.csr -subj "/CN=$$who" 2>/dev/null && \
			openssl x509 -req -in $$who.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out $$who.crt -days 3650 \
				-extfile $$who.ext 2>/dev/null || exit 1; \
		done && \
		printf 'user default off\nuser app on >s3cret ~* &* +@all\n' > users.acl

.PHONY: redis-start  ## Start the test Redis servers on 127.0.0.1:$(REDIS_PORT), and TLS on $(REDIS_TLS_PORT)
redis-start: redis-install redis-stop $(REDIS_TLS_DIR)/client.crt
	@mkdir -p $(REDIS_DIR)
	@redis-server --bind 127.0.0.1 --port $(REDIS_PORT) --daemonize yes --pidfile $(REDIS_DIR)/redis.pid \
		--dir $(REDIS_DIR) --logfile $(REDIS_DIR)/redis.log --save '' --appendonly no
	@redis-server --bind 127.0.0.1 --port 0 --tls-port $(REDIS_TLS_PORT) --daemonize yes \
		--pidfile $(REDIS_DIR)/redis-tls.pid --dir $(REDIS_DIR) --logfile $(REDIS_DIR)/redis-tls.log \
		--save '' --appendonly no --aclfile $(REDIS_TLS_DIR)/users.acl --tls-auth-clients optional \
		--tls-cert-file $(REDIS_TLS_DIR)/server.crt --tls-key-file $(REDIS_TLS_DIR)/server.key \
		--tls-ca-cert-file $(REDIS_TLS_DIR)/ca.crt
	@for i in $$(seq 100); do redis-cli -p $(REDIS_PORT) ping >/dev/null 2>&1 && break; sleep 0.1; \
		[ $$i = 100 ] && { echo "redis-server did not start on port $(REDIS_PORT); see $(REDIS_DIR)/redis.log"; exit 1; }; done; \
	for i in $$(seq 100); do \
		redis-cli -p $(REDIS_TLS_PORT) --tls --cacert $(REDIS_TLS_DIR)/ca.crt --user app --pass s3cret --no-auth-warning \
			ping 2>/dev/null | grep -q PONG && exit 0; sleep 0.1; done; \
		echo "the TLS redis-server did not start on port $(REDIS_TLS_PORT); see $(REDIS_DIR)/redis-tls.log"; exit 1

.PHONY: redis-stop  ## Stop the test Redis servers started by redis-start
redis-stop:
	@for file in $(REDIS_DIR)/redis.pid $(REDIS_DIR)/redis-tls.pid; do \
		[ -f $$file ] || continue; pid=$$(cat $$file); kill $$pid 2>/dev/null; \
		for i in $$(seq 50); do kill -0 $$pid 2>/dev/null || break; sleep 0.1; done; \
		rm -f $$file; done

.PHONY: test-rust  ## Rust tests: the core without Python, then with the python and redis features
test-rust:
	cargo test -q --no-default-features
	@$(call with_redis,cargo test -q)

.PHONY: test-python  ## pytest against a fresh debug build (starts the test Redis server)
test-python: build-dev
	@$(call with_redis,$(PY) -m pytest -q)

.PHONY: test  ## Every test, Rust and Python (sets everything up first)
test: test-rust loom test-python

# The debug-interpreter run: Debian's python3.11-dbg (CPython built with Py_DEBUG: refcount
# checks, the "error set while calling" assertions, debug allocators) in its own venv, and the
# extension built for that interpreter's full ABI (`--no-default-features`: no `abi3` feature), so
# that pyo3 gets its Py_DEBUG/Py_REF_DEBUG cfgs too. Its own Cargo target dir: switching between
# the abi3 and the full-ABI build would otherwise rebuild pyo3 and the crate each time.
DEBUG_PYTHON ?= python3.11-dbg
DEBUG_VENV ?= .venv-debug
DEBUG_PY := $(DEBUG_VENV)/bin/python
DEBUG_STAMP := $(DEBUG_VENV)/.installed-stamp
DEBUG_TARGET_DIR := $(CURDIR)/target/debug-python
# DEBUG_DEV_MODE=1 also runs every Python process in dev mode (-X dev: asyncio debug mode and
# warnings); off by default, since asyncio's debug mode alone (release interpreter too) breaks
# test_loops_in_threads_and_blocking_threads_share_one_limiter's FIFO check.
DEBUG_DEV_MODE ?= 0
# The debug venv's environment: its interpreter first on PATH (the tests' subprocesses use
# sys.executable), VIRTUAL_ENV so that `maturin develop` installs there and not into .venv,
# faulthandler on in every Python process.
DEBUG_ENV := PATH=$(CURDIR)/$(DEBUG_VENV)/bin:$$PATH VIRTUAL_ENV=$(CURDIR)/$(DEBUG_VENV) \
	CARGO_TARGET_DIR=$(DEBUG_TARGET_DIR) PYTHONFAULTHANDLER=1 $(if $(filter 1,$(DEBUG_DEV_MODE)),PYTHONDEVMODE=1)
# pytest-xdist with one worker: a test that aborts or segfaults the interpreter (what this run is
# for) is reported as failed with faulthandler's stack, its worker replaced, and the rest of the
# suite still runs; pytest-timeout (thread method: every thread's stack, then the worker exits)
# does the same for a test that hangs for DEBUG_TEST_TIMEOUT seconds.
DEBUG_TEST_TIMEOUT ?= 300
DEBUG_PYTEST_ARGS ?= -q -rfEs -n 1 --max-worker-restart=1000 --timeout=$(DEBUG_TEST_TIMEOUT) -o timeout_method=thread

$(DEBUG_STAMP): Makefile
	@command -v $(DEBUG_PYTHON) >/dev/null && dpkg -s python3.11-venv >/dev/null 2>&1 || { \
		echo 'installing $(DEBUG_PYTHON) (apt-get)'; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3.11-dbg python3.11-venv >/dev/null; }
	@test -x $(DEBUG_PY) || $(DEBUG_PYTHON) -m venv $(DEBUG_VENV)
	$(DEBUG_PY) -m pip install -q --upgrade pip
	$(DEBUG_PY) -m pip install -q $(TEST_DEPS) 'pytest-xdist>=3' 'pytest-timeout>=2'
	@touch $(DEBUG_STAMP)

# `maturin develop` puts the module next to the one `make build-dev` leaves in python/ferrolimit/;
# the debug interpreter would load that `.abi3.so` too, so the check is on the module it imports.
.PHONY: build-debug  ## Build the extension for python3.11-dbg (full ABI, not abi3) into .venv-debug
build-debug: $(DEBUG_STAMP)
	$(DEBUG_ENV) $(DEBUG_VENV)/bin/maturin develop -q --no-default-features
	@$(DEBUG_ENV) $(DEBUG_PY) -c 'import sys, sysconfig, ferrolimit._ferrolimit as m; print(m.__file__); \
		sys.exit(None if hasattr(sys, "gettotalrefcount") and m.__file__.endswith(sysconfig.get_config_var("EXT_SUFFIX")) \
		else "not a full-ABI build for a Py_DEBUG interpreter")'

# The suite includes the fuzzer's short campaign on every backend (tests/test_fuzz.py).
.PHONY: test-debug  ## pytest and the fuzzer on python3.11-dbg with a full-ABI build (starts Redis)
test-debug: build-debug
	@$(call with_redis,$(DEBUG_ENV) $(DEBUG_PY) -m pytest $(DEBUG_PYTEST_ARGS))

# The fuzzer's long campaign: about 2.4 million driver actions over every backend and
# configuration (about 8 minutes on 2 cores); `make test` runs a short one (tests/test_fuzz.py).
FUZZ_ARGS ?= --ops 1000 --seeds 0..99 --backend all --config all --isolate --jobs 2

.PHONY: fuzz  ## Long model-based fuzzer run over asyncio, uvloop and trio (release build)
fuzz: build-prod
	$(PY) tests/fuzz_model.py $(FUZZ_ARGS)

.PHONY: loom  ## Model-check the admission/handoff core with loom
loom:
	RUSTFLAGS="--cfg ferrolimit_loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release --no-default-features --lib loom

.PHONY: bench  ## Benchmarks: Rust (criterion) and Python (vs pydantic-ai and asyncio.Semaphore)
bench: build-prod
	cargo bench --no-default-features --bench limiter
	$(PY) benches/bench_python.py
	$(PIP) install -q 'matplotlib>=3.8'
	$(PY) benches/plot.py
	$(PY) benches/bench_api.py
	$(PY) benches/bench_trio.py
	$(PY) benches/bench_threads.py
	@$(call with_redis,$(PY) benches/bench_redis.py)

# `make demo` installs only what the demo needs (examples/demo_requirements.txt: maturin,
# pydantic-ai-slim) into $(VENV); the targets that need the other tools install them later.
DEMO_STAMP := $(VENV)/.demo-installed-stamp

$(DEMO_STAMP): Makefile examples/demo_requirements.txt
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q -r examples/demo_requirements.txt
	@touch $(DEMO_STAMP)

.PHONY: demo  ## ferrolimit vs pydantic-ai's limiter: max_queued, per-call overhead, cancellation at handoff
demo: $(DEMO_STAMP)
	@echo 'building the release extension (fat LTO: a minute or two the first time, seconds after)...'
	$(VENV)/bin/maturin develop --release
	$(PY) examples/demo.py

.PHONY: demo-fleet  ## Worker processes sharing one limit through Redis (starts a throwaway server)
demo-fleet: build-prod
	@$(call with_redis,$(PY) examples/redis_fleet.py --redis-url $(REDIS_URL))

# Packaging (scripts/dist.sh says what each step checks): the tools in target/dist-venvs/tools,
# Cargo in target/dist, a virtualenv per CPython 3.10-3.13 found (PATH, pyenv) under target/dist-venvs.
.PHONY: dist  ## sdist + manylinux2014 abi3 wheel into dist/: twine, auditwheel, smoke test per CPython
dist:
	scripts/dist.sh dist

.PHONY: test-pythons  ## pytest on each CPython 3.10-3.13 with dist/'s wheel (starts the test Redis server)
test-pythons:
	@$(call with_redis,TEST_DEPS="$(TEST_DEPS)" scripts/dist.sh test-pythons)

.PHONY: lint-workflows  ## Check .github/workflows (workflow JSON schema; actionlint where installable)
lint-workflows:
	scripts/dist.sh lint-workflows

# The documentation site: mkdocs-material, the API pages from the stubs (mkdocstrings); every
# Python block of docs/ and the README also runs in the tests (tests/test_docs_examples.py).
DOCS_VENV := target/docs-venv
DOCS_DEPS := 'mkdocs>=1.6.1,<2' 'mkdocs-material>=9.8.2,<10' 'mkdocstrings>=1.0.8,<2' \
	'mkdocstrings-python>=2.0.11,<3' 'ruff>=0.6'

.PHONY: docs  ## Build the documentation site (mkdocs --strict) into target/site
docs:
	@test -x $(DOCS_VENV)/bin/mkdocs || { python3 -m venv $(DOCS_VENV) && $(DOCS_VENV)/bin/pip install -q $(DOCS_DEPS); }
	NO_MKDOCS_2_WARNING=1 $(DOCS_VENV)/bin/mkdocs build --strict -d target/site

.PHONY: clean  ## Remove build products and the virtualenv
clean:
	cargo clean
	rm -rf $(VENV) $(DEBUG_VENV) python/ferrolimit/*.so

.PHONY: help  ## List the targets
help:
	@grep -E '^\.PHONY: [a-zA-Z_-]+ +## ' $(MAKEFILE_LIST) | sed -E 's/^\.PHONY: ([a-zA-Z_-]+) +## (.*)/  \1\t\2/' | expand -t 16
