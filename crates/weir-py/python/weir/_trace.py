"""`@weir.trace`: a checkpointed function inside a task; replayed on a retry or after a crash."""

from __future__ import annotations

import functools
import inspect
import typing
from typing import Any, Callable

from . import _runtime, _weir
from ._values import converter
from .errors import TaskError


def _refuse_in_def(state: Any, name: str) -> None:
    if state.blocking:
        raise RuntimeError(
            f"trace {name} was called in a `def` task: traces are recorded in async task bodies; "
            "make the task `async def` (or call the function without @weir.trace)"
        )


def trace(func: Callable) -> Callable:
    """Marks an `async def` function or async generator as a trace: inside a task, its output
    (or every item it yields) is recorded when it finishes; a retry or a resumed run replays the
    record instead of running it again. Outside a task it simply runs."""
    name = func.__qualname__.replace("<locals>.", "")
    _weir.register_trace(name, func.__module__)
    signature = inspect.signature(func)
    try:
        hints = typing.get_type_hints(func)
    except Exception:  # noqa: BLE001
        hints = {}
    ret = hints.get("return", inspect.Parameter.empty)

    def encode_inputs(args: tuple, kwargs: dict) -> bytes:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return _weir.encode(bound.arguments, f"inputs of trace {name}")

    async def open_trace(state: Any, inputs: bytes) -> tuple:
        lp = _runtime.loop()
        token = state.ctx.open_trace(name, inputs)
        how, payload = await lp.expect(token)
        return token, how, payload

    async def finish(token: int, ok: bool, payload: Any) -> None:
        lp = _runtime.loop()
        done = _weir.finish_trace(token, ok, payload)
        committed, why = await lp.expect(done)
        if not committed:
            raise TaskError(*why)

    def failure(e: BaseException) -> tuple:
        return (_runtime._kind_of(e), _runtime._describe(e))

    if inspect.isasyncgenfunction(func):
        item_type = typing.get_args(ret)[0] if typing.get_args(ret) else inspect.Parameter.empty
        conv = converter(item_type)

        @functools.wraps(func)
        async def gen_wrapper(*args: Any, **kwargs: Any) -> Any:
            state = _runtime.CURRENT.get()
            if state is None:
                async for item in func(*args, **kwargs):
                    yield item
                return
            _refuse_in_def(state, name)
            token, how, payload = await open_trace(state, encode_inputs(args, kwargs))
            if how == "replay":
                for item in _weir.decode(payload, f"recorded items of trace {name}"):
                    yield conv(item) if conv else item
                return
            if how == "failed":
                raise TaskError(*payload)
            recorded: list = []
            items = func(*args, **kwargs)
            settled = False
            try:
                while True:
                    # The trace's own code runs marked as such (it may not call tasks); the code
                    # consuming its items between them does not.
                    outer = _runtime.CURRENT.set(_runtime.TaskState(state.ctx, state.template, trace=name))
                    try:
                        item = await items.__anext__()
                    except StopAsyncIteration:
                        break
                    except Exception as e:
                        settled = True
                        await finish(token, False, failure(e))
                        raise
                    finally:
                        _runtime.CURRENT.reset(outer)
                    recorded.append(item)
                    yield item
                settled = True
                await finish(token, True, _weir.encode(recorded, f"items of trace {name}"))
            except BaseException:
                # Cancelled, or the consumer stopped early: nothing is recorded (a retry runs it
                # again), and the open trace is let go.
                if not settled:
                    _weir.abandon_trace(token)
                raise

        return gen_wrapper

    if not inspect.iscoroutinefunction(func):
        raise TypeError(f"@weir.trace is for async functions and async generators; {name} is neither")
    conv = converter(ret)

    @functools.wraps(func)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        state = _runtime.CURRENT.get()
        if state is None:
            return await func(*args, **kwargs)
        _refuse_in_def(state, name)
        token, how, payload = await open_trace(state, encode_inputs(args, kwargs))
        if how == "replay":
            value = _weir.decode(payload, f"recorded output of trace {name}")
            return conv(value) if conv else value
        if how == "failed":
            raise TaskError(*payload)
        outer = _runtime.CURRENT.set(_runtime.TaskState(state.ctx, state.template, trace=name))
        try:
            out = await func(*args, **kwargs)
        except Exception as e:
            _runtime.CURRENT.reset(outer)
            await finish(token, False, failure(e))
            raise
        except BaseException:
            # Cancelled: nothing is recorded (a retry runs it again).
            _runtime.CURRENT.reset(outer)
            _weir.abandon_trace(token)
            raise
        _runtime.CURRENT.reset(outer)
        await finish(token, True, _weir.encode(out, f"output of trace {name}"))
        return out

    return wrapper
