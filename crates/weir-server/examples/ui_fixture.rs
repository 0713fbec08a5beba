//! Fills a state directory with real runs for the UI's end-to-end tests and measurements.
//!
//! ```text
//! cargo run -p weir-server --example ui_fixture -- DIR            # demo (2 000-child map), failing, tiny, chatty, frames
//! cargo run -p weir-server --example ui_fixture -- DIR --million  # also w1m: 1 000 × 1 000 children
//! cargo run -p weir-server --example ui_fixture -- DIR --flat N    # also flat: one map of N children
//! cargo run -p weir-server --example ui_fixture -- DIR --slow S    # only: a run that keeps running S seconds
//! cargo run -p weir-server --example ui_fixture -- DIR --big-input # only: bigin, one action with a 9.5 MB input
//! ```

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use weir::prelude::*;

static ETL: LazyLock<TaskEnvironment> = LazyLock::new(|| TaskEnvironment::new("etl"));
static ML: LazyLock<TaskEnvironment> = LazyLock::new(|| TaskEnvironment::new("ml"));
static BENCH: LazyLock<TaskEnvironment> = LazyLock::new(|| TaskEnvironment::new("bench"));

#[weir::task(env = ETL)]
async fn prepare(n: u64) -> Result<Vec<u64>> {
    tokio::time::sleep(Duration::from_millis(20)).await;
    Ok((0..n).collect())
}

/// Fails (non-recoverably) on multiples of 97, so the demo run has failed children.
#[weir::task(env = ETL)]
async fn square(x: u64) -> Result<u64> {
    tokio::time::sleep(Duration::from_micros(500 + (x % 7) * 300)).await;
    if x % 97 == 13 {
        return Err(Error::non_recoverable(format!("item {x} is malformed")));
    }
    Ok(x * x)
}

#[weir::task(env = ML)]
async fn score(chunk: Vec<u64>) -> Result<f64> {
    tokio::time::sleep(Duration::from_millis(3)).await;
    Ok(chunk.iter().map(|&v| v as f64).sum::<f64>().sqrt())
}

static FLAKY_CALLS: AtomicU32 = AtomicU32::new(0);

