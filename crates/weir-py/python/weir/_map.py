"""`weir.map`: one child action per item, at most `concurrency` at once, results in order."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Iterable

from . import _runtime
from .errors import WeirError


class _MapCall:
    """What `weir.map(...)` returns: await it for the list of results, or iterate it."""

    def __init__(self, task: Any, iterables: tuple, concurrency: int, group_name: Any, return_exceptions: bool) -> None:
        if not iterables:
            raise TypeError("map() needs at least one iterable of inputs")
        if not isinstance(concurrency, int) or concurrency < 0:
            raise ValueError(f"map(concurrency={concurrency!r}): give a whole number >= 0 (0: no limit)")
        self.task = task
        self.items = list(zip(*iterables))
        self.concurrency = concurrency
        self.group_name = group_name
        self.return_exceptions = return_exceptions

    async def _gather(self) -> list:
        calls = await self._stream()
        return await asyncio.gather(*calls, return_exceptions=self.return_exceptions)

    async def _stream(self) -> list:
        """The calls started as tasks (in the group), at most `concurrency` running."""
        sem = asyncio.Semaphore(self.concurrency) if self.concurrency else None
        token = _runtime.GROUP.set(self.group_name) if self.group_name else None
        try:
            async def one(args: tuple) -> Any:
                if sem is None:
                    return await self.task.aio(*args)
                async with sem:
                    return await self.task.aio(*args)

            return [asyncio.ensure_future(one(args)) for args in self.items]
        finally:
            if token is not None:
                _runtime.GROUP.reset(token)

    def __await__(self) -> Any:
        return self._gather().__await__()

    def __iter__(self) -> Any:
        state = _runtime.CURRENT.get()
        if state is None or not state.blocking:
            raise RuntimeError("iterate weir.map(...) in a plain `def` task; in an async task, await it or use weir.map.aio")
        fut = asyncio.run_coroutine_threadsafe(_in_context(state, self._gather()), _runtime.loop().loop)
        return iter(fut.result())


async def _in_context(state: Any, coro: Any) -> Any:
    _runtime.CURRENT.set(_runtime.TaskState(state.ctx, state.template))
    return await coro


class _Map:
    def __call__(self, task: Any, *iterables: Iterable, concurrency: int = 0, group_name: Any = None, return_exceptions: bool = True) -> _MapCall:
        """Calls `task` once per item (several iterables are zipped into positional args)."""
        return _MapCall(task, iterables, concurrency, group_name, return_exceptions)

    async def aio(self, task: Any, *iterables: Iterable, concurrency: int = 0, group_name: Any = None, return_exceptions: bool = True) -> AsyncIterator[Any]:
        """An async generator of the results, in the order of the items: each is yielded as soon
        as it and those before it finished."""
        calls = await _MapCall(task, iterables, concurrency, group_name, return_exceptions)._stream()
        try:
            for call in calls:
                try:
                    yield await call
                except Exception as e:  # noqa: BLE001
                    if not return_exceptions:
                        raise
                    yield e
        finally:
            # A consumer that stops early cancels the calls still going (their children too).
            for call in calls:
                call.cancel()


map = _Map()
