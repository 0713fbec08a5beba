//! weir's benchmark harness (`shared/BENCHMARKS.md`).
//!
//! ```text
//! cargo run --release -p weir-bench -- <workload> [--n N] [--repeat R] [--json]
//! cargo run --release -p weir-bench -- all        # every workload, one process each, markdown table
//! ```
//! Engine workloads run embedded, in process, durable (SQLite in WAL mode, a fresh temporary
//! state directory per measured run). `seconds` is the median of `--repeat` runs of the
//! measured part; opening the engine is reported as `startup_seconds`.

mod cluster;
mod w4;
mod w4df;
mod w5;
mod w7;
mod w8;

use std::sync::LazyLock;
use std::time::Instant;

use clap::Parser;
use serde_json::{Value, json};
use weir::prelude::*;

static BENCH: LazyLock<TaskEnvironment> = LazyLock::new(|| TaskEnvironment::new("bench"));

#[weir::task(env = BENCH)]
async fn double(x: u64) -> Result<u64> {
    Ok(x * 2)
}

/// w1: N concurrent child calls gathered with join_all.
#[weir::task(env = BENCH)]
async fn fan_out(n: u64) -> Result<u64> {
    let results = futures::future::join_all((0..n).map(double)).await;
    results.into_iter().sum()
}

/// w1map: the same through weir::map.
#[weir::task(env = BENCH)]
async fn fan_out_map(n: u64) -> Result<u64> {
    Ok(weir::map(double, 0..n).fail_fast().await?.into_iter().sum())
}

/// One batch of w1m.
#[weir::task(env = BENCH)]
async fn batch(b: u64, per: u64) -> Result<u64> {
    Ok(weir::map(double, b * per..(b + 1) * per)
        .fail_fast()
        .await?
        .into_iter()
        .sum())
}

/// w1m: batches × per children in one run.
#[weir::task(env = BENCH)]
async fn million(batches: u64, per: u64, width: usize) -> Result<u64> {
    Ok(weir::map(move |b| batch(b, per), 0..batches)
        .concurrency(width)
        .fail_fast()
        .await?
        .into_iter()
        .sum())
}

/// w2: sequential child calls, each awaiting the previous.
#[weir::task(env = BENCH)]
async fn chain(hops: u64) -> Result<u64> {
    let mut acc = 0;
    for _ in 0..hops {
        acc = inc(acc).await?;
    }
    Ok(acc)
}

#[weir::task(env = BENCH)]
async fn inc(x: u64) -> Result<u64> {
    Ok(x + 1)
}

/// w3: a cached child (version from its source).
#[weir::task(env = BENCH, cache = "auto")]
async fn cached_double(x: u64) -> Result<u64> {
    Ok(x * 2)
}

/// w3: N concurrent cached children.
#[weir::task(env = BENCH)]
async fn fan_out_cached(n: u64) -> Result<u64> {
    let results = futures::future::join_all((0..n).map(cached_double)).await;
    results.into_iter().sum()
}

/// w3: cold run then warm run on one state directory; medians of (cold, warm, startup).
async fn measure_cache(repeat: usize, n: u64) -> anyhow::Result<(f64, f64, f64)> {
    let (mut colds, mut warms, mut startups) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..repeat.max(1) {
        let dir = tempfile::tempdir()?;
        let t0 = Instant::now();
        let runner = weir::Runner::embedded(dir.path()).await?;
        startups.push(t0.elapsed().as_secs_f64());
        for times in [&mut colds, &mut warms] {
            let t = Instant::now();
            let out = runner.run(fan_out_cached(n)).await?.wait().await?;
            times.push(t.elapsed().as_secs_f64());
            anyhow::ensure!(out == n * (n - 1), "wrong result {out}");
        }
        runner.engine().flush()?;
    }
    Ok((median(colds), median(warms), median(startups)))
}

#[derive(Parser, Debug)]
#[command(about = "weir benchmark harness")]
struct Args {
    /// w1, w1map, w1m, w2, w3, w4, w4df, w5a, w5b, w7 (w7reuse, w7fresh), w8, w8p, w8c, or all.
    workload: String,
    /// Size (default: the workload's default sizes).
    #[arg(long)]
    n: Option<u64>,
    /// Measured repetitions; the median is reported.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// One JSON object per configuration.
    #[arg(long)]
    json: bool,
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    xs[xs.len() / 2]
}

