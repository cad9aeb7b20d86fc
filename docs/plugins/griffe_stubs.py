"""A griffe extension for the API reference, which griffe reads from the stubs (`_ferrolimit.pyi`).

`ConstructorFromNew`: pyo3 classes are built by `__new__`, so the stubs document each constructor
there, while mkdocstrings-python's `merge_init_into_class` only merges `__init__` into the class.
It renames `__new__` to `__init__` on classes that have no `__init__` of their own, so the class
heading shows the constructor's signature and its parameters table (the leading `cls` is dropped
as `self` is).
"""

from __future__ import annotations

from typing import Any

import griffe


class ConstructorFromNew(griffe.Extension):
    """Treat `__new__` as `__init__` on classes that define only `__new__`."""

    def on_class_members(self, *, cls: griffe.Class, **kwargs: Any) -> None:
        """Rename the class's `__new__` member once its members are loaded."""
        new = cls.members.get('__new__')
        if new is None or new.is_alias or not new.is_function or '__init__' in cls.members:
            return
        cls.del_member('__new__')
        new.name = '__init__'
        cls.set_member('__init__', new)
