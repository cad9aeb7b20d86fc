"""Run a hook when a module is imported: now if it already is, else right after its import.

ferrolimit adapts itself to pydantic-ai this way (its errors subclass pydantic-ai's, its limiters
are pydantic-ai limiters) without ever importing pydantic-ai: it stays optional, costs nothing to
those who don't use it, and the adaptation holds whatever the import order.
"""

from __future__ import annotations as _annotations

import sys
from collections.abc import Callable, Sequence
from importlib.abc import Loader, MetaPathFinder
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any

__all__ = ('after_import',)

_HOOKS: dict[str, list[Callable[[ModuleType], None]]] = {}


def after_import(name: str, hook: Callable[[ModuleType], None]) -> None:
    """Call `hook(module)` once module `name` is imported: at once if it already is."""
    module = sys.modules.get(name)
    if module is not None:
        hook(module)
        return
    _HOOKS.setdefault(name, []).append(hook)
    if not any(isinstance(finder, _PostImportFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _PostImportFinder())


class _HookedLoader(Loader):
    """Runs a module's own loader, then the hooks waiting for it."""

    def __init__(self, loader: Loader, hooks: list[Callable[[ModuleType], None]]):
        self._loader = loader
        self._hooks = hooks

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        # Put the real loader back first, so the module looks as if it had been loaded normally.
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        self._loader.exec_module(module)
        for hook in self._hooks:
            hook(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class _PostImportFinder(MetaPathFinder):
    """Wraps the loader of the modules that have hooks waiting, and of nothing else."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        hooks = _HOOKS.pop(fullname, None)
        if hooks is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, 'find_spec'):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _HookedLoader(spec.loader, hooks)
                return spec
        # Not importable this time: keep waiting for a later attempt.
        _HOOKS[fullname] = hooks
        return None


def loaded_module(name: str) -> ModuleType | None:
    """Return module `name` if it has been imported, without importing it."""
    return sys.modules.get(name)
