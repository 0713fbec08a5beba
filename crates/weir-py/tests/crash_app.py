"""A run killed with SIGKILL in the middle (test_crash.py)."""

import json
import os
import signal
import sys

import weir as flyte

env = flyte.TaskEnvironment("crash")
MARKS = os.environ["MARK_DIR"]


def mark(name: str) -> None:
    with open(os.path.join(MARKS, f"{name}-{os.getpid()}"), "w"):
        pass


@flyte.trace
async def stream(n: int):
    for i in range(n):
        # Random: a replay must give back exactly the items recorded.
        yield {"i": i, "token": os.urandom(8).hex()}


@flyte.trace
async def label(count: int) -> str:
    # Recorded by the resuming process (python -m weir resume): its engine's runtime.
    return f"{count} steps in {os.getpid()}"


@env.task
async def step(i: int) -> int:
    mark(f"step{i}")
    return i * 10


@env.task
async def main(n: int) -> dict:
    items = [x async for x in stream(3)]
    with open(os.path.join(MARKS, f"items-{os.getpid()}.json"), "w") as f:
        json.dump(items, f)
    done = []
    for i in range(n):
        done.append(await step(i))
        if i == 2 and os.environ.get("CRASH") == "1":
            os.kill(os.getpid(), signal.SIGKILL)
    return {"items": items, "steps": done, "label": await label(len(done))}


if __name__ == "__main__":
    run = flyte.with_runcontext(name=sys.argv[1]).run(main, n=5)
    print(json.dumps(run.outputs()))
