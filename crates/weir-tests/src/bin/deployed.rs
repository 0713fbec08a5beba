//! A user program whose environments differ in what `deploy kubernetes` renders of them:
//! resources (CPU, memory, a GPU of a kind), reuse policies (and none), an environment with
//! two tasks. Used by `tests/deploy_kubernetes.rs`.

use std::sync::LazyLock;
use std::time::Duration;

use weir::prelude::*;

static INFER: LazyLock<TaskEnvironment> = LazyLock::new(|| {
    TaskEnvironment::new("gpu_infer")
        .resources(Resources::new().cpu(4).memory("16Gi").gpu("A10G:1"))
        .reuse(
            ReusePolicy::new()
                .replicas(2..=6)
                .concurrency(8)
                .scaledown_ttl(Duration::from_secs(90)),
        )
});

static ETL: LazyLock<TaskEnvironment> = LazyLock::new(|| {
    TaskEnvironment::new("etl")
        .resources(Resources::new().cpu(0.5).memory("512Mi"))
        .reuse(ReusePolicy::new().replicas(1..=3).concurrency(2))
});

static PLAIN: LazyLock<TaskEnvironment> = LazyLock::new(|| TaskEnvironment::new("plain"));

static BURST: LazyLock<TaskEnvironment> = LazyLock::new(|| {
    TaskEnvironment::new("burst")
        .resources(Resources::new().gpu("2"))
        .reuse(ReusePolicy::new().replicas(0..=4))
});

/// Doubles `x` on a GPU worker.
#[weir::task(env = INFER)]
async fn infer(x: u64) -> Result<u64> {
    Ok(x * 2)
}

/// Adds one.
#[weir::task(env = ETL)]
async fn extract(x: u64) -> Result<u64> {
    Ok(x + 1)
}

/// Calls `extract` and `infer`.
#[weir::task(env = ETL)]
async fn load(x: u64) -> Result<u64> {
    let y = extract(x).await?;
    infer(y).await
}

/// Returns its input.
#[weir::task(env = PLAIN)]
async fn echo(x: u64) -> Result<u64> {
    Ok(x)
}

/// Returns its input.
#[weir::task(env = BURST)]
async fn spike(x: u64) -> Result<u64> {
    Ok(x)
}

fn main() -> std::process::ExitCode {
    weir::cli::main()
}