/// Runs `call` on a fresh embedded engine `repeat` times; returns (median seconds, median startup).
async fn measure<O, F>(repeat: usize, expected: O, make: F) -> anyhow::Result<(f64, f64)>
where
    O: serde::de::DeserializeOwned + PartialEq + std::fmt::Debug + Clone,
    F: Fn() -> weir::TaskCall<O>,
{
    let mut times = Vec::new();
    let mut startups = Vec::new();
    for _ in 0..repeat.max(1) {
        let dir = tempfile::tempdir()?;
        let t0 = Instant::now();
        let runner = weir::Runner::embedded(dir.path()).await?;
        startups.push(t0.elapsed().as_secs_f64());
        let t1 = Instant::now();
        let run = runner.run(make()).await?;
        let out = run.wait().await?;
        times.push(t1.elapsed().as_secs_f64());
        anyhow::ensure!(out == expected, "wrong result: {out:?} != {expected:?}");
        runner.engine().flush()?;
    }
    Ok((median(times), median(startups)))
}

/// Runs a workload `repeat` times and returns the run with the median time.
async fn median_run<R, Fut: std::future::Future<Output = R>>(
    repeat: usize,
    make: impl Fn() -> Fut,
    seconds: impl Fn(&R) -> f64,
) -> R {
    let mut results = Vec::new();
    for _ in 0..repeat.max(1) {
        results.push(make().await);
    }
    results.sort_by(|a, b| seconds(a).total_cmp(&seconds(b)));
    results.swap_remove(results.len() / 2)
}

fn engine_row(workload: &str, n: u64, actions: u64, seconds: f64, startup: f64) -> Value {
    json!({
        "workload": workload,
        "n": n,
        "seconds": seconds,
        "per_action_us": seconds * 1e6 / actions as f64,
        "actions_per_s": actions as f64 / seconds,
        "peak_rss_mb": peak_rss_mb(),
        "startup_seconds": startup,
        "mode": "embedded-inproc",
    })
}

