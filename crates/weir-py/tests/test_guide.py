"""The guide's examples (reference/scale-your-runs.md), under `import weir as flyte`.

Where the guide leaves a part undefined (the body of `process_single_item`, an HTTP client, a
table's files) it is written out here in our own words; outputs are checked.
"""

import asyncio
import json
import os
import tempfile
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import weir as flyte
from conftest import weir_cli

# 1. Reusable containers for concurrency.
env = flyte.TaskEnvironment(
    name="high-throughput",
    reuse_policy=flyte.ReusePolicy(
        replicas=(2, 10),
        concurrency=5,
        scaledown_ttl=timedelta(minutes=10),
        idle_ttl=timedelta(hours=1),
    ),
)


@env.task
async def process_item(item: dict) -> dict:
    return {"processed": item["id"], "pid": os.getpid()}


driver = flyte.TaskEnvironment("guide-driver")


@driver.task
async def fan_to_workers(n: int) -> list[dict]:
    return await asyncio.gather(*[process_item({"id": i}) for i in range(n)])


@env.task
async def write_in_worker(text: str) -> "flyte.io.File":
    path = os.path.join(tempfile.mkdtemp(), "w.txt")
    with open(path, "w") as f:
        f.write(f"{text} from {os.getpid()}")
    return await flyte.io.File.from_local(path)


@driver.task
async def read_from_worker(text: str) -> str:
    made = await write_in_worker(text)
    with open(await made.download()) as f:
        return f.read()


def test_reusable_environment_runs_in_worker_processes():
    written = flyte.run(read_from_worker, text="hello").outputs()
    assert written.startswith("hello from ") and written != f"hello from {os.getpid()}", written
    out = flyte.run(fan_to_workers, n=40).outputs()
    assert [o["processed"] for o in out] == list(range(40))
    pids = {o["pid"] for o in out}
    assert os.getpid() not in pids and 1 <= len(pids) <= 10, pids


# 2. Batch workloads to reduce overhead.
batch_env = flyte.TaskEnvironment("guide-batching")


async def process_single_item(item: dict) -> dict:
    return {"id": item["id"], "double": item["value"] * 2}


@batch_env.task
async def process_batch(items: list[dict]) -> list[dict]:
    """Process a batch of items in a single task."""
    results = []
    for item in items:
        result = await process_single_item(item)
        results.append(result)
    return results


@batch_env.task
async def process_large_dataset(dataset: list[dict]) -> list[dict]:
    batch_size = 1000
    batches = [dataset[i : i + batch_size] for i in range(0, len(dataset), batch_size)]
    results = await asyncio.gather(*[process_batch(batch) for batch in batches])
    return [item for batch_result in results for item in batch_result]


def test_batching():
    dataset = [{"id": i, "value": i} for i in range(10_000)]
    run = flyte.run(process_large_dataset, dataset=dataset)
    out = run.outputs()
    assert len(out) == 10_000 and out[1234] == {"id": 1234, "double": 2468}
    actions = json.loads(weir_cli("get", "actions", run.name, "-o", "json").stdout)
    assert len(actions) == 11, len(actions)  # the parent and 10 batches, not 10 000 actions


# 3. Traces for lightweight operations.
class _Pages(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"path": self.path, "len": len(self.path)}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class _Response:
    def __init__(self, body: bytes):
        self._body = body

    def json(self):
        return json.loads(self._body)


class _Client:
    async def get(self, url: str) -> _Response:
        import urllib.request

        def fetch():
            with urllib.request.urlopen(url, timeout=10) as r:
                return r.read()

        return _Response(await asyncio.to_thread(fetch))


http_client = _Client()
trace_env = flyte.TaskEnvironment("guide-traces")


@flyte.trace
async def fetch_data(url: str) -> dict:
    response = await http_client.get(url)
    return response.json()


@flyte.trace
async def transform_data(data: dict) -> dict:
    return {"transformed": data}


@trace_env.task
async def process_workflow(urls: list[str]) -> list[dict]:
    results = []
    for url in urls:
        data = await fetch_data(url)
        transformed = await transform_data(data)
        results.append(transformed)
    return results