/// Fails its first attempt, so it shows a failed attempt and a retry.
#[weir::task(env = ML, retries = 2)]
async fn flaky_train(epochs: u32) -> Result<String> {
    if FLAKY_CALLS.fetch_add(1, Ordering::SeqCst) == 0 {
        return Err(Error::msg("GPU fell off the bus (simulated)"));
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    Ok(format!("model trained for {epochs} epochs"))
}

/// Takes a payload over the 64 KiB inline limit, so its inputs are offloaded to blobs/.
#[weir::task(env = ML)]
async fn summarize(blob: Vec<u64>) -> Result<u64> {
    Ok(blob.iter().sum())
}

/// Counts a payload (`--big-input`).
#[weir::task(env = ML)]
async fn count(blob: Vec<u64>) -> Result<u64> {
    Ok(blob.len() as u64)
}

/// The demo: a 2 000-child map (some fail), a nested map of chunks, a retried call and an
/// offloaded payload, over two environments.
#[weir::task(env = ETL)]
async fn pipeline(n: u64) -> Result<String> {
    let items = prepare(n).await?;
    let squares = weir::map(square, items.clone()).concurrency(64).await;
    let ok: Vec<u64> = squares.into_iter().filter_map(|r| r.ok()).collect();
    let chunks: Vec<Vec<u64>> = ok.chunks(100).map(|c| c.to_vec()).collect();
    let scores = weir::map(score, chunks)
        .group("scoring")
        .concurrency(4)
        .fail_fast()
        .await?;
    let model = flaky_train(3).await?;
    let total = summarize((0..20_000).map(|i| i * 100_000).collect()).await?;
    Ok(format!(
        "{} ok of {n}, {} chunks scored, {model}, total {total}",
        ok.len(),
        scores.len()
    ))
}

#[weir::task(env = ETL)]
async fn doomed(reason: String) -> Result<u64> {
    let _ = prepare(3).await?;
    Err(Error::non_recoverable(format!(
        "refusing to go on: {reason}"
    )))
}

#[weir::task(env = ETL)]
async fn slow_item(x: u64) -> Result<u64> {
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(x)
}

/// Keeps running for about `seconds`, for live-update tests.
#[weir::task(env = ETL)]
async fn slow(seconds: u64) -> Result<u64> {
    let items = 0..seconds * 20;
    Ok(weir::map(slow_item, items)
        .concurrency(2)
        .fail_fast()
        .await?
        .into_iter()
        .sum())
}

#[weir::task(env = BENCH)]
async fn double(x: u64) -> Result<u64> {
    Ok(x * 2)
}

#[weir::task(env = BENCH)]
async fn batch(b: u64, per: u64) -> Result<u64> {
    Ok(weir::map(double, b * per..(b + 1) * per)
        .fail_fast()
        .await?
        .into_iter()
        .sum())
}

/// weir-bench's w1map: one map of `n` children.
#[weir::task(env = BENCH)]
async fn fan_out_map(n: u64) -> Result<u64> {
    Ok(weir::map(double, 0..n).fail_fast().await?.into_iter().sum())
}

/// weir-bench's w1m: `batches` × `per` children in one run.
#[weir::task(env = BENCH)]
async fn million(batches: u64, per: u64, width: usize) -> Result<u64> {
    Ok(weir::map(move |b| batch(b, per), 0..batches)
        .concurrency(width)
        .fail_fast()
        .await?
        .into_iter()
        .sum())
}

/// Data by reference: a `weir::File` and a `weir::DataFrame` (the UI shows where they are, and
/// the frame's schema and first rows).
#[weir::task(env = ETL)]
async fn frames() -> Result<(weir::File, weir::DataFrame)> {
    use std::sync::Arc;
    use weir::arrow::array::{Float64Array, RecordBatch, StringArray};
    use weir::arrow::schema::{DataType, Field, Schema};
    let file = weir::File::from_bytes(vec![7u8; 4096]).await?;
    let schema = Arc::new(Schema::new(vec![
        Field::new("city", DataType::Utf8, false),
        Field::new("temp", DataType::Float64, true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(vec!["Oslo", "Lima", "Pune"])),
            Arc::new(Float64Array::from(vec![Some(-3.5), None, Some(31.25)])),
        ],
    )
    .map_err(Error::msg)?;
    let frame = weir::DataFrame::from_batches(schema, [batch]).await?;
    Ok((file, frame))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().ok_or_else(|| {
        anyhow::anyhow!(
            "usage: ui_fixture DIR [--million] [--flat N] [--slow SECONDS] [--big-input]"
        )
    })?;
    let mut with_million = false;
    let mut slow_seconds = None;
    let mut flat = None;
    let mut big_input = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--million" => with_million = true,
            "--slow" => slow_seconds = Some(args.next().unwrap_or_default().parse::<u64>()?),
            "--flat" => flat = Some(args.next().unwrap_or_default().parse::<u64>()?),
            "--big-input" => big_input = true,
            other => anyhow::bail!("unknown argument {other:?}"),
        }
    }
    let runner = weir::Runner::embedded(&dir).await?;
    if let Some(seconds) = slow_seconds {
        let run = runner
            .with_context(RunContext::new().name("slow"))
            .run(slow(seconds))
            .await?;
        run.wait().await?;
        runner.engine().flush()?;
        return Ok(());
    }
    if big_input {
        // 1 050 000 numbers of 9 bytes each: what one view of a large payload costs.
        let data: Vec<u64> = (1..=1_050_000u64).map(|i| i << 32).collect();
        let run = runner
            .with_context(RunContext::new().name("bigin"))
            .run(count(data))
            .await?;
        run.wait().await?;
        runner.engine().flush()?;
        return Ok(());
    }
    let out = runner
        .with_context(RunContext::new().name("demo").label("team", "ui"))
        .run(pipeline(2000))
        .await?
        .wait()
        .await?;
    eprintln!("demo: {out}");
    let failed = runner
        .with_context(RunContext::new().name("doomed"))
        .run(doomed("bad config".into()))
        .await?
        .wait()
        .await;
    eprintln!("doomed: {:?}", failed.err().map(|e| e.to_string()));
    runner
        .with_context(RunContext::new().name("tiny"))
        .run(double(21))
        .await?
        .wait()
        .await?;
    // 300 tiny children: the Tasks tab advises batching them.
    runner
        .with_context(RunContext::new().name("chatty"))
        .run(fan_out_map(300))
        .await?
        .wait()
        .await?;
    runner
        .with_context(RunContext::new().name("frames"))
        .run(frames())
        .await?
        .wait()
        .await?;
    if let Some(n) = flat {
        runner
            .with_context(RunContext::new().name("flat"))
            .run(fan_out_map(n))
            .await?
            .wait()
            .await?;
    }
    if with_million {
        let t = std::time::Instant::now();
        let out = runner
            .with_context(RunContext::new().name("w1m"))
            .run(million(1000, 1000, 16))
            .await?
            .wait()
            .await?;
        eprintln!("w1m: {out} in {:.1}s", t.elapsed().as_secs_f64());
    }
    runner.engine().flush()?;
    Ok(())
}
