//! w4: a task returns `n` MiB as a `weir::File` (streamed from a generator, never held in
//! memory), the next task reads all of it (streamed, hash checked); embedded, in process, on the
//! state directory's `file://` store. `seconds` is the round trip of the two tasks.

use std::sync::LazyLock;
use std::time::Instant;

use tokio::io::AsyncReadExt;
use weir::prelude::*;

static W4: LazyLock<TaskEnvironment> = LazyLock::new(|| TaskEnvironment::new("w4"));

#[weir::task(env = W4)]
async fn w4_write(mib: u64, seed: u8) -> Result<weir::File> {
    weir::File::from_reader(tokio::io::repeat(seed).take(mib << 20)).await
}

#[weir::task(env = W4)]
async fn w4_read(f: weir::File) -> Result<u64> {
    f.read_to(&mut tokio::io::sink()).await?;
    Ok(f.size())
}

#[weir::task(env = W4)]
async fn w4_round(mib: u64, seed: u8) -> Result<u64> {
    let f = w4_write(mib, seed).await?;
    w4_read(f).await
}

/// Seconds of the round trip (the median of `repeat`, a fresh content each time so that no
/// upload is deduplicated).
pub async fn w4(mib: u64, repeat: usize) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let runner = Runner::embedded(dir.path()).await?;
    let mut times = Vec::new();
    for k in 0..repeat.max(1) {
        let t = Instant::now();
        let n = runner.run(w4_round(mib, k as u8 + 1)).await?.wait().await?;
        times.push(t.elapsed().as_secs_f64());
        anyhow::ensure!(n == mib << 20, "read {n} bytes");
    }
    runner.engine().flush()?;
    Ok(crate::median(times))
}
