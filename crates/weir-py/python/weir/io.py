"""`weir.io`: where the Flyte guide uses `flyte.io.File`, `Dir` and `DataFrame`.

weir has these reference types in its Rust SDK (`weir::File`, `weir::Dir`, `weir::DataFrame`),
but the Python front does not carry them yet: using one is refused, never silently copied.
"""

from __future__ import annotations

from typing import Any

from .errors import NotSupportedError


class _NotYet:
    _what = "reference type"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise NotSupportedError(
            f"weir.io.{type(self).__name__} is not supported yet by the Python front "
            "(the Rust SDK has weir::{0}); pass small values inline, or paths as str".format(
                type(self).__name__ if type(self).__name__ != "Directory" else "Dir"
            )
        )

    @classmethod
    def from_local(cls, *args: Any, **kwargs: Any) -> Any:
        return cls()

    @classmethod
    def new_remote(cls, *args: Any, **kwargs: Any) -> Any:
        return cls()


class File(_NotYet):
    """Not supported yet: refused."""


class Directory(_NotYet):
    """Not supported yet: refused."""


Dir = Directory


class DataFrame(_NotYet):
    """Not supported yet: refused."""
