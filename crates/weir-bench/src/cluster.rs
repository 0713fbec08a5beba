//! Cluster-mode workloads (issue "Cluster mode"): `serve` replicas of this binary on
//! PostgreSQL (`WEIR_BENCH_POSTGRES`, default `postgres://postgres@127.0.0.1:5432/test`, a
//! fresh schema per measurement, dropped after), workers of this binary, and the client in
//! this process.
//!
//! - `w1c`: w1 (N trivial children with `join_all`) through one `serve` and 2 worker
//!   processes × 8 slots; `actions_per_s`.
//! - `w2c`: a chain of N sequential child calls through `serve`; `per_hop_ms`.
//! - `failover`: a fan-out of sleeping children through two replicas, the workers and the
//!   client on the first; SIGKILL it once children complete steadily; `failover_s` is the time
//!   from the kill until children complete again (seen through the second replica).

use std::process::{Child, Command, Stdio};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use weir::prelude::*;
use weir_engine::cluster::{ClusterClient, RunSubmission, binary_version, local_specs};

static CLUSTER: LazyLock<TaskEnvironment> = LazyLock::new(|| TaskEnvironment::new("cbench"));

#[weir::task(env = CLUSTER)]
async fn c_double(x: u64) -> Result<u64> {
    Ok(x * 2)
}

#[weir::task(env = CLUSTER)]
async fn c_fan_out(n: u64) -> Result<u64> {
    let results = futures::future::join_all((0..n).map(c_double)).await;
    results.into_iter().sum()
}

/// w8c: one ~20 µs item per action.
#[weir::task(env = CLUSTER)]
async fn c_w8_item(x: u64) -> Result<u64> {
    Ok(crate::w8::work(x))
}

/// w8c: a batch of ~20 µs items.
#[weir::task(env = CLUSTER)]
async fn c_w8_items(xs: Vec<u64>) -> Result<Vec<u64>> {
    Ok(xs.into_iter().map(crate::w8::work).collect())
}

#[weir::task(env = CLUSTER)]
async fn c_w8_unbatched(n: u64) -> Result<u64> {
    Ok(weir::map(c_w8_item, 0..n)
        .fail_fast()
        .await?
        .into_iter()
        .sum())
}

#[weir::task(env = CLUSTER)]
async fn c_w8_batched(n: u64) -> Result<u64> {
    Ok(weir::map(c_w8_items, 0..n)
        .auto_batch()
        .fail_fast()
        .await?
        .into_iter()
        .sum())
}

#[weir::task(env = CLUSTER)]
async fn c_inc(x: u64) -> Result<u64> {
    Ok(x + 1)
}

#[weir::task(env = CLUSTER)]
async fn c_chain(hops: u64) -> Result<u64> {
    let mut acc = 0;
    for _ in 0..hops {
        acc = c_inc(acc).await?;
    }
    Ok(acc)
}

#[weir::task(env = CLUSTER)]
async fn c_sleepy(x: u64) -> Result<u64> {
    tokio::time::sleep(Duration::from_millis(20)).await;
    Ok(x)
}

#[weir::task(env = CLUSTER)]
async fn c_sleepy_fan(n: u64) -> Result<u64> {
    Ok(weir::map(c_sleepy, 0..n)
        .concurrency(64)
        .fail_fast()
        .await?
        .into_iter()
        .sum())
}

const TOKEN: &str = "bench-cluster-token";

