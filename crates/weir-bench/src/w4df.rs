//! w4df: a task writes `n` rows × 4 columns (i64, f64, f64, i32) as a `weir::DataFrame`
//! (Parquet, streamed to the object store one row group at a time), the next task reads every
//! column back as record batches (hash checked first) and sums them; embedded, in process, on
//! the state directory's `file://` store. `seconds` is the round trip of the two tasks.

use std::sync::{Arc, LazyLock};
use std::time::Instant;

use futures::StreamExt;
use weir::arrow::array::{Float64Array, Int32Array, Int64Array, RecordBatch};
use weir::arrow::schema::{DataType, Field, Schema};
use weir::prelude::*;

static W4DF: LazyLock<TaskEnvironment> = LazyLock::new(|| TaskEnvironment::new("w4df"));

/// Rows per batch written.
const BATCH: u64 = 64 * 1024;

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("x", DataType::Float64, false),
        Field::new("y", DataType::Float64, false),
        Field::new("k", DataType::Int32, false),
    ]))
}

#[weir::task(env = W4DF)]
async fn w4df_write(rows: u64, seed: u64) -> Result<weir::DataFrame> {
    let mut w = weir::DataFrame::writer(schema())?;
    let mut at = 0;
    while at < rows {
        let to = (at + BATCH).min(rows);
        let ids: Vec<i64> = (at as i64..to as i64).collect();
        let x: Vec<f64> = ids
            .iter()
            .map(|&i| (i as f64) * 0.5 + seed as f64)
            .collect();
        let y: Vec<f64> = ids.iter().map(|&i| ((i * 7919) % 1000) as f64).collect();
        let k: Vec<i32> = ids.iter().map(|&i| (i % 97) as i32).collect();
        let batch = RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(Float64Array::from(x)),
                Arc::new(Float64Array::from(y)),
                Arc::new(Int32Array::from(k)),
            ],
        )
        .map_err(Error::msg)?;
        w.write(&batch).await?;
        at = to;
    }
    w.finish().await
}

#[weir::task(env = W4DF)]
async fn w4df_read(df: weir::DataFrame) -> Result<(u64, i64)> {
    let mut stream = df.read().await?;
    let (mut rows, mut sum) = (0u64, 0i64);
    while let Some(b) = stream.next().await {
        let b = b?;
        rows += b.num_rows() as u64;
        let ids = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        sum = sum.wrapping_add(ids.values().iter().sum::<i64>());
    }
    Ok((rows, sum))
}

#[weir::task(env = W4DF)]
async fn w4df_round(rows: u64, seed: u64) -> Result<(u64, i64, u64)> {
    let df = w4df_write(rows, seed).await?;
    let size = df.size();
    let (n, sum) = w4df_read(df).await?;
    Ok((n, sum, size))
}

/// What one w4df measurement gives.
pub struct W4df {
    /// Median round-trip seconds.
    pub seconds: f64,
    /// Size of the Parquet object in bytes.
    pub bytes: u64,
}

/// The median of `repeat` round trips (a fresh content each time).
pub async fn w4df(rows: u64, repeat: usize) -> anyhow::Result<W4df> {
    let dir = tempfile::tempdir()?;
    let runner = Runner::embedded(dir.path()).await?;
    let mut times = Vec::new();
    let mut bytes = 0;
    for k in 0..repeat.max(1) {
        let t = Instant::now();
        let (n, sum, size) = runner
            .run(w4df_round(rows, k as u64 + 1))
            .await?
            .wait()
            .await?;
        times.push(t.elapsed().as_secs_f64());
        anyhow::ensure!(n == rows, "read {n} rows of {rows}");
        let want = (0..rows as i64).fold(0i64, |a, i| a.wrapping_add(i));
        anyhow::ensure!(sum == want, "the ids read back sum to {sum}, not {want}");
        bytes = size;
    }
    runner.engine().flush()?;
    Ok(W4df {
        seconds: crate::median(times),
        bytes,
    })
}
