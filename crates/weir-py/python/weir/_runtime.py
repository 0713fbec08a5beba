"""The event loop that runs task bodies, and the engine of this process.

Task bodies run on one asyncio loop in a thread of its own ("weir-tasks"). The engine (Rust,
tokio threads) hands work to it through `_weir.drain()`: it writes a byte to a socket the loop
watches, and the loop takes every pending event at once. Child calls and traces go the other
way as short native calls; their results come back as events keyed by a token.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import os
import selectors
import threading
import traceback
from dataclasses import dataclass
from typing import Any, Optional

from . import _weir
from .errors import TaskError

# Task bodies by full name (`env.task`), filled by `TaskEnvironment.task`.
TASKS: dict[str, Any] = {}


@dataclass
class TaskState:
    """What a running task body knows of itself (a context variable)."""

    ctx: Any  # _weir.Context
    template: Any
    # A plain `def` body runs on a thread of its own and makes blocking calls.
    blocking: bool = False
    # The trace this code runs in, if any: traces may not call tasks.
    trace: Optional[str] = None
    # The engine gave up on this attempt (timeout, cancelled run): a `def` body still running on
    # its thread may not start anything more.
    cancelled: bool = False


CURRENT: contextvars.ContextVar[Optional[TaskState]] = contextvars.ContextVar(
    "weir_task", default=None
)
GROUP: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar("weir_group", default=None)


def _spin_us() -> int:
    """Microseconds the loop waits for engine events (yielding its thread) before it sleeps in
    epoll: `WEIR_PY_SPIN_US`, default 500; 0 turns the wait off."""
    text = os.environ.get("WEIR_PY_SPIN_US", "500")
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 1_000_000:
        raise ValueError(f"WEIR_PY_SPIN_US={text!r}: give a whole number of microseconds, 0 to 1000000")
    return value


SPIN_US = _spin_us()


class _SpinSelector(selectors.DefaultSelector):  # type: ignore[misc, valid-type]
    """Before the loop sleeps, it waits a little for the engine's next event without sleeping:
    waking a sleeping thread costs more than the rest of a hand-over."""

    def select(self, timeout: Optional[float] = None) -> Any:
        if SPIN_US > 0 and (timeout is None or timeout > 0):
            if _weir.spin_wait(SPIN_US if timeout is None else min(SPIN_US, int(timeout * 1e6))):
                timeout = 0
        return super().select(timeout)


class Loop:
    """The loop thread and the futures waiting on engine events."""

    def __init__(self) -> None:
        self.loop = asyncio.SelectorEventLoop(_SpinSelector())
        self.pending: dict[int, asyncio.Future] = {}
        self.running: dict[int, asyncio.Task] = {}
        # What each running body knows of itself, by token (a cancelled `def` body is told).
        self.states: dict[int, TaskState] = {}
        ready = threading.Event()
        self.thread = threading.Thread(
            target=self._run, args=(ready,), name="weir-tasks", daemon=True
        )
        self.thread.start()
        ready.wait()

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.add_reader(_weir.wake_fd(), self._on_wake)
        ready.set()
        self.loop.run_forever()

    def _on_wake(self) -> None:
        for event in _weir.drain():
            kind = event[0]
            if kind == "start":
                _, token, task, ctx, inputs = event
                self.running[token] = self.loop.create_task(_run_body(self, token, task, ctx, inputs))
            elif kind == "cancel":
                state = self.states.pop(event[1], None)
                if state is not None:
                    state.cancelled = True
                body = self.running.pop(event[1], None)
                if body is not None:
                    body.cancel()
            else:
                fut = self.pending.pop(event[1], None)
                if fut is not None and not fut.done():
                    fut.set_result(event[2:])

    def expect(self, token: int) -> asyncio.Future:
        """A future for the event of `token` (called on the loop)."""
        fut = self.loop.create_future()
        self.pending[token] = fut
        return fut

    def in_loop(self) -> bool:
        return threading.current_thread() is self.thread


_LOOP: Optional[Loop] = None
_LOOP_LOCK = threading.Lock()


def loop() -> Loop:
    global _LOOP
    if _LOOP is None:
        with _LOOP_LOCK:
            if _LOOP is None:
                _LOOP = Loop()
    return _LOOP


async def _run_body(lp: Loop, token: int, name: str, ctx: Any, inputs: bytes) -> None:
    template = TASKS.get(name)
    try:
        if template is None:
            raise LookupError(
                f"task {name} is not defined in this Python process (import the module that defines it)"
            )
        kwargs = template._decode_inputs(inputs)
        if template.is_async:
            state = TaskState(ctx, template)
            lp.states[token] = state
            CURRENT.set(state)
            out = await template.func(**kwargs)
        else:
            state = TaskState(ctx, template, blocking=True)
            lp.states[token] = state
            context = contextvars.copy_context()
            context.run(CURRENT.set, state)
            out = await _on_own_thread(lp, lambda: context.run(template.func, **kwargs))
        data = _weir.encode(out, f"output of task {name}")
        _weir.complete(token, True, data)
    except asyncio.CancelledError:
        _weir.complete(token, False, ("cancelled", f"task {name} was cancelled"))
    except TaskError as e:
        _weir.complete(token, False, _child_failure(e))
    except BaseException as e:  # noqa: BLE001 - every failure goes to the engine
        _weir.complete(token, False, (_kind_of(e), _describe(e)))
    finally:
        lp.running.pop(token, None)
        lp.states.pop(token, None)


def _on_own_thread(lp: Loop, fn: Any) -> asyncio.Future:
    """Runs a `def` body on a thread of its own (it blocks on its children, so a bounded pool
    could fill with parents waiting for children that need a thread; the engine bounds how
    many run at once)."""
    fut = lp.loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if not fut.done():
            (fut.set_result if ok else fut.set_exception)(value)

    def body() -> None:
        try:
            out = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the loop
            lp.loop.call_soon_threadsafe(settle, False, e)
        else:
            lp.loop.call_soon_threadsafe(settle, True, out)

    threading.Thread(target=body, name="weir-def-task", daemon=True).start()
    return fut


# Error kinds the engine never retries.
_FINAL = {"non_recoverable", "deadline", "too_large", "codec", "cancelled"}


def _child_failure(e: TaskError) -> tuple:
    """A body ended by a child's failure: `child_failed`, or `non_recoverable` when the child's
    own kind is never retried (a retry would only replay the same failure)."""
    child_kind = None
    if e._child:
        try:
            child_kind = json.loads(e._child).get("kind")
        except ValueError:
            child_kind = None
    if child_kind in _FINAL or (e._child is None and e.kind in _FINAL):
        return ("non_recoverable", _describe(e))
    return ("child_failed", _describe(e), e._child)


def _kind_of(e: BaseException) -> str:
    from .errors import NonRecoverableError

    return "non_recoverable" if isinstance(e, NonRecoverableError) else "user"


def _describe(e: BaseException) -> str:
    """The exception with its traceback, as `get io` shows it."""
    return "".join(traceback.format_exception(type(e), e, e.__traceback__)).rstrip()


_ENGINE: Any = None
_ENGINE_DIR: Optional[str] = None
_ENGINE_LOCK = threading.Lock()


def init(state_dir: Optional[str] = None) -> None:
    """Opens the embedded engine with its state in `state_dir` (default: `$WEIR_STATE_DIR`,
    else `.weir`, as the CLI). Called by the first run when not called before."""
    global _ENGINE, _ENGINE_DIR
    path = state_dir or os.environ.get("WEIR_STATE_DIR") or ".weir"
    with _ENGINE_LOCK:
        if _ENGINE is not None:
            if os.path.abspath(path) != os.path.abspath(_ENGINE_DIR or ""):
                raise RuntimeError(
                    f"weir is already initialised with state directory {_ENGINE_DIR!r}; "
                    f"one process uses one (asked for {path!r})"
                )
            return
        loop()
        from ._workers import worker_command

        _ENGINE = _weir.Engine.open(path, worker_command())
        _ENGINE_DIR = path


def engine_open() -> bool:
    return _ENGINE is not None


def engine() -> Any:
    if _ENGINE is None:
        init()
    return _ENGINE
