"""Regressions found in review: each failed (or hung) before its fix."""

import asyncio
import json
import os
import subprocess
import sys
import time

import pytest

import weir as flyte
from conftest import STATE, weir_cli
from weir.extras import DynamicBatcher

env = flyte.TaskEnvironment("review")


@env.task
async def refuses_now(x: int) -> int:
    raise flyte.NonRecoverableError("no point retrying")


@env.task(retries=3)
async def parent_of_refusal(x: int) -> int:
    return await refuses_now(x)


def test_a_parent_is_not_retried_when_its_child_failed_non_recoverably():
    run = flyte.run(parent_of_refusal, x=1)
    with pytest.raises(flyte.TaskError) as err:
        run.outputs()
    assert err.value.kind == "non_recoverable" and "no point retrying" in err.value.message
    actions = {a["id"]: a for a in json.loads(weir_cli("get", "actions", run.name, "-o", "json").stdout)}
    assert actions["a0"]["attempts"] == 1, actions["a0"]


@env.task
async def sync_io_in_async(path: str) -> str:
    return repr(flyte.io.File.from_local_sync(path))


def test_sync_io_variants_are_refused_in_async_tasks():
    with pytest.raises(flyte.TaskError) as err:
        flyte.run(sync_io_in_async, path=__file__).outputs()
    assert "_sync variants are for `def` tasks" in err.value.message


@env.task
def def_leaf(x: int) -> int:
    return x + 1


@env.task
def def_middle(x: int) -> int:
    return def_leaf(x)


@env.task
async def many_def_parents(n: int) -> int:
    return sum(await flyte.map(def_middle, range(n)))


def test_more_blocked_def_bodies_than_a_pool_would_hold():
    assert flyte.run(many_def_parents, n=530).outputs() == sum(range(1, 531))


@env.task(timeout=0.5)
def slow_def(x: int) -> int:
    time.sleep(1.2)
    return def_leaf(x)


def test_a_timed_out_def_body_starts_no_children():
    run = flyte.run(slow_def, x=1)
    with pytest.raises(flyte.TaskError) as err:
        run.outputs()
    assert err.value.kind == "timeout"
    time.sleep(1.5)  # the body's thread wakes and tries its child
    actions = json.loads(weir_cli("get", "actions", run.name, "-o", "json").stdout)
    assert [a["id"] for a in actions] == ["a0"], actions


def test_a_batch_cancelled_inside_process_fn_does_not_stop_the_batcher():
    calls = {"n": 0}

    async def process(batch):
        calls["n"] += 1
        if calls["n"] == 1:
            raise asyncio.CancelledError()
        return [x * 2 for x in batch]

    async def main():
        async with DynamicBatcher(process_fn=process, max_batch_size=1, batch_timeout_s=0.01) as b:
            first = await b.submit(1)
            second = await b.submit(2)
            results = await asyncio.wait_for(asyncio.gather(first, second, return_exceptions=True), 10)
        return results

    first, second = asyncio.run(asyncio.wait_for(main(), 20))
    assert isinstance(first, asyncio.CancelledError) and second == 4


def test_python_m_weir_refuses_workers_flag():
    out = subprocess.run(
        [sys.executable, "-m", "weir", "run", "review.def_leaf", "--workers", "process"],
        env=dict(os.environ, WEIR_STATE_DIR=STATE),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "--workers is for Rust binaries" in out.stderr


def test_ignored_inputs_must_be_parameters():
    with pytest.raises(ValueError, match="not parameters"):

        @env.task(cache=flyte.Cache(behavior="auto", ignored_inputs=("nope",)))
        async def typo(x: int) -> int:
            return x
