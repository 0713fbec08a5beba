//! The "optimized pipeline" of the reference guide: a large dataset processed by `map` over
//! batches instead of one task per item, in a reusable environment.
//!
//! ```text
//! cargo run -p weir-examples --bin pipeline                 # the demo: 200 000 items, batches of 1 000
//! cargo run -p weir-examples --bin pipeline -- run process_dataset --input '{"n_items": 5000, "batch_size": 500}'
//! cargo run -p weir-examples --bin pipeline -- get actions <RUN>
//! ```
//! With no arguments it runs the demo on the embedded default (state in `./.weir`); with
//! arguments it is the weir command line for these tasks.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use weir::prelude::*;

static PIPELINE: LazyLock<TaskEnvironment> = LazyLock::new(|| {
    TaskEnvironment::new("optimized-pipeline").reuse(
        ReusePolicy::new()
            .replicas(5..=20)
            .concurrency(10)
            .scaledown_ttl(Duration::from_secs(600))
            .idle_ttl(Duration::from_secs(3600)),
    )
});

/// One record of the dataset.
#[derive(Serialize, Deserialize, Clone, Debug)]
struct Item {
    id: u64,
    payload: String,
}

/// A processed record.
#[derive(Serialize, Deserialize, Clone, Debug)]
struct Processed {
    id: u64,
    words: u32,
    checksum: u64,
}

/// Processes one batch of items (a stand-in for real per-item work: count words, hash bytes).
#[weir::task(env = PIPELINE, retries = 2)]
async fn process_batch(items: Vec<Item>) -> Result<Vec<Processed>> {
    Ok(items
        .into_iter()
        .map(|item| Processed {
            id: item.id,
            words: item.payload.split_whitespace().count() as u32,
            checksum: item
                .payload
                .bytes()
                .fold(item.id, |h, b| h.wrapping_mul(31).wrapping_add(b as u64)),
        })
        .collect())
}

/// Summary of a processed dataset.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Summary {
    items: u64,
    batches: u64,
    words: u64,
    checksum: u64,
}

/// Builds the dataset, splits it into batches and maps `process_batch` over them, at most 200
/// batches at once, failing fast.
#[weir::task(env = PIPELINE, retries = 2, timeout = "10m")]
async fn process_dataset(n_items: u64, batch_size: usize) -> Result<Summary> {
    if batch_size == 0 {
        return Err(Error::non_recoverable("batch_size must be at least 1"));
    }
    let items: Vec<Item> = (0..n_items)
        .map(|id| Item {
            id,
            payload: format!("record {id} of the nightly export"),
        })
        .collect();
    let batches: Vec<Vec<Item>> = items.chunks(batch_size).map(<[Item]>::to_vec).collect();
    let n_batches = batches.len() as u64;
    let results = weir::map(process_batch, batches)
        .concurrency(200)
        .fail_fast()
        .await?;
    let processed: Vec<Processed> = results.into_iter().flatten().collect();
    Ok(Summary {
        items: processed.len() as u64,
        batches: n_batches,
        words: processed.iter().map(|p| p.words as u64).sum(),
        checksum: processed.iter().fold(0u64, |a, p| a ^ p.checksum),
    })
}

async fn demo() -> anyhow::Result<()> {
    let state_dir = std::env::var("WEIR_STATE_DIR").unwrap_or_else(|_| ".weir".into());
    let runner = weir::Runner::embedded(&state_dir).await?;
    let (n_items, batch_size) = (200_000, 1_000);
    eprintln!("processing {n_items} items in batches of {batch_size} (state in {state_dir}/)");
    let started = Instant::now();
    let run = runner.run(process_dataset(n_items, batch_size)).await?;
    let summary = run.wait().await?;
    let elapsed = started.elapsed();
    let progress = run.progress();
    println!("{summary:?}");
    eprintln!(
        "run {} finished in {:.2?}: {} actions ({} batches + the parent), all durable in {state_dir}/state.db",
        run.name(),
        elapsed,
        progress.created,
        summary.batches
    );
    eprintln!(
        "inspect it: cargo run -p weir-examples --bin pipeline -- get actions {}",
        run.name()
    );
    Ok(())
}

fn main() -> anyhow::Result<std::process::ExitCode> {
    if std::env::args().len() > 1 {
        return Ok(weir::cli::main());
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(demo())?;
    Ok(std::process::ExitCode::SUCCESS)
}
