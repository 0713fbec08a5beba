"""Reusable environments: worker processes for Python tasks."""

from __future__ import annotations

from typing import Any

from .errors import NotSupportedError


def check_policy(env: str, policy: Any) -> None:
    raise NotSupportedError(
        f"TaskEnvironment({env!r}): reusable environments (worker processes) are not supported "
        "by the Python front yet; without a policy its tasks run in this process on asyncio"
    )
