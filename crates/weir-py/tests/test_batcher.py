"""weir.extras.DynamicBatcher / TokenBatcher (on weir-batch), as the guide uses them."""

import asyncio
import time
from dataclasses import dataclass

import pytest

import weir as flyte
from weir.extras import DynamicBatcher, TokenBatcher


def heavy_computation(item: dict) -> str:
    return f"done-{item['id']}"


def test_dynamic_batcher_basic_usage():
    sizes = []

    async def process(batch: list[dict]) -> list[str]:
        sizes.append(len(batch))
        await asyncio.sleep(0.002)
        return [heavy_computation(item) for item in batch]

    async def main():
        my_records = [{"id": i} for i in range(1000)]
        async with DynamicBatcher(
            process_fn=process,
            target_batch_cost=1000,
            max_batch_size=64,
            batch_timeout_s=0.05,
            max_queue_size=5_000,
        ) as batcher:
            futures = []
            for record in my_records:
                future = await batcher.submit(record, estimated_cost=10)
                futures.append(future)
            results = await asyncio.gather(*futures)
        return results, batcher.stats

    results, stats = asyncio.run(main())
    assert results == [f"done-{i}" for i in range(1000)]
    # Cost 10 each under a budget of 1000 allows 100; the cap of 64 wins.
    assert max(sizes) == 64 and sum(sizes) == 1000, sizes
    assert stats.total_submitted == stats.total_completed == 1000
    assert stats.total_batches == len(sizes) and stats.avg_batch_size > 10
    assert 0.0 < stats.utilization <= 1.0 and stats.busy_time_s > 0


def test_cost_budget_and_estimators():
    sizes = []

    async def process(batch):
        sizes.append(len(batch))
        return batch

    class Costly:
        def estimate_cost(self) -> int:
            return 250

    async def main():
        # min_batch_size 4: an idle process_fn does not take a smaller batch before the timeout.
        async with DynamicBatcher(process_fn=process, target_batch_cost=1000, max_batch_size=256, min_batch_size=4, batch_timeout_s=1.0) as b:
            futures = [await b.submit(Costly()) for _ in range(8)]
            await asyncio.gather(*futures)

    asyncio.run(main())
    # Four records of 250 fill the budget of 1000.
    assert sizes == [4, 4], sizes


def test_a_failing_batch_fails_its_records_only_and_backpressure_holds():
    async def process(batch):
        if any(x == 13 for x in batch):
            raise ValueError("unlucky batch")
        await asyncio.sleep(0.001)
        return [x * 2 for x in batch]

    async def main():
        async with DynamicBatcher(process_fn=process, max_batch_size=4, max_queue_size=2, batch_timeout_s=0.01) as b:
            futures = [await b.submit(i) for i in range(40)]
            results = await asyncio.gather(*futures, return_exceptions=True)
            return results, b.stats

    results, stats = asyncio.run(main())
    failed = [i for i, r in enumerate(results) if isinstance(r, ValueError)]
    assert 13 in failed and len(failed) <= 4, failed
    assert all(results[i] == i * 2 for i in range(40) if i not in failed)
    assert stats.total_failed == len(failed)


@dataclass
class Prompt:
    task_id: str
    index: int
    text: str

    def estimate_tokens(self) -> int:
        return len(self.text) // 4 + 1


gpu_env = flyte.TaskEnvironment("batch_gpu_worker", resources=flyte.Resources(cpu=1, memory="1Gi"))
driver_env = flyte.TaskEnvironment("batch_driver")

_batcher = {}


async def get_batcher() -> TokenBatcher:
    """One batcher per process, shared by every concurrent task (the guide uses alru_cache)."""
    if "b" not in _batcher:

        async def inference(batch: list[Prompt]) -> list[str]:
            await asyncio.sleep(0.01)  # one "forward pass" per batch
            return [f"answer to {p.text}" for p in batch]

        batcher = TokenBatcher[Prompt, str](
            inference_fn=inference, target_batch_tokens=200, max_batch_size=256, batch_timeout_s=0.05, max_queue_size=5_000
        )
        await batcher.start()
        _batcher["b"] = batcher
    return _batcher["b"]


@gpu_env.task
async def infer_batch(prompts: list[str], task_id: str) -> list[str]:
    batcher = await get_batcher()
    futures = []
    for idx, text in enumerate(prompts):
        future = await batcher.submit(Prompt(task_id=task_id, index=idx, text=text))
        futures.append(future)
    results = await asyncio.gather(*futures)
    return list(results)


@driver_env.task
async def main(num_questions: int = 100, chunk_size: int = 10) -> dict[str, list[str]]:
    questions = [f"question {i} padded to some tokens" for i in range(num_questions)]
    chunks = [questions[i : i + chunk_size] for i in range(0, len(questions), chunk_size)]
    task_ids = [f"chunk_{i:03d}" for i in range(len(chunks))]
    all_results = await asyncio.gather(*(infer_batch(chunk, tid) for chunk, tid in zip(chunks, task_ids)))
    return dict(zip(task_ids, all_results))


def test_token_batcher_shared_by_concurrent_tasks():
    out = flyte.run(main, num_questions=100, chunk_size=10).outputs()
    assert len(out) == 10 and out["chunk_003"][0] == "answer to question 30 padded to some tokens"
    stats = _batcher["b"].stats
    # Ten concurrent tasks fed one batcher: batches mix their records (9 tokens each, 200 a batch).
    assert stats.total_completed == 100 and stats.total_batches < 20, stats
    assert stats.avg_batch_size > 5


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="min_batch_size"):
        async def go():
            async with DynamicBatcher(process_fn=lambda b: b, max_batch_size=4, min_batch_size=8):
                pass
        asyncio.run(go())
    with pytest.raises(TypeError, match="target_batch_tokens"):
        TokenBatcher(inference_fn=lambda b: b, target_batch_cost=5)
