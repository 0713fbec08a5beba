//! Batch inference with one shared `TokenBatcher` per worker, as in the reference guide's vLLM
//! example, with a simulated model so it runs anywhere.
//!
//! A driver task splits the questions into chunks and fans them out with `weir::map` to many
//! concurrent `infer_chunk` actions of one GPU environment. Every action gets the same
//! worker-scoped batcher (`weir::WorkerOnce`, SPEC §7.3), so the "GPU" is fed from all of them
//! at once; the model's step time grows with the batch's tokens. Runs embedded, in process.
//!
//! ```text
//! cargo run --release -p weir-examples --bin batch_inference
//! ```

use std::convert::Infallible;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use weir::WorkerOnce;
use weir::batch::{Prompt, TokenBatcher, TokenEstimator};
use weir::prelude::*;

static GPU: LazyLock<TaskEnvironment> = LazyLock::new(|| {
    TaskEnvironment::new("gpu_worker")
        .resources(Resources::new().cpu(4).memory("16Gi").gpu("A10G:1"))
        .reuse(ReusePolicy::new().replicas(2..=2).concurrency(10))
});

/// The worker's one model + batcher, created by the first action that needs it.
static BATCHER: WorkerOnce<TokenBatcher<Prompt<usize>, String>> = WorkerOnce::new();

async fn shared_batcher() -> &'static TokenBatcher<Prompt<usize>, String> {
    BATCHER
        .get_or_init(|| async {
            // A real worker would load the model here, once.
            TokenBatcher::builder()
                .target_batch_tokens(2_048)
                .max_batch_size(256)
                .batch_timeout(Duration::from_millis(50))
                .start(simulated_model)
        })
        .await
}

/// A batched forward pass: 2 ms of fixed cost plus 5 µs per token.
async fn simulated_model(
    batch: Vec<Prompt<usize>>,
) -> std::result::Result<Vec<String>, Infallible> {
    let tokens: u64 = batch
        .iter()
        .filter_map(TokenEstimator::estimate_tokens)
        .sum();
    tokio::time::sleep(Duration::from_micros(2_000 + 5 * tokens)).await;
    Ok(batch
        .into_iter()
        .map(|p| {
            format!(
                "answer to #{} ({} chars)",
                p.metadata.unwrap_or_default(),
                p.text.len()
            )
        })
        .collect())
}

/// One chunk of prompts: submitted to the shared batcher, answers awaited in order.
#[weir::task(env = GPU, retries = 1)]
async fn infer_chunk(first: usize, prompts: Vec<String>) -> Result<Vec<String>> {
    let batcher = shared_batcher().await;
    let mut tickets = Vec::with_capacity(prompts.len());
    for (i, text) in prompts.into_iter().enumerate() {
        tickets.push(
            batcher
                .submit(Prompt::with_metadata(text, first + i))
                .await?,
        );
    }
    let mut answers = Vec::with_capacity(tickets.len());
    for t in tickets {
        answers.push(t.await?);
    }
    Ok(answers)
}

/// The driver: chunks the questions and maps `infer_chunk` over them.
#[weir::task(env = GPU)]
async fn batch_inference(questions: Vec<String>, chunk_size: usize) -> Result<usize> {
    let chunks: Vec<(usize, Vec<String>)> = questions
        .chunks(chunk_size.max(1))
        .enumerate()
        .map(|(i, c)| (i * chunk_size, c.to_vec()))
        .collect();
    let answers = weir::map(|(first, prompts)| infer_chunk(first, prompts), chunks)
        .fail_fast()
        .await?;
    Ok(answers.iter().map(Vec::len).sum())
}

async fn demo() -> anyhow::Result<()> {
    let questions: Vec<String> = (0..2_000)
        .map(|i| {
            format!(
                "Q{i}: {}what is {i} plus {i}?",
                "Think step by step. ".repeat(i % 7)
            )
        })
        .collect();
    let state_dir = std::env::var("WEIR_STATE_DIR").unwrap_or_else(|_| ".weir".into());
    let runner = weir::Runner::embedded(&state_dir).await?;
    let started = Instant::now();
    let run = runner.run(batch_inference(questions, 50)).await?;
    let answered = run.wait().await?;
    let elapsed = started.elapsed();
    let stats = shared_batcher().await.stats();
    println!(
        "{answered} prompts answered by {} infer_chunk actions in {:.2} s (run {})",
        2_000 / 50,
        elapsed.as_secs_f64(),
        run.name()
    );
    println!(
        "batcher: utilization {:.1}% | batches {} | avg batch {:.1} prompts, {:.0} tokens | busy {:.2} s, idle {:.3} s",
        stats.utilization * 100.0,
        stats.total_batches,
        stats.avg_batch_size,
        stats.avg_batch_cost,
        stats.busy_time.as_secs_f64(),
        stats.idle_time.as_secs_f64()
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
