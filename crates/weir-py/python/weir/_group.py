"""`with weir.group("name"):` puts the child calls made inside in a named group."""

from __future__ import annotations

import contextlib
from typing import Iterator

from . import _runtime


@contextlib.contextmanager
def group(name: str) -> Iterator[None]:
    if not isinstance(name, str) or not name:
        raise ValueError(f"group name must be a non-empty string, not {name!r}")
    token = _runtime.GROUP.set(name)
    try:
        yield
    finally:
        _runtime.GROUP.reset(token)