def test_traces_with_a_real_http_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Pages)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        urls = [f"{base}/item/{i}" for i in range(3)]
        run = flyte.run(process_workflow, urls=urls)
        out = run.outputs()
    finally:
        server.shutdown()
    assert out == [{"transformed": {"path": f"/item/{i}", "len": len(f"/item/{i}")}} for i in range(3)]
    actions = json.loads(weir_cli("get", "actions", run.name, "-o", "json").stdout)
    traced = sorted(a["task"] for a in actions if a["id"] != "a0")
    assert traced == ["fetch_data"] * 3 + ["transform_data"] * 3, traced


# 4. Limit fanout (a million items scaled down to 10 000: 100 batches of 100).
@batch_env.task
async def process_million_items(items: list[dict]) -> list[dict]:
    batch_size = 100
    batches = [items[i : i + batch_size] for i in range(0, len(items), batch_size)]
    results = await flyte.map(process_batch, batches)
    return [item for batch in results for item in batch]


def test_controlled_fanout_with_map():
    items = [{"id": i, "value": 1} for i in range(10_000)]
    out = flyte.run(process_million_items, items=items).outputs()
    assert len(out) == 10_000 and all(o["double"] == 2 for o in out)


# 5. Data transfer: File and Directory by reference, small dicts inline.
from weir.io import Directory, File  # noqa: E402

data_env = flyte.TaskEnvironment("guide-data")


def process(local_path: str) -> str:
    with open(local_path) as f:
        text = f.read()
    out = local_path + ".upper"
    with open(out, "w") as f:
        f.write(text.upper())
    return out


@data_env.task
async def make_input(text: str, copies: int) -> File:
    path = os.path.join(tempfile.mkdtemp(), "input.txt")
    with open(path, "w") as f:
        f.write(text * copies)
    return await File.from_local(path)


@data_env.task
async def process_large_file(input_file: File) -> File:
    """Files passed by reference, not copied."""
    local_path = await input_file.download()
    result_path = process(local_path)
    return await File.from_local(result_path)


@data_env.task
async def file_pipeline(text: str, copies: int) -> File:
    made = await make_input(text, copies)
    assert isinstance(made, File) and made.size == len(text) * copies
    return await process_large_file(made)


@data_env.task
def make_tree(n: int) -> Directory:
    root = tempfile.mkdtemp()
    for i in range(n):
        os.makedirs(os.path.join(root, f"d{i % 2}"), exist_ok=True)
        with open(os.path.join(root, f"d{i % 2}", f"f{i}.txt"), "w") as f:
            f.write(f"file {i}\n" * (i + 1))
    return Directory.from_local_sync(root)


@data_env.task
async def read_tree(tree: Directory) -> dict:
    root = await tree.download()
    found = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            with open(os.path.join(dirpath, name)) as f:
                found[os.path.relpath(os.path.join(dirpath, name), root)] = len(f.read())
    return found


@data_env.task
async def tree_pipeline(n: int) -> dict:
    return await read_tree(await make_tree(n))


@data_env.task
async def process_metadata(metadata: dict) -> dict:
    """Small dicts passed inline efficiently."""
    return {"processed": metadata}


def test_files_and_directories_by_reference():
    run = flyte.run(file_pipeline, text="weir moves bytes once. ", copies=50_000)
    out = run.outputs()
    assert isinstance(out, File) and out.size == len("weir moves bytes once. ") * 50_000
    io = json.loads(weir_cli("get", "io", run.name, "a0", "-o", "json").stdout)
    refs = io["references"]
    assert refs[0]["kind"] == "file" and refs[0]["size"] == out.size and refs[0]["hash"] == out.hash, refs
    # The object is in the engine's store, content-addressed.
    blob = os.path.join(os.environ["WEIR_STATE_DIR"], "blobs")
    stored = [os.path.join(d, n) for d, _, ns in os.walk(blob) for n in ns if out.hash in n]
    assert stored, os.listdir(blob)
    assert os.path.getsize(stored[0]) == out.size
    tree = flyte.run(tree_pipeline, n=5).outputs()
    assert tree == {f"d{i % 2}/f{i}.txt": len(f"file {i}\n") * (i + 1) for i in range(5)}


def test_inline_dicts_and_refused_dataframes():
    assert flyte.run(process_metadata, metadata={"a": 1}).outputs() == {"processed": {"a": 1}}
    with pytest.raises(flyte.NotSupportedError, match="DataFrame"):
        flyte.io.DataFrame.from_df(None)
    with pytest.raises(RuntimeError, match="inside a task"):
        asyncio.run(File.from_local(__file__))


