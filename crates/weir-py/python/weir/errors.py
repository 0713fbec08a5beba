"""Errors raised by weir's Python front."""

from __future__ import annotations


class WeirError(Exception):
    """Base of weir's errors."""


class TaskError(WeirError):
    """A child task, trace or run failed.

    `kind` is the engine's error kind (`user`, `timeout`, `child_failed`, `cancelled`, ...) and
    `message` what the engine recorded: for a Python exception, its traceback.
    """

    def __init__(self, kind: str, message: str, child: "str | None" = None) -> None:
        super().__init__(f"[{kind}] {message}")
        self.kind = kind
        self.message = message
        # The failed child's record (JSON), when a child call failed: handed back to the engine
        # if this error ends the task, so the parent is retried only if the child's kind allows.
        self._child = child


class NonRecoverableError(WeirError):
    """Raised by a task body: fail now, without using the task's retries."""


class NotSupportedError(WeirError, NotImplementedError):
    """A Flyte 2 feature that weir's Python front does not have (yet): refused, never ignored."""


def from_native(e: BaseException) -> BaseException:
    """A `_weir.TaskFailed` as a `TaskError`."""
    from . import _weir

    if isinstance(e, _weir.TaskFailed) and len(e.args) in (2, 3):
        return TaskError(*e.args)
    return e
