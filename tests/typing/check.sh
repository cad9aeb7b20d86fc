#!/usr/bin/env bash
# Type-checks the user apps in this folder as a user's project would see ferrolimit: pyright and
# mypy, both strict, once in the development venv (pydantic-ai installed: both apps) and once in
# a venv without pydantic-ai (target/typing-venv, made here: the app that does not import it).
# ferrolimit is installed in both as an editable path (a .pth file to python/), so the checkers
# read its stubs as a library's. Usage: tests/typing/check.sh VENV_WITH_PYDANTIC_AI
set -euo pipefail
cd "$(dirname "$0")/../.."
with=$1
without=target/typing-venv
if [ ! -x "$without/bin/python" ]; then
    python3 -m venv "$without"
    "$without/bin/pip" install -q 'opentelemetry-api>=1.20' 'typing_extensions>=4.12'
fi
if "$without/bin/python" -c 'import pydantic_ai' 2>/dev/null; then
    echo "$without must not have pydantic-ai" >&2
    exit 1
fi
site=$("$without/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$PWD/python" > "$site/ferrolimit.pth"

check() {  # check PYTHON FILE...
    local python=$1
    shift
    echo "typing: $python: $*"
    "$with/bin/basedpyright" -p tests/typing/pyrightconfig.json --pythonpath "$python" "$@"
    "$with/bin/mypy" --strict --no-incremental --python-executable "$python" "$@"
}
check "$with/bin/python" tests/typing/app_pydantic_ai.py tests/typing/app_plain.py
check "$without/bin/python" tests/typing/app_plain.py