# 6. Caching.
_calls = {"n": 0}


@data_env.task(cache="auto")
async def expensive_computation(input_data: dict) -> dict:
    _calls["n"] += 1
    return {"sum": sum(input_data.values())}


@data_env.task
async def compute(input_data: dict) -> dict:
    return await expensive_computation(input_data)


def test_auto_cache():
    # Children are looked up in the cache (a run's root task is not: see the README).
    _calls["n"] = 0
    a = flyte.run(compute, input_data={"x": 1, "y": 2}).outputs()
    b = flyte.run(compute, input_data={"y": 2, "x": 1}).outputs()  # same dict, other order
    assert a == b == {"sum": 3} and _calls["n"] == 1
    flyte.run(compute, input_data={"x": 1, "y": 3}).outputs()
    assert _calls["n"] == 2


# 7. Parallelize with map.
@data_env.task
async def process_one(item: dict) -> dict:
    return {"processed": item}


@data_env.task
async def parallel_processing(items: list[dict]) -> list[dict]:
    results = await flyte.map(process_one, items)
    return results


def test_parallel_processing():
    items = [{"k": i} for i in range(50)]
    assert flyte.run(parallel_processing, items=items).outputs() == [{"processed": i} for i in items]


# The PyIceberg pattern: file paths, not data, fanned out to partitions.
iceberg_env = flyte.TaskEnvironment("guide-iceberg")


def distribute_files(paths: list[str], n: int) -> list[list[str]]:
    return [paths[i::n] for i in range(n)]


@iceberg_env.task
async def aggregate_partition(files: list[str], partition_id: int) -> dict:
    total = 0
    for path in files:
        with open(path) as f:
            total += sum(int(line) for line in f)
    return {"partition": partition_id, "files": len(files), "total": total}


@iceberg_env.task
async def aggregate_table(file_paths: list[str], num_partitions: int) -> list[dict]:
    partition_files = distribute_files(file_paths, num_partitions)
    return await asyncio.gather(
        *[aggregate_partition(files, partition_id) for partition_id, files in enumerate(partition_files)]
    )


def test_zero_copy_partition_aggregation(tmp_path):
    paths = []
    for i in range(12):
        p = tmp_path / f"part-{i}.txt"
        p.write_text("\n".join(str(i * 10 + k) for k in range(10)))
        paths.append(str(p))
    out = flyte.run(aggregate_table, file_paths=paths, num_partitions=4).outputs()
    assert [o["files"] for o in out] == [3, 3, 3, 3]
    assert sum(o["total"] for o in out) == sum(range(120))


# Optimizing a pipeline: before (one task per item) and after (batches on reusable workers).
before_env = flyte.TaskEnvironment("guide-before")


@before_env.task
async def process_item_fast(item: dict) -> dict:
    return {"processed": item["id"]}


@before_env.task
async def process_dataset_before(items: list[dict]) -> list[dict]:
    results = await asyncio.gather(*[process_item_fast(item) for item in items])
    return results


after_env = flyte.TaskEnvironment(
    name="optimized-pipeline",
    reuse_policy=flyte.ReusePolicy(
        replicas=(2, 4), concurrency=10, scaledown_ttl=timedelta(minutes=10), idle_ttl=timedelta(hours=1)
    ),
)


@after_env.task
async def process_items_batch(items: list[dict]) -> list[dict]:
    return [{"processed": item["id"]} for item in items]


@before_env.task
async def process_dataset_after(items: list[dict]) -> list[dict]:
    batch_size = 1000
    batches = [items[i : i + batch_size] for i in range(0, len(items), batch_size)]
    results = await flyte.map(process_items_batch, batches)
    return [item for batch in results for item in batch]


def test_before_and_after_optimization():
    items = [{"id": i} for i in range(5000)]
    before = flyte.run(process_dataset_before, items=items)
    after = flyte.run(process_dataset_after, items=items)
    assert before.outputs() == after.outputs() == [{"processed": i} for i in range(5000)]
    runs = {r["name"]: r["actions"] for r in json.loads(weir_cli("get", "runs", "-o", "json").stdout)}
    assert runs[before.name] == {"succeeded": 5001} and runs[after.name] == {"succeeded": 6}, runs
