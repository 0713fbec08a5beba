//! Batch inference through one shared `TokenBatcher`, as in the reference guide's vLLM example,
//! with a simulated model so it runs anywhere.
//!
//! A driver splits the questions into chunks and fans them out to many concurrent tasks of one
//! environment. Every task gets the same process-wide batcher (a worker-scoped singleton,
//! SPEC §7.3: here a `OnceCell`), so the "GPU" is fed from all tasks at once. The model's step
//! time grows with the batch's tokens. Until worker processes exist, the tasks are tokio tasks of
//! this process (the embedded in-process mode).
//!
//! Run with `cargo run --release -p weir-batch --example batch_inference`.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;
use weir_batch::{Prompt, TokenBatcher, TokenEstimator};

/// The chunk (task) a prompt came from and its index in that chunk.
type Origin = (usize, usize);

const QUESTIONS: usize = 2_000;
const CHUNK_SIZE: usize = 50;

/// The worker's one batcher, created by the first task that needs it.
static BATCHER: OnceCell<TokenBatcher<Prompt<Origin>, String>> = OnceCell::const_new();

async fn shared_batcher() -> &'static TokenBatcher<Prompt<Origin>, String> {
    BATCHER
        .get_or_init(|| async {
            // A real worker would load the model here, once.
            TokenBatcher::builder()
                .target_batch_tokens(2_048)
                .max_batch_size(256)
                .batch_timeout(Duration::from_millis(50))
                .max_queue_size(5_000)
                .start(simulated_model)
        })
        .await
}

/// A batched forward pass: 2 ms of fixed cost plus 5 µs per token.
async fn simulated_model(batch: Vec<Prompt<Origin>>) -> Result<Vec<String>, Infallible> {
    let tokens: u64 = batch
        .iter()
        .filter_map(TokenEstimator::estimate_tokens)
        .sum();
    tokio::time::sleep(Duration::from_micros(2_000 + 5 * tokens)).await;
    Ok(batch
        .into_iter()
        .map(|prompt| {
            let (chunk, index) = prompt.metadata.unwrap_or_default();
            format!(
                "answer {index} of chunk {chunk} ({} chars)",
                prompt.text.len()
            )
        })
        .collect())
}

/// One task invocation: submits its chunk to the shared batcher, then awaits the answers.
async fn infer_chunk(chunk: usize, prompts: Vec<String>) -> Result<Vec<String>, weir_batch::Error> {
    let batcher = shared_batcher().await;
    let mut tickets = Vec::with_capacity(prompts.len());
    for (index, text) in prompts.into_iter().enumerate() {
        tickets.push(
            batcher
                .submit(Prompt::with_metadata(text, (chunk, index)))
                .await?,
        );
    }
    let mut answers = Vec::with_capacity(tickets.len());
    for ticket in tickets {
        answers.push(ticket.await?);
    }
    Ok(answers)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Questions of varied length, so batches differ in tokens.
    let questions: Vec<String> = (0..QUESTIONS)
        .map(|i| {
            format!(
                "Q{i}: {}what is {i} plus {i}?",
                "Think step by step. ".repeat(i % 7)
            )
        })
        .collect();

    let started = Instant::now();
    // The driver fans the chunks out to concurrent tasks.
    let tasks: Vec<_> = questions
        .chunks(CHUNK_SIZE)
        .enumerate()
        .map(|(chunk, prompts)| tokio::spawn(infer_chunk(chunk, prompts.to_vec())))
        .collect();
    let mut answered = 0;
    for task in tasks {
        answered += task.await??.len();
    }
    let elapsed = started.elapsed();

    let batcher = shared_batcher().await;
    batcher.stop().await;
    let stats = batcher.stats();
    println!(
        "{answered} prompts from {} tasks in {:.2} s",
        QUESTIONS.div_ceil(CHUNK_SIZE),
        elapsed.as_secs_f64()
    );
    println!(
        "utilization {:.1}% | batches {} | avg batch {:.1} prompts, {:.0} tokens | busy {:.2} s, idle {:.3} s",
        stats.utilization * 100.0,
        stats.total_batches,
        stats.avg_batch_size,
        stats.avg_batch_cost,
        stats.busy_time.as_secs_f64(),
        stats.idle_time.as_secs_f64(),
    );
    Ok(())
}