async fn run_workload(name: &str, n: Option<u64>, repeat: usize) -> anyhow::Result<Vec<Value>> {
    let mut rows = Vec::new();
    match name {
        "w1" => {
            for n in n
                .map(|n| vec![n])
                .unwrap_or_else(|| vec![100, 1_000, 10_000, 100_000])
            {
                let (s, st) = measure(repeat, n * (n - 1), || fan_out(n)).await?;
                rows.push(engine_row("w1", n, n + 1, s, st));
            }
        }
        "w1map" => {
            for n in n
                .map(|n| vec![n])
                .unwrap_or_else(|| vec![1_000, 10_000, 100_000])
            {
                let (s, st) = measure(repeat, n * (n - 1), || fan_out_map(n)).await?;
                rows.push(engine_row("w1map", n, n + 1, s, st));
            }
        }
        "w1m" => {
            let n = n.unwrap_or(1_000_000);
            let per = 1_000u64.min(n);
            let batches = n / per;
            let total = batches * per;
            let (s, st) = measure(repeat.min(1), total * (total - 1), || {
                million(batches, per, 16)
            })
            .await?;
            let mut row = engine_row("w1m", total, total + batches + 1, s, st);
            row["batches"] = json!(batches);
            rows.push(row);
        }
        "w3" => {
            let n = n.unwrap_or(1_000);
            let (cold, warm, st) = measure_cache(repeat, n).await?;
            let mut row = engine_row("w3", n, n + 1, cold, st);
            row["cold_seconds"] = json!(cold);
            row["warm_seconds"] = json!(warm);
            rows.push(row);
        }
        "w2" => {
            let hops = n.unwrap_or(100);
            let (s, st) = measure(repeat, hops, || chain(hops)).await?;
            let mut row = engine_row("w2", hops, hops + 1, s, st);
            row["per_hop_us"] = json!(s * 1e6 / hops as f64);
            rows.push(row);
        }
        "w7" | "w7reuse" | "w7fresh" => {
            if name != "w7fresh" {
                let n = n.unwrap_or(10_000) as usize;
                let r = &median_run(repeat, || w7::w7_reusable(n), |r| r.seconds).await;
                rows.push(json!({
                    "workload": "w7reuse", "n": r.n, "seconds": r.seconds, "actions_per_s": r.actions_per_s,
                    "per_action_us": r.seconds * 1e6 / n as f64, "workers_started": r.workers_started,
                    "peak_rss_mb": peak_rss_mb(), "mode": "embedded-processes (replicas 2, concurrency 8)",
                }));
            }
            if name != "w7reuse" {
                let n = n.map(|n| n.min(1_000)).unwrap_or(200) as usize;
                let r = w7::w7_fresh(n).await;
                rows.push(json!({
                    "workload": "w7fresh", "n": r.n, "seconds": r.seconds, "actions_per_s": r.actions_per_s,
                    "median_action_ms": r.median_action_ms, "p90_action_ms": r.p90_action_ms,
                    "cold_start_ms": r.median_action_ms,
                    "per_action_us": r.median_action_ms * 1e3, "workers_started": r.workers_started,
                    "peak_rss_mb": peak_rss_mb(), "mode": "embedded-processes (fresh process per action)",
                }));
            }
        }
        "w4" => {
            let mib = n.unwrap_or(50);
            let s = w4::w4(mib, repeat).await?;
            rows.push(json!({
                "workload": "w4", "n": mib, "seconds": s, "mib_per_s": mib as f64 / s,
                "peak_rss_mb": peak_rss_mb(), "mode": "embedded-inproc, file:// store",
            }));
        }
        "w4df" => {
            let count = n.unwrap_or(10_000_000);
            let r = w4df::w4df(count, repeat).await?;
            rows.push(json!({
                "workload": "w4df", "n": count, "seconds": r.seconds,
                "rows_per_s": count as f64 / r.seconds, "parquet_bytes": r.bytes,
                "peak_rss_mb": peak_rss_mb(), "mode": "embedded-inproc, file:// store",
            }));
        }
        "w8" | "w8p" => {
            let n = n.unwrap_or(100_000);
            let processes = name == "w8p";
            let r = &median_run(
                repeat,
                || async { w8::w8(n, processes).await },
                |r| r.as_ref().map_or(f64::MAX, |r| r.batched_seconds),
            )
            .await;
            let r = r.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
            rows.push(json!({
                "workload": name, "n": n, "seconds": r.batched_seconds,
                "unbatched_seconds": r.unbatched_seconds, "batched_seconds": r.batched_seconds,
                "speedup": r.unbatched_seconds / r.batched_seconds, "batch_size": r.batch_size,
                "batched_actions": r.batched_actions, "peak_rss_mb": peak_rss_mb(),
                "mode": if processes { "embedded-processes (replicas 2, concurrency 8)" } else { "embedded-inproc" },
            }));
        }
        "w8c" => {
            let n = n.unwrap_or(100_000);
            let (unbatched, batched, k) = cluster::w8c(n).await?;
            rows.push(json!({
                "workload": "w8c", "n": n, "seconds": batched,
                "unbatched_seconds": unbatched, "batched_seconds": batched,
                "speedup": unbatched / batched, "batch_size": k, "peak_rss_mb": peak_rss_mb(),
                "mode": "cluster: 1 serve + PostgreSQL, 2 workers x 8 slots",
            }));
        }
        "w5a" => {
            let n = n.unwrap_or(200_000) as usize;
            let r = &median_run(repeat, || w5::w5a(n), |r| r.seconds).await;
            rows.push(json!({
                "workload": "w5a", "n": n, "records": r.records, "seconds": r.seconds, "records_per_s": r.records_per_s,
                "avg_batch_size": r.avg_batch_size, "batches": r.batches, "peak_rss_mb": peak_rss_mb(), "mode": "in-process",
            }));
        }
        "w5b" => {
            let n = n.unwrap_or(20_000) as usize;
            let r = &median_run(repeat, || w5::w5b(n), |r| r.seconds).await;
            rows.push(json!({
                "workload": "w5b", "n": n, "records": r.records, "seconds": r.seconds, "utilization": r.utilization,
                "avg_batch_size": r.avg_batch_size, "batches": r.batches, "peak_rss_mb": peak_rss_mb(), "mode": "in-process",
            }));
        }
        "w1c" => {
            let n = n.unwrap_or(10_000);
            let s = cluster::w1c(n, repeat).await?;
            let mut row = engine_row("w1c", n, n + 1, s, 0.0);
            row["mode"] = json!("cluster: 1 serve + PostgreSQL, 2 workers x 8 slots");
            rows.push(row);
        }
        "w2c" => {
            let hops = n.unwrap_or(100);
            let s = cluster::w2c(hops, repeat).await?;
            let mut row = engine_row("w2c", hops, hops + 1, s, 0.0);
            row["per_hop_ms"] = json!(s * 1e3 / hops as f64);
            row["mode"] = json!("cluster: 1 serve + PostgreSQL, 1 worker");
            rows.push(row);
        }
        "failover" => {
            let n = n.unwrap_or(3_000);
            let s = cluster::failover(n).await?;
            rows.push(json!({
                "workload": "failover", "n": n, "failover_s": s, "seconds": s,
                "mode": "cluster: 2 serve replicas, the one in use SIGKILLed mid fan-out",
            }));
        }
        other => {
            anyhow::bail!(
                "unknown workload {other:?}; use w1, w1map, w1m, w2, w3, w4, w4df, w5a, w5b, w7 (w7reuse, w7fresh), w8, w8p, w8c, w1c, w2c, failover or all"
            )
        }
    }
    Ok(rows)
}

