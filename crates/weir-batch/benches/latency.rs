//! Submit→result latency of a `DynamicBatcher` with a trivial `process_fn`.
//!
//! Run with `cargo bench -p weir-batch --bench latency`.
//!
//! - `one_record_*`: one record through an idle batcher (`process(record)`): the queue, the
//!   assembly loop, the processing loop and the reply channel. On a current-thread runtime every
//!   hop is a task switch on one thread; on a multi-thread runtime the caller and the loops sit
//!   on different threads, so the figure includes cross-thread wake-ups.
//! - `burst`: `n` records submitted back to back and then awaited, per call (divide by `n` for a
//!   per-record cost).

use std::convert::Infallible;
use std::future::{Ready, ready};

use divan::Bencher;
use tokio::runtime::{Builder, Runtime};
use weir_batch::DynamicBatcher;

fn main() {
    divan::main();
}

fn echo(batch: Vec<u64>) -> Ready<Result<Vec<u64>, Infallible>> {
    ready(Ok(batch))
}

fn bench_one_record(bencher: Bencher, runtime: &Runtime) {
    let batcher = runtime.block_on(async { DynamicBatcher::builder().start(echo) });
    bencher.bench_local(|| {
        runtime
            .block_on(batcher.process(divan::black_box(7)))
            .unwrap()
    });
    runtime.block_on(batcher.stop());
}

#[divan::bench]
fn one_record_current_thread(bencher: Bencher) {
    let runtime = Builder::new_current_thread().enable_all().build().unwrap();
    bench_one_record(bencher, &runtime);
}

#[divan::bench]
fn one_record_multi_thread(bencher: Bencher) {
    let runtime = Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    bench_one_record(bencher, &runtime);
}

#[divan::bench(args = [16, 64, 256])]
fn burst(bencher: Bencher, n: u64) {
    let runtime = Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let batcher =
        runtime.block_on(async { DynamicBatcher::builder().max_batch_size(64).start(echo) });
    bencher
        .counter(divan::counter::ItemsCount::new(n))
        .bench_local(|| {
            runtime.block_on(async {
                let tickets = batcher.submit_many(0..n).await.unwrap();
                let mut sum = 0;
                for ticket in tickets {
                    sum += ticket.await.unwrap();
                }
                sum
            })
        });
    runtime.block_on(batcher.stop());
}
