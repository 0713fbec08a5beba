"""`weir.extras.DynamicBatcher` and `TokenBatcher`, on weir's Rust batcher (`weir-batch`).

The Rust batcher assembles batches under a cost budget, a size cap and a timeout, applies
backpressure on its queue and keeps the statistics; this side keeps the records and their
futures and runs `process_fn` on the event loop the batcher was started on.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Generic, Optional, TypeVar

from . import _weir

R = TypeVar("R")
T = TypeVar("T")


@dataclass(frozen=True)
class BatchStats:
    """A snapshot of a batcher's counters."""

    total_submitted: int
    total_completed: int
    total_failed: int
    total_cancelled: int
    total_batches: int
    total_cost: int
    avg_batch_size: float
    avg_batch_cost: float
    busy_time_s: float
    idle_time_s: float
    utilization: float
    queued: int


class DynamicBatcher(Generic[R, T]):
    """Groups records submitted by many producers into cost-budgeted batches for one
    `process_fn(batch) -> results` (one result per record, in order)."""

    def __init__(
        self,
        process_fn: Callable[[list], Awaitable[list]],
        *,
        cost_estimator: Optional[Callable[[Any], int]] = None,
        target_batch_cost: int = 32_000,
        max_batch_size: int = 256,
        min_batch_size: int = 1,
        batch_timeout_s: float = 0.05,
        max_queue_size: int = 5_000,
        prefetch_batches: int = 2,
        default_cost: int = 1,
    ) -> None:
        if not callable(process_fn):
            raise TypeError(f"process_fn must be an async function, not {process_fn!r}")
        for name, value in (("target_batch_cost", target_batch_cost), ("default_cost", default_cost)):
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a whole number >= 0, not {value!r}")
        self._process_fn = process_fn
        self._cost_estimator = cost_estimator
        self._settings = (
            target_batch_cost,
            max_batch_size,
            min_batch_size,
            float(batch_timeout_s),
            max_queue_size,
            prefetch_batches,
            default_cost,
        )
        self._default_cost = default_cost
        self._native: Any = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._records: dict[int, tuple[Any, asyncio.Future]] = {}
        self._ids = itertools.count(1)
        self._accepting: dict[int, asyncio.Future] = {}
        self._batches: set[asyncio.Task] = set()

    # Life cycle.

    async def start(self) -> None:
        """Starts the batcher on the running event loop."""
        if self._native is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._native = _weir.Batcher(self._loop, self._dispatch, *self._settings)

    async def stop(self) -> None:
        """Stops accepting records and waits until every submitted record has its result."""
        if self._native is None:
            return
        await asyncio.to_thread(self._native.stop)
        while self._batches:
            await asyncio.gather(*list(self._batches), return_exceptions=True)

    async def __aenter__(self) -> "DynamicBatcher[R, T]":
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    @property
    def is_running(self) -> bool:
        return self._native is not None and not self._native.is_stopped()

    @property
    def stats(self) -> BatchStats:
        if self._native is None:
            return BatchStats(0, 0, 0, 0, 0, 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0)
        return BatchStats(**self._native.stats())

    # Records.

    def _cost(self, record: Any, explicit: Optional[int]) -> int:
        for cost in self._estimates(record, explicit):
            if cost is not None:
                if not isinstance(cost, int) or isinstance(cost, bool) or cost < 0:
                    raise ValueError(f"a record's cost must be a whole number >= 0, not {cost!r}")
                return cost
        return self._default_cost

    # The record's own estimates, in order of precedence (after an explicit cost and the
    # estimator function).
    _record_methods: tuple = ("estimate_cost",)

    def _estimates(self, record: Any, explicit: Optional[int]) -> Any:
        yield explicit
        if self._cost_estimator is not None:
            yield self._cost_estimator(record)
        for method in self._record_methods:
            estimate = getattr(record, method, None)
            if callable(estimate):
                yield estimate()

    async def submit(self, record: R, *, estimated_cost: Optional[int] = None) -> "asyncio.Future[T]":
        """Queues `record`; returns a future of its result. Waits while the queue is full."""
        if self._native is None:
            raise RuntimeError("the batcher is not started: use `async with` or `await batcher.start()`")
        cost = self._cost(record, estimated_cost)
        rid = next(self._ids)
        fut = self._loop.create_future()
        self._records[rid] = (record, fut)
        try:
            accepted = self._native.submit(rid, cost, self._loop, functools.partial(self._accepted, rid))
        except Exception:
            del self._records[rid]
            raise
        if not accepted:
            waiting = self._loop.create_future()
            self._accepting[rid] = waiting
            await waiting
        return fut

    def _accepted(self, rid: int, ok: bool, message: str) -> None:
        waiting = self._accepting.pop(rid, None)
        if ok:
            if waiting is not None and not waiting.done():
                waiting.set_result(None)
            return
        self._records.pop(rid, None)
        if waiting is not None and not waiting.done():
            waiting.set_exception(RuntimeError(message))

    def _dispatch(self, token: int, ids: list[int]) -> None:
        task = self._loop.create_task(self._run_batch(token, ids))
        self._batches.add(task)
        task.add_done_callback(self._batches.discard)

    async def _run_batch(self, token: int, ids: list[int]) -> None:
        entries = [self._records.pop(i) for i in ids]
        records = [r for r, _ in entries]
        try:
            results = await self._process_fn(records)
            results = list(results)
            if len(results) != len(records):
                raise ValueError(
                    f"process_fn returned {len(results)} results for a batch of {len(records)} "
                    "records; it must return exactly one per record, in order"
                )
        except BaseException as e:  # noqa: BLE001 - the batch's records get the error
            for _, fut in entries:
                if not fut.done():
                    fut.set_exception(e)
            self._native.batch_done(token, f"{type(e).__name__}: {e}")
            return
        for (_, fut), result in zip(entries, results):
            if not fut.done():
                fut.set_result(result)
        self._native.batch_done(token)


class TokenBatcher(DynamicBatcher[R, T]):
    """A DynamicBatcher whose costs are tokens: `inference_fn`, `target_batch_tokens`, and
    records' `estimate_tokens()` (then `estimate_cost()`)."""

    def __init__(
        self,
        inference_fn: Optional[Callable[[list], Awaitable[list]]] = None,
        *,
        target_batch_tokens: int = 32_000,
        process_fn: Optional[Callable[[list], Awaitable[list]]] = None,
        **settings: Any,
    ) -> None:
        if (inference_fn is None) == (process_fn is None):
            raise TypeError("TokenBatcher needs inference_fn (or process_fn), once")
        if "target_batch_cost" in settings:
            raise TypeError("TokenBatcher takes target_batch_tokens, not target_batch_cost")
        super().__init__(inference_fn or process_fn, target_batch_cost=target_batch_tokens, **settings)

    _record_methods = ("estimate_tokens", "estimate_cost")

    async def submit(self, record: R, *, estimated_tokens: Optional[int] = None, estimated_cost: Optional[int] = None) -> "asyncio.Future[T]":
        if estimated_tokens is not None and estimated_cost is not None:
            raise TypeError("give estimated_tokens or estimated_cost, not both")
        return await super().submit(record, estimated_cost=estimated_tokens if estimated_tokens is not None else estimated_cost)
