"""The native module's documentation has one source, the stubs, and `help()` shows it.

`scripts/docstrings.py` generates `src/python/docstrings.rs` from `_ferrolimit.pyi`; these tests
fail while the generated file is out of date, while an item of the stubs is missing its
`#[doc = docstring!(...)]` in the glue, and while a native callable has no text signature
(which `help()` and `inspect.signature` read; stubtest checks it against the stubs).
"""

from __future__ import annotations

import ast
import inspect
import pydoc
import sys
from pathlib import Path
from typing import Any

import pytest

import ferrolimit
import ferrolimit._ferrolimit as native

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / 'scripts'))
import docstrings  # the generator lives in scripts/, not in a package

DOCS = docstrings.stub_docstrings()


def runtime(key: str) -> Any:
    """The native object a stub key (`Class`, `Class.member`, `function`) names."""
    name, _, member = key.partition('.')
    obj = getattr(native, name)
    return inspect.getattr_static(obj, member) if member else obj


def test_the_generated_docstrings_are_up_to_date() -> None:
    assert docstrings.OUTPUT.read_text(encoding='utf-8') == docstrings.render(DOCS), (
        'src/python/docstrings.rs is out of date: run python scripts/docstrings.py'
    )


def test_the_stubs_document_the_main_api() -> None:
    for key in ['ConcurrencyLimiter', 'ConcurrencyLimiter.acquire', 'ConcurrencyLimiter.max_running']:
        assert key in DOCS
    assert 'Args:' in DOCS['ConcurrencyLimiter'], "the constructor's documentation follows the class's"


@pytest.mark.parametrize('key', sorted(DOCS))
def test_each_native_item_carries_the_docstring_of_its_stub(key: str) -> None:
    assert inspect.cleandoc(runtime(key).__doc__ or '') == DOCS[key]


def _stub_callables() -> list[str]:
    """Every function, constructor (a class with `__new__`) and method of the stubs; no property."""
    keys: list[str] = []
    for node in ast.parse(docstrings.STUB.read_text(encoding='utf-8')).body:
        if isinstance(node, ast.FunctionDef):
            keys.append(node.name)
        if not isinstance(node, ast.ClassDef):
            continue
        for member in node.body:
            if not isinstance(member, ast.FunctionDef):
                continue
            decorators = {d.id for d in member.decorator_list if isinstance(d, ast.Name)}
            if member.name == '__new__':
                keys.append(node.name)
            elif (
                not member.name.startswith('__')
                and len(decorators | {'classmethod'}) == 1
                and not any(isinstance(d, ast.Attribute) for d in member.decorator_list)
            ):
                keys.append(f'{node.name}.{member.name}')
    return keys


@pytest.mark.parametrize('key', _stub_callables())
def test_each_native_callable_has_a_text_signature(key: str) -> None:
    obj = runtime(key)
    if isinstance(obj, classmethod):
        obj = obj.__func__
    assert obj.__text_signature__, key
    inspect.signature(obj)  # parses


def test_help_shows_the_documentation() -> None:
    text = pydoc.render_doc(ferrolimit.ConcurrencyLimiter, renderer=pydoc.plaintext)
    assert 'A concurrency limiter with a bounded FIFO queue' in text
    assert "acquire(self, /, source='unnamed', *, timeout=None" in text
    assert 'Acquire a slot, waiting in FIFO order if none is free' in text
    assert 'Maximum concurrent operations allowed' in text