fn database() -> String {
    std::env::var("WEIR_BENCH_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Processes of one measurement; killed, and the schema dropped, when dropped.
struct Bench {
    dir: tempfile::TempDir,
    schema: String,
    children: Vec<Child>,
}

impl Bench {
    fn new() -> Bench {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        Bench {
            dir: tempfile::tempdir().expect("temporary directory"),
            schema: format!("bench_{}_{}", std::process::id(), nanos % 1_000_000_000),
            children: Vec::new(),
        }
    }

    fn spawn(&mut self, args: &[&str], log: &str) -> usize {
        let exe = std::env::current_exe().expect("own path");
        let log = std::fs::File::create(self.dir.path().join(log)).expect("log file");
        let child = Command::new(exe)
            .args(args)
            .arg("--state-dir")
            .arg(self.dir.path())
            .env("WEIR_TOKEN", TOKEN)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start a process of this binary");
        self.children.push(child);
        self.children.len() - 1
    }

    /// Starts a replica on `port`; returns its URL once it answers.
    async fn serve(&mut self, port: u16) -> anyhow::Result<(usize, String)> {
        let listen = format!("127.0.0.1:{port}");
        let db = database();
        let schema = self.schema.clone();
        let i = self.spawn(
            &[
                "serve",
                "--database",
                &db,
                "--schema",
                &schema,
                "--listen",
                &listen,
            ],
            &format!("serve-{port}.log"),
        );
        let url = format!("http://{listen}");
        let client = ClusterClient::new(&url, TOKEN);
        let t0 = Instant::now();
        while client.runs(None, None, 1).await.is_err() {
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(30),
                "serve did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok((i, url))
    }

    fn workers(&mut self, servers: &str, n: usize, slots: usize) {
        for k in 0..n {
            let slots = slots.to_string();
            self.spawn(
                &[
                    "worker",
                    "--server",
                    servers,
                    "--env",
                    "cbench",
                    "--concurrency",
                    &slots,
                ],
                &format!("worker-{k}.log"),
            );
        }
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let schema = self.schema.clone();
        let url = database();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .ok()?;
                tokio::spawn(conn);
                client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                    .await
                    .ok()
            })
        })
        .join();
    }
}

fn submission(task: &str, inputs: serde_json::Value, name: &str) -> anyhow::Result<RunSubmission> {
    Ok(RunSubmission {
        task: task.to_string(),
        inputs: weir_core::codec::encode(&inputs)?,
        context: serde_json::json!({ "name": name }).to_string(),
        version: binary_version().map_err(anyhow::Error::msg)?,
        tasks: local_specs(),
        rerun: None,
    })
}

/// Submits a run and waits for its end; (seconds, output).
async fn run(client: &ClusterClient, sub: &RunSubmission) -> anyhow::Result<(f64, u64)> {
    let t0 = Instant::now();
    let started = client.submit(sub).await.map_err(anyhow::Error::msg)?;
    loop {
        let v = client
            .run(&started.name, Duration::from_secs(5))
            .await
            .map_err(anyhow::Error::msg)?;
        if v.is_terminal() {
            let secs = t0.elapsed().as_secs_f64();
            anyhow::ensure!(
                v.status == "succeeded",
                "run {} {}: {:?}",
                v.name,
                v.status,
                v.error
            );
            let out: u64 = weir_core::codec::decode(
                v.output.as_ref().map(|b| b.as_slice()).unwrap_or_default(),
            )?;
            return Ok((secs, out));
        }
    }
}

/// w1c: `n` trivial children through one replica and 2 workers × 8 slots; median of
/// `repeat` runs after a warm-up.
pub async fn w1c(n: u64, repeat: usize) -> anyhow::Result<f64> {
    let mut b = Bench::new();
    let (_, url) = b.serve(18_701).await?;
    b.workers(&url, 2, 8);
    let client = ClusterClient::new(&url, TOKEN);
    let warm = submission("cbench.c_fan_out", serde_json::json!({"n": 100}), "warm")?;
    run(&client, &warm).await?;
    let mut times = Vec::new();
    for k in 0..repeat.max(1) {
        let sub = submission(
            "cbench.c_fan_out",
            serde_json::json!({"n": n}),
            &format!("w1c-{k}"),
        )?;
        let (secs, out) = run(&client, &sub).await?;
        anyhow::ensure!(out == n * (n - 1), "wrong result {out}");
        times.push(secs);
    }
    Ok(crate::median(times))
}

/// w8c: `n` ~20 µs items one per action, then with `.auto_batch()`, through one replica and
/// 2 workers × 8 slots: (unbatched seconds, batched seconds, the k chosen).
pub async fn w8c(n: u64) -> anyhow::Result<(f64, f64, u64)> {
    let mut b = Bench::new();
    let (_, url) = b.serve(18_703).await?;
    b.workers(&url, 2, 8);
    let client = ClusterClient::new(&url, TOKEN);
    let warm = submission(
        "cbench.c_w8_unbatched",
        serde_json::json!({"n": 100}),
        "warm",
    )?;
    run(&client, &warm).await?;
    let expected = n * (n + 1) / 2;
    let sub = submission(
        "cbench.c_w8_unbatched",
        serde_json::json!({"n": n}),
        "w8c-one",
    )?;
    let (unbatched, out) = run(&client, &sub).await?;
    anyhow::ensure!(out == expected, "wrong result {out}");
    let sub = submission(
        "cbench.c_w8_batched",
        serde_json::json!({"n": n}),
        "w8c-auto",
    )?;
    let (batched, out) = run(&client, &sub).await?;
    anyhow::ensure!(out == expected, "wrong result {out}");
    // The k recorded by the weir.auto_batch trace.
    let actions = client
        .actions("w8c-auto", 0, 10)
        .await
        .map_err(anyhow::Error::msg)?;
    let trace = actions
        .iter()
        .find(|a| a.task == "weir.auto_batch")
        .ok_or_else(|| anyhow::anyhow!("no weir.auto_batch trace in the first actions"))?;
    let view = client
        .action("w8c-auto", &trace.id.to_string())
        .await
        .map_err(anyhow::Error::msg)?;
    let k: u64 = weir_core::codec::decode(view.output.as_ref().map_or(&[][..], |b| b.as_slice()))?;
    Ok((unbatched, batched, k))
}

