"""`weir.io`: data passed by reference, as the guide's `flyte.io.File` and `Dir`.

A `File` or `Dir` is weir's reference type (the same as the Rust SDK's `weir::File` and
`weir::Dir`): the bytes go once into the engine's object store, content-addressed by their blake3
hash, and only the small reference crosses between tasks (shown by `get io` and the UI). Reading
checks the hash. They are made and read inside a task of a run.

`DataFrame` is refused: the Rust SDK has `weir::DataFrame` (Parquet), the Python front does not
carry Arrow data yet.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from typing import Any, Optional

from . import _runtime, _weir
from .errors import NotSupportedError, TaskError


def _state(what: str) -> Any:
    state = _runtime.CURRENT.get()
    if state is None:
        raise RuntimeError(f"{what} runs inside a task of a run: there is no object store here")
    return state


async def _native(call: Any) -> bytes:
    """Awaits the `done` event of a native upload or download."""
    ok, payload = await _runtime.loop().expect(call)
    if not ok:
        raise TaskError(*payload)
    return payload


def _blocking(coro: Any, state: Any) -> Any:
    """Runs `coro` on weir's loop from a `def` task's thread and waits for it."""
    if _runtime.loop().in_loop():
        coro.close()
        raise RuntimeError("the _sync variants are for `def` tasks; in an async task, await from_local / download")

    async def inside() -> Any:
        _runtime.CURRENT.set(_runtime.TaskState(state.ctx, state.template))
        return await coro

    return asyncio.run_coroutine_threadsafe(inside(), _runtime.loop().loop).result()


class _Ref:
    _key = ""
    _is_dir = False

    def __init__(self, reference: dict) -> None:
        if not isinstance(reference, dict) or self._key not in reference:
            raise TypeError(f"not a weir {type(self).__name__} reference: {reference!r}")
        self._ref = reference

    def __weir_value__(self) -> dict:
        return self._ref

    @classmethod
    def __weir_from_value__(cls, value: Any) -> Any:
        return cls(value) if isinstance(value, dict) else value

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._ref == self._ref  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(repr(self._ref))

    async def download(self, local_path: Optional[str] = None) -> str:
        """Downloads it (hash-checked) to `local_path` (a fresh temporary path by default) and
        returns the path."""
        state = _state(f"{type(self).__name__}.download")
        if state.blocking:
            return _blocking(self.download(local_path), state)
        path = local_path or os.path.join(tempfile.mkdtemp(prefix="weir-"), type(self).__name__.lower())
        await _native(state.ctx.download(_weir.encode(self._ref), os.fspath(path)))
        return path

    def download_sync(self, local_path: Optional[str] = None) -> str:
        """`download` from a `def` task."""
        state = _state(f"{type(self).__name__}.download_sync")
        return _blocking(self.download(local_path), state)

    @classmethod
    async def from_local(cls, path: str) -> Any:
        """Uploads the file (or every file of the directory) at `path` (streamed,
        content-addressed) and returns its reference."""
        state = _state(f"{cls.__name__}.from_local")
        if state.blocking:
            return _blocking(cls.from_local(path), state)
        data = await _native(state.ctx.upload(os.fspath(path), cls._is_dir))
        return cls(_weir.decode(data))

    @classmethod
    def from_local_sync(cls, path: str) -> Any:
        """`from_local` from a `def` task."""
        return _blocking(cls.from_local(path), _state(f"{cls.__name__}.from_local_sync"))

    @classmethod
    def new_remote(cls, *args: Any, **kwargs: Any) -> Any:
        raise NotSupportedError(
            f"{cls.__name__}.new_remote is not supported: write the data to a local path, then "
            f"`await weir.io.{cls.__name__}.from_local(path)` uploads it"
        )


class File(_Ref):
    """A file by reference."""

    _key = "weir_file"

    @property
    def size(self) -> int:
        return int(self._ref["size"])

    @property
    def hash(self) -> str:
        return str(self._ref["weir_file"])

    def __repr__(self) -> str:
        return f"File(blake3={self.hash[:12]}…, size={self.size})"


class Dir(_Ref):
    """A directory tree by reference: one content-addressed File per file."""

    _key = "weir_dir"
    _is_dir = True

    @property
    def files(self) -> dict:
        """Relative path → File."""
        return {p: File(f) for p, f in self._ref["weir_dir"]}

    def __repr__(self) -> str:
        return f"Dir({len(self._ref['weir_dir'])} files)"


Directory = Dir


class DataFrame:
    """Not supported yet by the Python front: refused."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise NotSupportedError(
            "weir.io.DataFrame is not supported yet by the Python front (the Rust SDK has "
            "weir::DataFrame, Parquet by reference); pass a File of Parquet bytes instead"
        )

    @classmethod
    def from_df(cls, *args: Any, **kwargs: Any) -> Any:
        return cls()

    @classmethod
    def from_local(cls, *args: Any, **kwargs: Any) -> Any:
        return cls()
