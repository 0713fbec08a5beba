"""weir's Python front: Flyte 2-shaped tasks on weir's durable Rust engine.

    import weir as flyte

    env = flyte.TaskEnvironment("demo")

    @env.task
    async def square(x: int) -> int:
        return x * x

    @env.task
    async def main(n: int) -> int:
        return sum(await flyte.map(square, range(n), concurrency=8))

    print(flyte.run(main, n=10).outputs())

Runs are durable (SQLite + a local object store in `.weir`, or `weir.init(state_dir=...)`),
visible to `python -m weir get runs` and the UI, and resumable after a crash.
"""

from __future__ import annotations

from . import errors, extras, io
from ._group import group
from ._map import map
from ._runtime import init
from ._task import (
    Cache,
    ReusePolicy,
    Resources,
    Run,
    RunContext,
    TaskEnvironment,
    TaskTemplate,
    run,
    with_runcontext,
)
from ._trace import trace
from .errors import NonRecoverableError, NotSupportedError, TaskError

__all__ = [
    "Cache",
    "NonRecoverableError",
    "NotSupportedError",
    "ReusePolicy",
    "Resources",
    "Run",
    "RunContext",
    "TaskEnvironment",
    "TaskError",
    "TaskTemplate",
    "ctx",
    "errors",
    "extras",
    "group",
    "init",
    "io",
    "map",
    "run",
    "trace",
    "with_runcontext",
]


class _TaskContextInfo:
    def __init__(self, run: str, action: str, task: str, attempt: int) -> None:
        self.run_name = run
        self.action = action
        self.task = task
        self.attempt = attempt

    def __repr__(self) -> str:
        return f"TaskContext(run={self.run_name!r}, action={self.action!r}, task={self.task!r}, attempt={self.attempt})"


def ctx() -> _TaskContextInfo | None:
    """The run, action, task and attempt of the task this code runs in; None outside a task."""
    from . import _runtime

    state = _runtime.CURRENT.get()
    if state is None:
        return None
    return _TaskContextInfo(*state.ctx.info())