fn cell(v: &Value, key: &str, digits: usize) -> String {
    v.get(key)
        .and_then(Value::as_f64)
        .map(|x| format!("{x:.digits$}"))
        .unwrap_or_else(|| "".into())
}

fn print_table(rows: &[Value]) {
    println!("| workload | n | seconds | per action µs | actions/s | peak RSS MB | extra |");
    println!("|---|---|---|---|---|---|---|");
    for r in rows {
        let extra = match r["workload"].as_str().unwrap_or("") {
            "w2" => format!("{} µs/hop", cell(r, "per_hop_us", 1)),
            "w8" | "w8p" | "w8c" => format!(
                "unbatched {} s, batched {} s, speedup {}×, k {}",
                cell(r, "unbatched_seconds", 3),
                cell(r, "batched_seconds", 3),
                cell(r, "speedup", 1),
                r["batch_size"]
            ),
            "w3" => format!(
                "cold {} s, warm {} s",
                cell(r, "cold_seconds", 4),
                cell(r, "warm_seconds", 4)
            ),
            "w5a" => format!(
                "{} records/s, avg batch {}",
                cell(r, "records_per_s", 0),
                cell(r, "avg_batch_size", 1)
            ),
            "w7fresh" => format!(
                "fresh process per action: median {} ms, p90 {} ms",
                cell(r, "median_action_ms", 2),
                cell(r, "p90_action_ms", 2)
            ),
            "w7reuse" => format!("{} worker processes", r["workers_started"]),
            "w2c" => format!("{} ms/hop", cell(r, "per_hop_ms", 3)),
            "failover" => format!("{} s to complete again", cell(r, "failover_s", 2)),
            "w5b" => format!(
                "utilization {}, {} batches, avg batch {}",
                cell(r, "utilization", 3),
                r["batches"],
                cell(r, "avg_batch_size", 1)
            ),
            _ => String::new(),
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            r["workload"].as_str().unwrap_or(""),
            r["n"],
            cell(r, "seconds", 4),
            cell(r, "per_action_us", 2),
            cell(r, "actions_per_s", 0),
            cell(r, "peak_rss_mb", 1),
            extra
        );
    }
}

fn main() -> anyhow::Result<()> {
    // w7 starts this binary again as its worker processes.
    // The cluster workloads start it as `serve` replicas and workers.
    if matches!(
        std::env::args().nth(1).as_deref(),
        Some("worker" | "serve" | "run")
    ) {
        let code = weir::cli::main();
        std::process::exit(if code == std::process::ExitCode::SUCCESS {
            0
        } else {
            1
        });
    }
    let args = Args::parse();
    if args.workload == "all" {
        // One process per workload so that peak RSS belongs to that workload alone.
        let exe = std::env::current_exe()?;
        let mut rows = Vec::new();
        for w in ["w1", "w1map", "w2", "w3", "w1m", "w5a", "w5b", "w7"] {
            let out = std::process::Command::new(&exe)
                .args([w, "--json", "--repeat", &args.repeat.to_string()])
                .output()?;
            anyhow::ensure!(
                out.status.success(),
                "{w} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let v: Value = serde_json::from_str(line)?;
                if args.json {
                    println!("{line}");
                }
                rows.push(v);
            }
        }
        if !args.json {
            print_table(&rows);
        }
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let rows = rt.block_on(run_workload(&args.workload, args.n, args.repeat))?;
    if args.json {
        for r in &rows {
            println!("{r}");
        }
    } else {
        print_table(&rows);
    }
    Ok(())
}
