"""Benchmarks of weir's Python front (shared/BENCHMARKS.md workloads, mode "embedded-python").

    python crates/weir-py/bench.py [w1|w2|all] [--n N] [--repeat R] [--json]

Embedded and durable (SQLite on), a fresh state directory per process, in-process tasks on
asyncio. w1: a parent calls N children (x -> x * 2) concurrently with asyncio.gather, gathers and
checks the sum. w2: a chain of 100 sequential child calls. Medians of R runs. Build the package
in release for figures (`pip install ./crates/weir-py`, or `maturin develop --release`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import tempfile
import time

parser = argparse.ArgumentParser()
parser.add_argument("workload", nargs="?", default="all", choices=["w1", "w2", "all"])
parser.add_argument("--n", type=int, default=None)
parser.add_argument("--repeat", type=int, default=3)
parser.add_argument("--json", action="store_true")
args = parser.parse_args()

os.environ["WEIR_STATE_DIR"] = tempfile.mkdtemp(prefix="weir-bench-py-")
import weir  # noqa: E402

env = weir.TaskEnvironment("bench")


@env.task
async def child(x: int) -> int:
    return x * 2


@env.task
async def fan_out(n: int) -> int:
    out = await asyncio.gather(*[child(i) for i in range(n)])
    total = sum(out)
    assert total == n * (n - 1), total
    return total


@env.task
async def hop(x: int) -> int:
    return x + 1


@env.task
async def chain(n: int) -> int:
    x = 0
    for _ in range(n):
        x = await hop(x)
    assert x == n
    return x


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(task, n: int) -> float:
    times = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        weir.run(task, n=n).outputs()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def report(row: dict) -> None:
    if args.json:
        print(json.dumps(row))
    else:
        extra = f"  {row['per_hop_us']:.1f} µs/hop" if "per_hop_us" in row else ""
        print(f"{row['workload']:4} n={row['n']:>6}  {row['seconds']:.4f} s  {row['per_action_us']:.1f} µs/action  "
              f"{row['actions_per_s']:.0f}/s  peak RSS {row['peak_rss_mb']:.1f} MB{extra}")


weir.run(child, x=1).outputs()  # opens the engine and starts the loop outside the timings
if args.workload in ("w1", "all"):
    for n in [args.n] if args.n else [100, 1_000, 10_000]:
        s = measure(fan_out, n)
        report({"workload": "w1", "n": n, "seconds": round(s, 4), "per_action_us": round(s / n * 1e6, 2),
                "actions_per_s": round(n / s), "peak_rss_mb": round(peak_rss_mb(), 1), "mode": "embedded-python"})
if args.workload in ("w2", "all"):
    n = args.n or 100
    s = measure(chain, n)
    report({"workload": "w2", "n": n, "seconds": round(s, 4), "per_action_us": round(s / n * 1e6, 2),
            "actions_per_s": round(n / s), "peak_rss_mb": round(peak_rss_mb(), 1), "mode": "embedded-python",
            "per_hop_us": round(s / n * 1e6, 1)})
sys.stdout.flush()
