"""Generates the native module's Python docstrings from its stubs: one source for every doc.

`python/ferrolimit/_ferrolimit.pyi` holds the documentation of every native class, method,
property and function, as editors and the docs site read it. This script writes the same text
into `src/python/docstrings.rs`, a `docstring!` macro that the pyo3 glue puts on each item
(`#[doc = docstring!(ConcurrencyLimiter.acquire)]`), so that `help()` and `__doc__` show it at
run time. A class's docstring is followed by its constructor's (`__new__`), which `help()` would
not show otherwise; other dunder methods are left out (pyo3 gives slots no docstring).

    python scripts/docstrings.py          # rewrite src/python/docstrings.rs
    python scripts/docstrings.py --check  # exit 1 if it is out of date (make lint, the tests)
"""

from __future__ import annotations

import argparse
import ast
import inspect
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STUB = ROOT / 'python' / 'ferrolimit' / '_ferrolimit.pyi'
OUTPUT = ROOT / 'src' / 'python' / 'docstrings.rs'
EDITION = '2024'

HEADER = """\
//! The Python docstrings of the native module's classes, methods, properties and functions,
//! generated from `python/ferrolimit/_ferrolimit.pyi` by `scripts/docstrings.py`: edit the stubs
//! and run `python scripts/docstrings.py` (a test fails while this file is out of date).
//!
//! `docstring!(Class)`, `docstring!(Class.member)` or `docstring!(function)` is the text, for
//! `#[doc = ...]` on the item.

"""


C_DOCSTRING = """\
/// `docstring!(key)` as a C string for a raw type or method, after a text signature if given
/// (`c_docstring!("f(a, b)", f)`); checked when compiling.
macro_rules! c_docstring {
    ($signature:literal, $($key:tt)+) => {
        const { $crate::python::docstrings::c_str(concat!($signature, "\\n--\\n\\n", $crate::python::docstrings::docstring!($($key)+), "\\0")) }
    };
    ($($key:tt)+) => {
        const { $crate::python::docstrings::c_str(concat!($crate::python::docstrings::docstring!($($key)+), "\\0")) }
    };
}

pub(crate) use {c_docstring, docstring};

/// `text`, which ends with its only NUL, as a C string.
pub(crate) const fn c_str(text: &'static str) -> &'static std::ffi::CStr {
    match std::ffi::CStr::from_bytes_with_nul(text.as_bytes()) {
        Ok(text) => text,
        Err(_) => panic!("a docstring must not hold a NUL"),
    }
}
"""


def _doc(node: ast.AST) -> str | None:
    if not isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
        return None
    doc = ast.get_docstring(node, clean=False)
    return None if doc is None else inspect.cleandoc(doc)


def _is_setter(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    return any(isinstance(d, ast.Attribute) and d.attr in ('setter', 'deleter') for d in node.decorator_list)


def stub_docstrings(stub: Path = STUB) -> dict[str, str]:
    """The docstring of every documented item of the stubs, by `Class`, `Class.member` or `function`."""
    docs: dict[str, str] = {}
    for node in ast.parse(stub.read_text(encoding='utf-8')).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and (doc := _doc(node)):
            docs[node.name] = doc
        if not isinstance(node, ast.ClassDef):
            continue
        parts = [doc] if (doc := _doc(node)) else []
        for member in node.body:
            if not isinstance(member, ast.FunctionDef | ast.AsyncFunctionDef) or _is_setter(member):
                continue
            member_doc = _doc(member)
            if member_doc is None:
                continue
            if member.name == '__new__':
                parts.append(member_doc)
            elif not (member.name.startswith('__') and member.name.endswith('__')):
                docs[f'{node.name}.{member.name}'] = member_doc
        if parts:
            docs[node.name] = '\n\n'.join(parts)
    return docs


def _literal(text: str) -> str:
    return '"' + text.replace('\\', '\\\\').replace('"', '\\"') + '"'


def render(docs: dict[str, str]) -> str:
    """The text of `src/python/docstrings.rs` for `docs`, as `cargo fmt` leaves it."""
    arms = []
    for name, doc in sorted(docs.items()):
        key = ' . '.join(name.split('.'))
        arms.append(f'    ({key}) => {{\n{_literal(doc)}\n    }};\n')
    body = ''.join(arms)
    text = f'{HEADER}macro_rules! docstring {{\n{body}}}\n\n{C_DOCSTRING}'
    rustfmt = [
        shutil.which('rustfmt') or 'rustfmt',
        '--edition',
        EDITION,
        '--config-path',
        str(ROOT),
        '--emit',
        'stdout',
    ]
    return subprocess.run(rustfmt, input=text, capture_output=True, text=True, check=True).stdout


def main() -> int:
    """Write (or, with `--check`, compare) `src/python/docstrings.rs`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--check', action='store_true', help='exit 1 if the file is out of date')
    args = parser.parse_args()
    text = render(stub_docstrings())
    if args.check:
        if OUTPUT.read_text(encoding='utf-8') != text:
            print(f'{OUTPUT.relative_to(ROOT)} is out of date: run python scripts/docstrings.py', file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text, encoding='utf-8')
    return 0


if __name__ == '__main__':
    sys.exit(main())
