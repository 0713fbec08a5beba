"""Task environments, tasks, and how calling a task becomes a child action."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import inspect
import os
import textwrap
import typing
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Callable, Optional, Union

from . import _runtime, _weir
from ._values import converter
from .errors import NotSupportedError, TaskError, from_native


@dataclass
class Resources:
    """What a task asks for (`cpu`, `memory` like "16Gi", `gpu` like "A10G:1"): recorded on the
    environment as for Rust tasks."""

    cpu: Optional[Union[int, float, str]] = None
    memory: Optional[str] = None
    gpu: Optional[Union[str, int]] = None

    def check_fits(self, env: str) -> None:
        """Refuses a request this machine cannot meet: the embedded engine runs every task here
        (it does not reserve resources; workers share the machine)."""
        where = f"TaskEnvironment({env!r}) Resources"
        cpu, memory, gpu = self._native()
        cores = os.cpu_count() or 1
        if cpu is not None and cpu > cores:
            raise NotSupportedError(f"{where}: cpu={self.cpu!r}, but this machine has {cores} cores")
        if memory is not None:
            want = _parse_memory(memory, where)
            have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
            if want > have:
                raise NotSupportedError(f"{where}: memory={memory!r}, but this machine has {have / 2**30:.1f} GiB")
        if gpu is not None:
            count = int(gpu.rsplit(":", 1)[1]) if ":" in gpu else (int(gpu) if gpu.isdigit() else 1)
            found = _gpus()
            if count > found:
                raise NotSupportedError(f"{where}: gpu={self.gpu!r}, but this machine has {found} GPU(s) (nvidia-smi -L)")

    def _native(self) -> tuple:
        cpu = None
        if self.cpu is not None:
            try:
                cpu = float(self.cpu)
            except ValueError:
                raise ValueError(f"Resources(cpu={self.cpu!r}): give a number of cores") from None
        gpu = None if self.gpu is None else str(self.gpu)
        return (cpu, self.memory, gpu)


def _parse_memory(text: str, where: str) -> int:
    units = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4,
             "ki": 1024, "mi": 1024**2, "gi": 1024**3, "ti": 1024**4}
    t = str(text).strip()
    num = t.rstrip("KMGTkmgtiIbB")
    unit = t[len(num):].lower().rstrip("b")
    try:
        return int(float(num) * units[unit])
    except (ValueError, KeyError):
        raise ValueError(f"{where}: memory={text!r}: give a size like '512Mi' or '16Gi'") from None


def _gpus() -> int:
    import shutil
    import subprocess

    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def _seconds(value: Any, what: str) -> float:
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise TypeError(f"{what} must be seconds (int or float) or a timedelta, not {value!r}")


@dataclass
class ReusePolicy:
    """Reusable workers for an environment (Flyte's `ReusePolicy`)."""

    replicas: Union[int, tuple[int, int]] = 1
    concurrency: int = 1
    idle_ttl: Optional[Union[int, float, timedelta]] = None
    scaledown_ttl: Optional[Union[int, float, timedelta]] = None


@dataclass
class Cache:
    """Cache settings of a task or environment (Flyte's `flyte.Cache`)."""

    behavior: str = "auto"
    version_override: Optional[str] = None
    serialize: bool = False
    ignored_inputs: Union[tuple[str, ...], list[str], str] = ()
    salt: str = ""
    policies: Any = None

    def _native(self, where: str) -> tuple:
        if self.behavior not in ("auto", "override", "disable"):
            raise ValueError(
                f"{where}: cache behavior {self.behavior!r}: use 'auto', 'override' or 'disable'"
            )
        if self.serialize:
            raise NotSupportedError(
                f"{where}: Cache(serialize=True) is not supported yet (weir runs identical "
                "cached calls of one run once, but not across concurrent runs)"
            )
        if self.policies is not None:
            raise NotSupportedError(
                f"{where}: Cache(policies=...) is not supported: the version is the function's "
                "source hash ('auto') or version_override"
            )
        if self.behavior == "override" and not self.version_override:
            raise ValueError(f"{where}: Cache(behavior='override') needs version_override")
        ignored = [self.ignored_inputs] if isinstance(self.ignored_inputs, str) else list(self.ignored_inputs)
        return (self.behavior, self.version_override, ignored, self.salt)


def _cache_spec(cache: Any, where: str) -> Optional[tuple]:
    if cache is None:
        return None
    if isinstance(cache, str):
        if cache in ("auto", "disable"):
            return (cache, None, [], "")
        if cache == "override":
            raise ValueError(f"{where}: cache='override' needs a version: use weir.Cache(behavior='override', version_override=...)")
        raise ValueError(f"{where}: cache={cache!r}: use 'auto', 'disable' or weir.Cache(...)")
    if isinstance(cache, Cache):
        return cache._native(where)
    raise TypeError(f"{where}: cache must be 'auto', 'disable' or weir.Cache, not {cache!r}")


class TaskEnvironment:
    """A named environment of tasks: their resources, cache and reuse settings."""

    def __init__(
        self,
        name: str,
        *,
        resources: Optional[Resources] = None,
        reusable: Optional[ReusePolicy] = None,
        reuse_policy: Optional[ReusePolicy] = None,
        cache: Any = "disable",
        max_inline_io: Optional[int] = None,
        image: Any = None,
        depends_on: Any = None,
        env_vars: Optional[dict] = None,
        secrets: Any = None,
    ) -> None:
        if not isinstance(name, str) or not name or not all(c.isalnum() or c in "-_" for c in name):
            raise ValueError(f"TaskEnvironment name {name!r}: use letters, digits, '-' and '_'")
        if image is not None:
            raise NotSupportedError(
                f"TaskEnvironment({name!r}, image=...): weir runs tasks in this Python environment; "
                "it builds no images. Remove image= (install the packages here)"
            )
        if depends_on:
            raise NotSupportedError(
                f"TaskEnvironment({name!r}, depends_on=...): weir has no deploy step for it to order; remove it"
            )
        if env_vars or secrets:
            raise NotSupportedError(
                f"TaskEnvironment({name!r}): env_vars and secrets are not supported yet (set them in this process)"
            )
        if reusable is not None and reuse_policy is not None:
            raise ValueError(f"TaskEnvironment({name!r}): give reusable= or reuse_policy=, not both")
        self.name = name
        if resources is not None:
            resources.check_fits(name)
        self.resources = resources
        self.reuse_policy = reusable if reusable is not None else reuse_policy
        self._reuse_spec = None
        if self.reuse_policy is not None:
            from ._workers import check_policy

            self._reuse_spec = check_policy(name, self.reuse_policy)
        self.cache = cache
        self._cache_spec = _cache_spec(cache, f"TaskEnvironment({name!r})")
        if max_inline_io is not None and (not isinstance(max_inline_io, int) or max_inline_io <= 0):
            raise ValueError(f"TaskEnvironment({name!r}): max_inline_io must be a positive number of bytes")
        self.max_inline_io = max_inline_io
        self.tasks: dict[str, TaskTemplate] = {}

    def task(
        self,
        func: Optional[Callable] = None,
        *,
        retries: Any = 0,
        timeout: Any = None,
        cache: Any = None,
        max_inline_io_bytes: Optional[int] = None,
        short_name: Optional[str] = None,
    ) -> Any:
        """Makes a function a task of this environment: `@env.task` or `@env.task(retries=2)`."""

        def wrap(f: Callable) -> TaskTemplate:
            t = TaskTemplate(
                self,
                f,
                retries=retries,
                timeout=timeout,
                cache=cache,
                max_inline_io=max_inline_io_bytes,
                short_name=short_name,
            )
            self.tasks[t.short_name] = t
            return t

        return wrap(func) if func is not None else wrap

    def __repr__(self) -> str:
        return f"TaskEnvironment({self.name!r})"


def _retries(value: Any, where: str) -> int:
    count = getattr(value, "count", value)
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise ValueError(f"{where}: retries must be a whole number >= 0, not {value!r}")
    return count


def _timeout(value: Any, where: str) -> Optional[float]:
    if value is None:
        return None
    if hasattr(value, "max_runtime"):
        if getattr(value, "max_queued_time", None) is not None:
            raise NotSupportedError(f"{where}: Timeout(max_queued_time=...) is not supported yet")
        value = value.max_runtime
    seconds = _seconds(value, f"{where}: timeout")
    if seconds <= 0:
        raise ValueError(f"{where}: timeout must be positive")
    return seconds


def _source_hash(func: Callable) -> str:
    try:
        source = textwrap.dedent(inspect.getsource(func))
    except (OSError, TypeError):
        code = func.__code__
        source = repr((code.co_code, code.co_consts, code.co_names))
    return hashlib.blake2b(source.encode(), digest_size=16).hexdigest()


class TaskTemplate:
    """A task: call it inside a task (and await it) to make a child action; call it outside a
    run to simply run the function."""

    def __init__(
        self,
        env: TaskEnvironment,
        func: Callable,
        *,
        retries: Any,
        timeout: Any,
        cache: Any,
        max_inline_io: Optional[int],
        short_name: Optional[str],
    ) -> None:
        self.env = env
        self.func = func
        self.short_name = short_name or func.__name__
        self.name = f"{env.name}.{self.short_name}"
        where = f"task {self.name}"
        if inspect.isasyncgenfunction(func):
            raise TypeError(f"{where}: a task returns a value; an async generator can be a @weir.trace")
        self.is_async = inspect.iscoroutinefunction(func)
        self.signature = inspect.signature(func)
        for p in self.signature.parameters.values():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise TypeError(f"{where}: *args and **kwargs parameters are not supported: name each input")
        try:
            hints = typing.get_type_hints(func)
        except Exception:  # noqa: BLE001 - unresolvable annotations: no conversion
            hints = {}
        self._param_convs = {
            name: converter(hints.get(name, inspect.Parameter.empty)) for name in self.signature.parameters
        }
        self._param_convs = {k: v for k, v in self._param_convs.items() if v is not None}
        self._output_conv = converter(hints.get("return", inspect.Parameter.empty))
        spec = _cache_spec(cache, where)
        if spec is not None:
            unknown = sorted(set(spec[2]) - set(self.signature.parameters))
            if unknown:
                raise ValueError(f"{where}: cache ignored_inputs {unknown} are not parameters of the task")
        interface = ", ".join(
            f"{n}: {hints.get(n, 'Any')}" for n in self.signature.parameters
        ) + f" -> {hints.get('return', 'Any')}"
        self._native = _weir.register_task(
            self.short_name,
            func.__module__,
            env.name,
            list(self.signature.parameters),
            _source_hash(func),
            interface,
            retries=_retries(retries, where),
            timeout_s=_timeout(timeout, where),
            cache=_cache_spec(cache, where),
            env_cache=env._cache_spec,
            inline_limit=max_inline_io,
            env_inline_limit=env.max_inline_io,
            resources=env.resources._native() if env.resources else None,
            reuse=env._reuse_spec,
        )
        if env._reuse_spec is not None:
            from ._workers import note_module

            note_module(func.__module__)
        _runtime.TASKS[self.name] = self
        functools.update_wrapper(self, func)

    # Inputs and outputs.

    def _bind(self, args: tuple, kwargs: dict) -> dict:
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as e:
            raise TypeError(f"task {self.name}: {e}") from None
        bound.apply_defaults()
        return bound.arguments

    def _encode_inputs(self, args: tuple, kwargs: dict) -> bytes:
        return _weir.encode(self._bind(args, kwargs), f"inputs of task {self.name}")

    def _decode_inputs(self, data: bytes) -> dict:
        values = _weir.decode(data, f"inputs of task {self.name}")
        unknown = set(values) - set(self.signature.parameters)
        if unknown:
            raise TypeError(f"task {self.name} has no parameter(s) {sorted(unknown)}")
        for name, conv in self._param_convs.items():
            if name in values:
                values[name] = conv(values[name])
        return values

    def _decode_output(self, data: bytes) -> Any:
        value = _weir.decode(data, f"output of task {self.name}")
        return self._output_conv(value) if self._output_conv else value

    # Calls.

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        state = _runtime.CURRENT.get()
        if state is None:
            # Outside a run: the plain function.
            return self.func(*args, **kwargs)
        self._check_not_in_trace(state)
        inputs = self._encode_inputs(args, kwargs)
        group = _runtime.GROUP.get()
        if state.blocking:
            if state.cancelled:
                raise TaskError("cancelled", f"task {self.name} was not called: this attempt was cancelled (timeout or run cancelled)")
            try:
                data = state.ctx.call_blocking(self._native, inputs, group)
            except _weir.TaskFailed as e:
                raise from_native(e) from None
            return self._decode_output(data)
        return self._call_async(state, inputs, group)

    def aio(self, *args: Any, **kwargs: Any) -> Any:
        """The call as an awaitable, whether the task is `async def` or `def`."""
        state = _runtime.CURRENT.get()
        if state is None:
            if self.is_async:
                return self.func(*args, **kwargs)
            return asyncio.to_thread(self.func, *args, **kwargs)
        if state.blocking:
            raise RuntimeError(f"task {self.name}: .aio() is for async task bodies; call it directly here")
        self._check_not_in_trace(state)
        return self._call_async(state, self._encode_inputs(args, kwargs), _runtime.GROUP.get())

    def _check_not_in_trace(self, state: _runtime.TaskState) -> None:
        if state.trace is not None:
            raise RuntimeError(
                f"task {self.name} was called from inside trace {state.trace}; traces run in their "
                "task's process and may not call tasks"
            )

    async def _call_async(self, state: _runtime.TaskState, inputs: bytes, group: Optional[str]) -> Any:
        lp = _runtime.loop()
        token = state.ctx.call(self._native, inputs, group)
        fut = lp.expect(token)
        try:
            ok, payload = await fut
        except asyncio.CancelledError:
            lp.pending.pop(token, None)
            _weir.cancel_call(token)
            raise
        if not ok:
            raise TaskError(*payload)
        return self._decode_output(payload)

    def __repr__(self) -> str:
        return f"<weir task {self.name}>"


@dataclass
class _RunOptions:
    name: Optional[str] = None
    overwrite_cache: bool = False
    disable_run_cache: bool = False
    cache_lookup_scope: str = "global"
    max_action_concurrency: Optional[int] = None
    extra: dict = field(default_factory=dict)


class Run:
    """A run started from Python: its name, and its outputs once it finished."""

    def __init__(self, native: Any, template: TaskTemplate) -> None:
        self._native = native
        self._template = template
        self.name: str = native.name

    @property
    def url(self) -> str:
        return f"weir get actions {self.name}  (or the UI: python -m weir ui)"

    def wait(self) -> None:
        """Blocks until the run finished; raises `TaskError` if it failed."""
        self.outputs()

    def outputs(self) -> Any:
        """Blocks until the run finished and returns its output."""
        if _runtime.loop().in_loop():
            raise RuntimeError("Run.outputs() blocks: inside a task or on weir's loop, await the run instead")
        try:
            data = self._native.wait()
        except _weir.TaskFailed as e:
            raise from_native(e) from None
        return self._template._decode_output(data)

    async def _outputs_async(self) -> Any:
        if _runtime.loop().in_loop():
            token = self._native.wait_token()
            ok, payload = await _runtime.loop().expect(token)
            if not ok:
                raise TaskError(*payload)
            return self._template._decode_output(payload)
        return await asyncio.to_thread(self.outputs)

    def __await__(self) -> Any:
        return self._outputs_async().__await__()

    def abort(self) -> None:
        self._native.abort()

    def done(self) -> bool:
        return self._native.is_done()

    def __repr__(self) -> str:
        return f"<weir run {self.name}>"


class RunContext:
    """`weir.with_runcontext(...)`: settings for the runs it starts."""

    def __init__(self, options: _RunOptions) -> None:
        self._options = options

    def run(self, task: TaskTemplate, *args: Any, **kwargs: Any) -> Run:
        """Starts a run of `task` with these inputs and returns it (running)."""
        if not isinstance(task, TaskTemplate):
            raise TypeError(f"run() takes a task (decorated with @env.task), not {task!r}")
        if _runtime.CURRENT.get() is not None:
            raise RuntimeError("run() starts a run; inside a task, call (await) the task instead")
        from ._workers import in_worker

        if in_worker():
            raise RuntimeError(
                "a worker process imported a module that starts a run at import: guard the run "
                "with `if __name__ == \"__main__\":`"
            )
        o = self._options
        inputs = task._encode_inputs(args, kwargs)
        native = _runtime.engine().start_run(
            task._native,
            inputs,
            name=o.name,
            overwrite_cache=o.overwrite_cache,
            disable_cache=o.disable_run_cache,
            cache_lookup_scope=o.cache_lookup_scope,
            max_action_concurrency=o.max_action_concurrency,
        )
        return Run(native, task)

    async def _run_aio(self, task: TaskTemplate, *args: Any, **kwargs: Any) -> Run:
        return await asyncio.to_thread(self.run, task, *args, **kwargs)


def with_runcontext(
    *,
    name: Optional[str] = None,
    overwrite_cache: bool = False,
    disable_run_cache: bool = False,
    cache_lookup_scope: str = "global",
    max_action_concurrency: Optional[int] = None,
    raw_data_storage: Optional[str] = None,
    mode: Optional[str] = None,
    **unknown: Any,
) -> RunContext:
    """Settings for runs: `weir.with_runcontext(name="nightly").run(main, x=1)`."""
    if unknown:
        raise TypeError(f"with_runcontext() got unknown settings {sorted(unknown)}")
    if mode not in (None, "local"):
        raise NotSupportedError(
            f"with_runcontext(mode={mode!r}): the Python front runs on the embedded engine ('local'); "
            "remote runs go through the Rust SDK's RemoteRunner for now"
        )
    if raw_data_storage is not None:
        raise NotSupportedError(
            "with_runcontext(raw_data_storage=...) is not supported yet: the Python front passes "
            "values inline; its object store is the engine's (the state directory)"
        )
    if cache_lookup_scope not in ("global", "project-domain", "project_domain"):
        raise ValueError(f"cache_lookup_scope {cache_lookup_scope!r}: use 'global' or 'project-domain'")
    return RunContext(
        _RunOptions(
            name=name,
            overwrite_cache=overwrite_cache,
            disable_run_cache=disable_run_cache,
            cache_lookup_scope=cache_lookup_scope,
            max_action_concurrency=max_action_concurrency,
        )
    )


class _RunFn:
    """`weir.run(task, **inputs)` and `await weir.run.aio(task, **inputs)`."""

    def __call__(self, task: TaskTemplate, *args: Any, **kwargs: Any) -> Run:
        return with_runcontext().run(task, *args, **kwargs)

    async def aio(self, task: TaskTemplate, *args: Any, **kwargs: Any) -> Run:
        return await with_runcontext()._run_aio(task, *args, **kwargs)


run = _RunFn()
