"""Reusable environments: their tasks run in worker processes (`python -m weir worker ...`),
started and scaled by the engine with the same protocol and credentials as Rust workers."""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from typing import Any, Optional

# Modules (names, or paths of scripts run as __main__) that define tasks of reusable
# environments: a worker imports them to find the tasks.
MODULES: list[str] = []


def _seconds(value: Any, what: str) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{what} must be a positive number of seconds or a timedelta, not {value!r}")
    return float(value)


def check_policy(env: str, policy: Any) -> tuple:
    """The policy as the engine takes it: (min, max, concurrency, idle_ttl, scaledown_ttl)."""
    where = f"TaskEnvironment({env!r}) ReusePolicy"
    replicas = policy.replicas
    if isinstance(replicas, int) and not isinstance(replicas, bool):
        low = high = replicas
    elif isinstance(replicas, tuple) and len(replicas) == 2 and all(isinstance(r, int) for r in replicas):
        low, high = replicas
    else:
        raise ValueError(f"{where}: replicas must be an int or a (min, max) pair, not {replicas!r}")
    if low < 1 or high < low:
        raise ValueError(f"{where}: replicas {replicas!r}: at least 1, and min <= max")
    if not isinstance(policy.concurrency, int) or policy.concurrency < 1:
        raise ValueError(f"{where}: concurrency must be a whole number >= 1, not {policy.concurrency!r}")
    return (
        low,
        high,
        policy.concurrency,
        _seconds(policy.idle_ttl, f"{where}: idle_ttl"),
        _seconds(policy.scaledown_ttl, f"{where}: scaledown_ttl"),
    )


def note_module(module: str) -> None:
    """Records the module of a task of a reusable environment."""
    from . import _runtime

    if module == "__main__":
        main = sys.modules.get("__main__")
        path = getattr(main, "__file__", None)
        if not path:
            raise RuntimeError(
                "tasks of reusable environments must be defined in a module or a script file, "
                "not in an interactive session: their workers import them"
            )
        target = os.path.abspath(path)
    else:
        target = module
    if target in MODULES:
        return
    if _runtime.engine_open() and not in_worker():
        raise RuntimeError(
            f"the tasks of reusable environments must be defined before the first run ({module} "
            "defines one after it): the engine starts their workers with the modules known then"
        )
    MODULES.append(target)


def in_worker() -> bool:
    return os.environ.get("WEIR_IN_WORKER") == "1"


def worker_command() -> Optional[list[str]]:
    """How the engine starts a worker: this interpreter, importing the modules of the tasks."""
    if not MODULES:
        return None
    # The worker finds the same modules: it inherits this process's import path.
    paths = [p for p in sys.path if p]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    command = [sys.executable, "-m", "weir"]
    for m in MODULES:
        command += ["--import", m]
    return command