/// w2c: a chain of `hops` through one replica and one worker; median seconds.
pub async fn w2c(hops: u64, repeat: usize) -> anyhow::Result<f64> {
    let mut b = Bench::new();
    let (_, url) = b.serve(18_702).await?;
    b.workers(&url, 1, 8);
    let client = ClusterClient::new(&url, TOKEN);
    let warm = submission("cbench.c_chain", serde_json::json!({"hops": 5}), "warm")?;
    run(&client, &warm).await?;
    let mut times = Vec::new();
    for k in 0..repeat.max(1) {
        let sub = submission(
            "cbench.c_chain",
            serde_json::json!({"hops": hops}),
            &format!("w2c-{k}"),
        )?;
        let (secs, out) = run(&client, &sub).await?;
        anyhow::ensure!(out == hops, "wrong result {out}");
        times.push(secs);
    }
    Ok(crate::median(times))
}

/// failover: seconds from the SIGKILL of the replica in use until children complete again.
pub async fn failover(n: u64) -> anyhow::Result<f64> {
    let mut b = Bench::new();
    let (a, url_a) = b.serve(18_703).await?;
    let (_, url_b) = b.serve(18_704).await?;
    let both = format!("{url_a},{url_b}");
    b.workers(&both, 2, 16);
    let via_a = ClusterClient::new(&url_a, TOKEN);
    let via_b = ClusterClient::new(&url_b, TOKEN);
    let warm = submission("cbench.c_sleepy_fan", serde_json::json!({"n": 10}), "warm")?;
    run(&via_a, &warm).await?;
    let sub = submission(
        "cbench.c_sleepy_fan",
        serde_json::json!({"n": n}),
        "failover",
    )?;
    via_a.submit(&sub).await.map_err(anyhow::Error::msg)?;
    let succeeded =
        |v: &weir_engine::cluster::RunView| v.actions.get("succeeded").copied().unwrap_or(0);
    // Let it run steadily, then kill the replica everyone uses.
    loop {
        let v = via_b
            .run("failover", Duration::ZERO)
            .await
            .map_err(anyhow::Error::msg)?;
        if succeeded(&v) >= n / 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    b.children[a].kill()?;
    b.children[a].wait()?;
    let killed = Instant::now();
    let at_kill = succeeded(
        &via_b
            .run("failover", Duration::ZERO)
            .await
            .map_err(anyhow::Error::msg)?,
    );
    // Completions committed by the dead replica before it died are already counted above: the
    // next increase is work done through the other one.
    loop {
        let v = via_b
            .run("failover", Duration::ZERO)
            .await
            .map_err(anyhow::Error::msg)?;
        if succeeded(&v) > at_kill {
            let secs = killed.elapsed().as_secs_f64();
            // And the run finishes with the right output.
            let (_, out) = {
                let mut v = v;
                while !v.is_terminal() {
                    v = via_b
                        .run("failover", Duration::from_secs(5))
                        .await
                        .map_err(anyhow::Error::msg)?;
                }
                anyhow::ensure!(
                    v.status == "succeeded",
                    "failover run {}: {:?}",
                    v.status,
                    v.error
                );
                (
                    0.0,
                    weir_core::codec::decode::<u64>(
                        v.output.as_ref().map(|b| b.as_slice()).unwrap_or_default(),
                    )?,
                )
            };
            anyhow::ensure!(out == n * (n - 1) / 2, "wrong result {out}");
            return Ok(secs);
        }
        anyhow::ensure!(
            killed.elapsed() < Duration::from_secs(60),
            "no progress after failover"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
