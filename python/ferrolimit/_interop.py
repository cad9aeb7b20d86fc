"""Interoperability with pydantic-ai, whatever the import order.

As soon as pydantic-ai's modules are loaded (now, or whenever they are imported later), ferrolimit's
errors become subclasses of pydantic-ai's and its limiters virtual subclasses of pydantic-ai's
`AbstractConcurrencyLimiter`. pydantic-ai is never imported by ferrolimit itself: it stays optional
and costs nothing to those who don't use it.
"""

from __future__ import annotations as _annotations

import sys
from collections.abc import Callable, Sequence
from importlib.abc import Loader, MetaPathFinder
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any

from ._limit import AbstractConcurrencyLimiter
from .exceptions import ConcurrencyLimitExceeded, UserError

__all__ = ('pydantic_ai_concurrency',)


def _adopt_exceptions(module: ModuleType) -> None:
    UserError.__bases__ = (module.UserError,)
    ConcurrencyLimitExceeded.__bases__ = (module.ConcurrencyLimitExceeded,)


def _adopt_abstract_limiter(module: ModuleType) -> None:
    module.AbstractConcurrencyLimiter.register(AbstractConcurrencyLimiter)


_HOOKS: dict[str, Callable[[ModuleType], None]] = {
    'pydantic_ai.exceptions': _adopt_exceptions,
    'pydantic_ai.concurrency': _adopt_abstract_limiter,
}


class _HookedLoader(Loader):
    """Runs a module's own loader, then ferrolimit's hook for it."""

    def __init__(self, loader: Loader, hook: Callable[[ModuleType], None]):
        self._loader = loader
        self._hook = hook

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        # Put the real loader back first, so the module looks as if it had been loaded normally.
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        self._loader.exec_module(module)
        self._hook(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class _PostImportFinder(MetaPathFinder):
    """Wraps the loader of the pydantic-ai modules ferrolimit adapts to, and nothing else."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        hook = _HOOKS.get(fullname)
        if hook is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, 'find_spec'):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _HookedLoader(spec.loader, hook)
                return spec
        return None


def _install_hooks() -> None:
    pending = False
    for name, hook in _HOOKS.items():
        module = sys.modules.get(name)
        if module is None:
            pending = True
        else:
            hook(module)
    if pending and not any(isinstance(f, _PostImportFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _PostImportFinder())


def pydantic_ai_concurrency() -> ModuleType | None:
    """Return `pydantic_ai.concurrency` if pydantic-ai has been imported, without importing it."""
    return sys.modules.get('pydantic_ai.concurrency')


_install_hooks()
