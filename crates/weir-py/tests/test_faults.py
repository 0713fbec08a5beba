"""The faults of Flyte 2's local mode, as tests weir's Python front must pass."""

import asyncio
import json
import os
import threading
import time

import pytest

import weir as flyte
from conftest import weir_cli

env = flyte.TaskEnvironment("faults")

_live = {"now": 0, "peak": 0}
_lock = threading.Lock()


@env.task
async def slow_child(i: int) -> int:
    with _lock:
        _live["now"] += 1
        _live["peak"] = max(_live["peak"], _live["now"])
    await asyncio.sleep(0.2)
    with _lock:
        _live["now"] -= 1
    return i * 2


@env.task
async def fan_out(n: int, limit: int) -> list[int]:
    return await flyte.map(slow_child, range(n), concurrency=limit)


def test_map_concurrency_is_honoured_and_fast():
    _live["peak"] = 0
    started = time.perf_counter()
    out = flyte.run(fan_out, n=20, limit=5).outputs()
    took = time.perf_counter() - started
    assert out == [i * 2 for i in range(20)]
    # 20 children of 200 ms, 5 at a time: 4 waves (0.8 s), never more than 5 running.
    assert _live["peak"] == 5, _live
    assert 0.8 <= took < 4.0, took


@env.task(timeout=0.3, retries=1)
async def sleeps_too_long(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "woke"


def test_timeout_is_enforced_and_retried():
    started = time.perf_counter()
    run = flyte.run(sleeps_too_long, seconds=30.0)
    with pytest.raises(flyte.TaskError) as err:
        run.outputs()
    assert err.value.kind == "timeout", err.value
    # Two attempts of 0.3 s, not 30 s.
    assert time.perf_counter() - started < 10
    actions = json.loads(weir_cli("get", "actions", run.name, "-o", "json").stdout)
    root = [a for a in actions if a["id"] == "a0"][0]
    assert root["attempts"] == 2, root


_computed = {"n": 0}


@env.task(cache=flyte.Cache(behavior="override", version_override="v1"))
async def expensive(x: int) -> dict:
    _computed["n"] += 1
    return {"x": x, "square": x * x}


@env.task(cache=flyte.Cache(behavior="override", version_override="v2"))
async def expensive_v2(x: int) -> dict:
    _computed["n"] += 1
    return {"x": x, "square": x * x}


@env.task
async def uses_cache(x: int) -> dict:
    return await expensive(x)


def test_version_override_cache_is_read_back():
    _computed["n"] = 0
    first = flyte.run(uses_cache, x=7).outputs()
    second = flyte.run(uses_cache, x=7).outputs()
    assert first == second == {"x": 7, "square": 49}
    assert _computed["n"] == 1, "the second run must read the cached output"
    # overwrite_cache runs it again.
    flyte.with_runcontext(overwrite_cache=True).run(uses_cache, x=7).outputs()
    assert _computed["n"] == 2
    # disable_run_cache neither reads nor writes.
    flyte.with_runcontext(disable_run_cache=True).run(uses_cache, x=7).outputs()
    assert _computed["n"] == 3


_attempts = {"n": 0}


@flyte.trace
async def record_once(x: int) -> int:
    _attempts["trace"] = _attempts.get("trace", 0) + 1
    return x + 100


@flyte.trace
async def numbers(n: int):
    _attempts["gen"] = _attempts.get("gen", 0) + 1
    for i in range(n):
        yield {"i": i, "at": time.time()}


@env.task(retries=2)
async def flaky(x: int) -> dict:
    _attempts["n"] += 1
    traced = await record_once(x)
    items = [item async for item in numbers(3)]
    if flyte.ctx().attempt == 1:
        raise RuntimeError("first attempt fails after its traces")
    return {"traced": traced, "items": items, "attempt": flyte.ctx().attempt}


def test_traces_are_replayed_on_retry():
    _attempts.clear()
    _attempts["n"] = 0
    out = flyte.run(flaky, x=1).outputs()
    assert out["attempt"] == 2 and _attempts["n"] == 2
    assert out["traced"] == 101
    # Both traces ran once: the retry replayed them, the generator's items exactly.
    assert _attempts["trace"] == 1 and _attempts["gen"] == 1, _attempts
    assert [item["i"] for item in out["items"]] == [0, 1, 2]


@env.task
async def fails(x: int) -> int:
    raise ValueError(f"bad input {x}")


@env.task
async def calls_failing(x: int) -> str:
    try:
        await fails(x)
    except flyte.TaskError as e:
        return f"caught {e.kind}: {'ValueError: bad input 3' in e.message}"
    return "no error"


def test_a_child_exception_reaches_the_parent_with_its_traceback():
    assert flyte.run(calls_failing, x=3).outputs() == "caught child_failed: True"
    run = flyte.run(fails, x=4)
    with pytest.raises(flyte.TaskError) as err:
        run.outputs()
    assert "ValueError: bad input 4" in err.value.message
    assert "Traceback" in err.value.message
    io = json.loads(weir_cli("get", "io", run.name, "a0", "-o", "json").stdout)
    text = json.dumps(io)
    assert "ValueError: bad input 4" in text and "test_faults.py" in text, text


@env.task(retries=3)
async def refuses(x: int) -> int:
    raise flyte.NonRecoverableError("never retry this")


def test_non_recoverable_errors_are_not_retried():
    run = flyte.run(refuses, x=1)
    with pytest.raises(flyte.TaskError) as err:
        run.outputs()
    assert err.value.kind == "non_recoverable"
    actions = json.loads(weir_cli("get", "actions", run.name, "-o", "json").stdout)
    assert actions[0]["attempts"] == 1


def test_settings_weir_cannot_honour_are_refused():
    with pytest.raises(flyte.NotSupportedError, match="raw_data_storage"):
        flyte.with_runcontext(raw_data_storage="s3://bucket/path")
    with pytest.raises(flyte.NotSupportedError, match="image"):
        flyte.TaskEnvironment("imaged", image="python:3.11")
    with pytest.raises(flyte.NotSupportedError, match="serialize"):
        flyte.TaskEnvironment("serial", cache=flyte.Cache(behavior="auto", serialize=True))
    with pytest.raises(TypeError, match="unknown settings"):
        flyte.with_runcontext(nmae="typo")
    with pytest.raises(ValueError, match="cache behavior"):
        flyte.TaskEnvironment("badcache", cache=flyte.Cache(behavior="sometimes"))
    with pytest.raises(flyte.NotSupportedError, match="from_local"):
        flyte.io.File.new_remote()


def test_resources_must_fit_this_machine():
    flyte.TaskEnvironment("fits", resources=flyte.Resources(cpu=1, memory="256Mi"))
    with pytest.raises(flyte.NotSupportedError, match="cores"):
        flyte.TaskEnvironment("cpus", resources=flyte.Resources(cpu=100_000))
    with pytest.raises(flyte.NotSupportedError, match="GiB"):
        flyte.TaskEnvironment("mem", resources=flyte.Resources(memory="100000Ti"))
    with pytest.raises(ValueError, match="size like"):
        flyte.TaskEnvironment("badmem", resources=flyte.Resources(memory="lots"))


groups_env = flyte.TaskEnvironment("groups")


@groups_env.task
def plain_child(x: int) -> int:
    return x + 1


@groups_env.task
def plain_parent(n: int) -> list[int]:
    # A `def` body: calls block and return values; map is iterated.
    first = plain_child(0)
    with flyte.group("singles"):
        second = plain_child(first)
    rest = list(flyte.map(plain_child, range(n), group_name="mapped"))
    return [first, second, *rest]


def test_def_tasks_groups_and_map_in_a_def_body():
    run = flyte.run(plain_parent, n=3)
    assert run.outputs() == [1, 2, 1, 2, 3]
    actions = json.loads(weir_cli("get", "actions", run.name, "-o", "json").stdout)
    groups = sorted(a.get("group") or "-" for a in actions if a["id"] != "a0")
    assert groups == ["-", "mapped", "mapped", "mapped", "singles"], groups


def test_runs_can_be_awaited_from_asyncio_code():
    async def go():
        run = await flyte.run.aio(plain_child, x=41)
        return run.name, await run

    name, out = asyncio.run(go())
    assert out == 42
    runs = {r["name"]: r for r in json.loads(weir_cli("get", "runs", "-o", "json").stdout)}
    assert runs[name]["status"] == "succeeded"


def test_the_spin_setting_is_obeyed_or_refused(tmp_path):
    import subprocess
    import sys

    script = (
        "import weir, weir._runtime as r\n"
        "e = weir.TaskEnvironment('spin')\n"
        "@e.task\nasync def one(x: int) -> int:\n    return x + 1\n"
        "print(r.SPIN_US, weir.run(one, x=1).outputs())"
    )
    env = dict(os.environ, WEIR_STATE_DIR=str(tmp_path))
    for value, expect in (("0", "0 2"), ("120", "120 2")):
        out = subprocess.run([sys.executable, "-c", script], env=dict(env, WEIR_PY_SPIN_US=value), capture_output=True, text=True)
        assert out.stdout.strip() == expect, out.stderr
    bad = subprocess.run([sys.executable, "-c", script], env=dict(env, WEIR_PY_SPIN_US="fast"), capture_output=True, text=True)
    assert bad.returncode != 0 and "WEIR_PY_SPIN_US='fast'" in bad.stderr


_keyed = {"n": 0}


@env.task(cache=flyte.Cache(behavior="auto", ignored_inputs=("note",), salt="s1"))
async def keyed(x: int, note: str) -> int:
    _keyed["n"] += 1
    return x * 3


@env.task(cache=flyte.Cache(behavior="auto", ignored_inputs="note", salt="s2"))
async def keyed_other_salt(x: int, note: str) -> int:
    _keyed["n"] += 1
    return x * 3


@env.task
async def uses_keyed(x: int, note: str, salted: bool) -> int:
    return await (keyed_other_salt(x, note) if salted else keyed(x, note))


def test_ignored_inputs_salt_and_lookup_scope():
    _keyed["n"] = 0
    assert flyte.run(uses_keyed, x=2, note="first", salted=False).outputs() == 6
    # `note` is left out of the key: another note is a hit.
    assert flyte.run(uses_keyed, x=2, note="second", salted=False).outputs() == 6
    assert _keyed["n"] == 1
    assert flyte.with_runcontext(cache_lookup_scope="project-domain").run(uses_keyed, x=2, note="third", salted=False).outputs() == 6
    assert _keyed["n"] == 1
    with pytest.raises(ValueError, match="cache_lookup_scope"):
        flyte.with_runcontext(cache_lookup_scope="everywhere")
    # A task of another salt has its own entries (what a salt changes in a key: the engine's cache tests).
    flyte.run(uses_keyed, x=2, note="first", salted=True).outputs()
    assert _keyed["n"] == 2


@groups_env.task
async def streamed(n: int) -> list[int]:
    seen = []
    async for value in flyte.map.aio(plain_child, range(n), concurrency=2):
        seen.append(value)
    return seen


def test_map_aio_yields_results_in_order():
    assert flyte.run(streamed, n=6).outputs() == [1, 2, 3, 4, 5, 6]
