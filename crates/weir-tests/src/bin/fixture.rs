//! A user program for weir's integration tests: a few tasks and `weir::cli::main()`.

#[path = "fixture/advise.rs"]
mod advise;

use std::io::Write;
use std::sync::LazyLock;
use std::time::Duration;

use weir::prelude::*;

static FX: LazyLock<TaskEnvironment> = LazyLock::new(|| TaskEnvironment::new("fx"));

fn log_line(log: &str, line: String) {
    if log.is_empty() {
        return;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file opens");
    f.write_all(format!("{line}\n").as_bytes())
        .expect("log line written");
}

/// Records one execution of `i`, sleeps, returns `i * 2`.
#[weir::task(env = FX)]
async fn child(i: u64, sleep_ms: u64, log: String) -> Result<u64> {
    log_line(&log, format!("start {i}"));
    tokio::time::sleep(Duration::from_millis(sleep_ms)).await;
    log_line(&log, format!("end {i}"));
    Ok(i * 2)
}

/// Fans `child` out over `0..n`, `width` at a time, and sums the results.
#[weir::task(env = FX)]
async fn fanout(n: u64, width: usize, sleep_ms: u64, log: String) -> Result<u64> {
    let log2 = log.clone();
    let results = weir::map(move |i| child(i, sleep_ms, log2.clone()), 0..n)
        .concurrency(width)
        .fail_fast()
        .await?;
    log_line(&log, "parent done".into());
    Ok(results.into_iter().sum())
}

/// Logs through `tracing`: the span its attempt runs in names the run and the action.
#[weir::task(env = FX)]
async fn traced(n: u64) -> Result<u64> {
    tracing::info!(n, "traced task says hello");
    Ok(n)
}

/// Adds two numbers.
#[weir::task(env = FX)]
async fn add(a: i64, b: i64) -> Result<i64> {
    Ok(a + b)
}

/// Always fails without retry.
#[weir::task(env = FX, retries = 3)]
async fn refuse(reason: String) -> Result<u64> {
    Err(Error::non_recoverable(reason))
}

/// `child` over `0..n` and one `step` trace; then fails for good while the file `gate`
/// exists (for `rerun --recover`).
#[weir::task(env = FX)]
async fn gated(n: u64, gate: String, log: String) -> Result<u64> {
    let log2 = log.clone();
    let results = weir::map(move |i| child(i, 0, log2.clone()), 0..n)
        .fail_fast()
        .await?;
    let traced = step(100, log.clone()).await?;
    if std::path::Path::new(&gate).exists() {
        return Err(Error::non_recoverable(format!("the gate {gate} is closed")));
    }
    Ok(results.into_iter().sum::<u64>() + traced)
}

/// A checkpointed step: logs, sleeps, returns `i`.
#[weir::trace]
async fn step(i: u64, log: String) -> Result<u64> {
    log_line(&log, format!("step {i}"));
    tokio::time::sleep(Duration::from_millis(40)).await;
    Ok(i)
}

/// A checkpointed stream: logs each item as it is produced.
#[weir::trace]
fn produce(n: u64, log: String) -> impl futures::Stream<Item = u64> {
    use futures::StreamExt;
    futures::stream::iter(0..n).then(move |i| {
        let log = log.clone();
        async move {
            log_line(&log, format!("item {i}"));
            tokio::time::sleep(Duration::from_millis(10)).await;
            i * 3
        }
    })
}

/// Ten traces in sequence, then a stream trace, then a pause (a window to kill the process).
#[weir::task(env = FX)]
async fn traced_job(log: String, pause_ms: u64) -> Result<u64> {
    use futures::StreamExt;
    let mut sum = 0;
    for i in 0..10 {
        sum += step(i, log.clone()).await?;
    }
    let items: Vec<u64> = produce(5, log.clone()).collect().await;
    log_line(&log, "streamed".into());
    tokio::time::sleep(Duration::from_millis(pause_ms)).await;
    log_line(&log, "job done".into());
    Ok(sum + items.iter().sum::<u64>())
}

/// Cached under version v1; logs each real execution.
#[weir::task(env = FX, cache = "v1")]
async fn cached_add(a: i64, b: i64, log: String) -> Result<i64> {
    log_line(&log, "cached_add".into());
    Ok(a + b)
}

/// Calls the cached task.
#[weir::task(env = FX)]
async fn call_cached(a: i64, b: i64, log: String) -> Result<i64> {
    cached_add(a, b, log).await
}

/// Prints known lines to stdout and stderr (and `lines` numbered ones to stdout). While
/// `marker` names a file that does not exist, creates it and fails (retryable) after printing:
/// its retry prints again and succeeds.
#[weir::task(env = FX, retries = 1)]
async fn chatty(tag: String, lines: u64, marker: String) -> Result<String> {
    println!("chatty {tag} on stdout");
    eprintln!("chatty {tag} on stderr");
    for i in 0..lines {
        println!("chatty {tag} line {i:06} ..........");
    }
    if !marker.is_empty() && !std::path::Path::new(&marker).exists() {
        std::fs::write(&marker, "failed once").expect("marker written");
        println!("chatty {tag} fails its first attempt");
        return Err(Error::msg(format!("chatty {tag}: first attempt fails")));
    }
    Ok(format!("{tag} done"))
}

/// `chatty` for each tag in turn; the first one's `marker` makes it fail once.
#[weir::task(env = FX)]
async fn chatter(tags: Vec<String>, marker: String) -> Result<Vec<String>> {
    println!("chatter starts");
    let mut out = Vec::new();
    for (i, tag) in tags.into_iter().enumerate() {
        let marker = if i == 0 {
            marker.clone()
        } else {
            String::new()
        };
        out.push(chatty(tag, 0, marker).await?);
    }
    Ok(out)
}

// ---- Worker processes (SPEC §7): environments run by `run --workers process`. ----

/// Reused workers: 1 to 3 replicas of 2 slots each.
static FXW: LazyLock<TaskEnvironment> = LazyLock::new(|| {
    TaskEnvironment::new("fxw").reuse(ReusePolicy::new().replicas(1..=3).concurrency(2))
});
/// No reuse policy: a fresh process per action.
static FXD: LazyLock<TaskEnvironment> = LazyLock::new(|| TaskEnvironment::new("fxd"));
/// One replica with one slot (nested calls must not deadlock).
static FXS: LazyLock<TaskEnvironment> = LazyLock::new(|| {
    TaskEnvironment::new("fxs").reuse(ReusePolicy::new().replicas(1..=1).concurrency(1))
});

/// Attempts running in this process now.
static IN_FLIGHT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Records its pid and the in-flight count of its process, sleeps, returns `i * 2`.
#[weir::task(env = FXW)]
async fn wwork(i: u64, sleep_ms: u64, log: String) -> Result<u64> {
    use std::sync::atomic::Ordering;
    let pid = std::process::id();
    let n = IN_FLIGHT.fetch_add(1, Ordering::SeqCst) + 1;
    println!("wwork {i} says hello from pid {pid}");
    log_line(&log, format!("start {i} pid={pid} inflight={n}"));
    tokio::time::sleep(Duration::from_millis(sleep_ms)).await;
    IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    log_line(&log, format!("end {i} pid={pid}"));
    Ok(i * 2)
}

/// A burst of `n` `wwork` calls at once, a pause with no work, then one more call.
#[weir::task(env = FXD)]
async fn wburst(n: u64, sleep_ms: u64, pause_ms: u64, log: String) -> Result<u64> {
    let log2 = log.clone();
    let results = weir::map(move |i| wwork(i, sleep_ms, log2.clone()), 0..n)
        .fail_fast()
        .await?;
    log_line(&log, "burst done".into());
    tokio::time::sleep(Duration::from_millis(pause_ms)).await;
    let last = wwork(100, 0, log.clone()).await?;
    Ok(results.into_iter().sum::<u64>() + last)
}

/// The pid of the process that runs it.
#[weir::task(env = FXD)]
async fn wpid(i: u64) -> Result<u32> {
    println!("wpid {i} runs in pid {}", std::process::id());
    Ok(std::process::id())
}

/// Calls `wpid` `n` times in sequence; returns their pids and its own last.
#[weir::task(env = FXD)]
async fn wpids(n: u64) -> Result<Vec<u32>> {
    let mut pids = Vec::new();
    for i in 0..n {
        pids.push(wpid(i).await?);
    }
    pids.push(std::process::id());
    Ok(pids)
}

/// A child in the one-slot environment.
#[weir::task(env = FXS)]
async fn wnest_child(i: u64) -> Result<u64> {
    Ok(i + 1)
}

/// Calls children of its own one-slot environment: in sequence, then two at once.
#[weir::task(env = FXS)]
async fn wnest_parent(n: u64) -> Result<u64> {
    let mut sum = 0;
    for i in 0..n {
        sum += wnest_child(i).await?;
    }
    let (a, b) = futures::join!(wnest_child(100), wnest_child(200));
    Ok(sum + a? + b?)
}

/// A child that says which process runs it: `nstart I PID` and `nend I PID` lines in `log`,
/// and a line on stdout (so the attempt's recorded log names the worker whose completion was
/// accepted; tests/cluster_netns.rs). Returns `i * 3`.
#[weir::task(env = FX)]
async fn nchild(i: u64, sleep_ms: u64, log: String) -> Result<u64> {
    let pid = std::process::id();
    log_line(&log, format!("nstart {i} {pid}"));
    println!("nchild {i} runs in pid {pid}");
    tokio::time::sleep(Duration::from_millis(sleep_ms)).await;
    log_line(&log, format!("nend {i} {pid}"));
    Ok(i * 3)
}

/// Fans `nchild` out over `0..n`, `width` at a time, from the parent environment `fxd` (so
/// the parent runs on workers of its own), and sums the results.
#[weir::task(env = FXD)]
async fn nfan(n: u64, width: usize, sleep_ms: u64, log: String) -> Result<u64> {
    let results = weir::map(move |i| nchild(i, sleep_ms, log.clone()), 0..n)
        .concurrency(width)
        .fail_fast()
        .await?;
    Ok(results.into_iter().sum())
}

/// Sleeps in the one-slot environment.
#[weir::task(env = FXS)]
async fn sslow(i: u64, sleep_ms: u64) -> Result<u64> {
    tokio::time::sleep(Duration::from_millis(sleep_ms)).await;
    Ok(i)
}

/// `n` `sslow` calls at once: they queue for the one worker slot.
#[weir::task(env = FXD)]
async fn sfan(n: u64, sleep_ms: u64) -> Result<u64> {
    let out = weir::map(move |i| sslow(i, sleep_ms), 0..n)
        .fail_fast()
        .await?;
    Ok(out.into_iter().sum())
}

/// Sleeps past its 300 ms timeout (no retries): the engine cancels the lease in its worker.
#[weir::task(env = FXW, timeout = "300ms")]
async fn wtoo_slow(sleep_ms: u64, log: String) -> Result<u64> {
    log_line(&log, format!("slow start pid={}", std::process::id()));
    tokio::time::sleep(Duration::from_millis(sleep_ms)).await;
    log_line(&log, "slow end".into());
    Ok(0)
}

/// Reused workers with room for 8 at once (2 × 4), bounded to 3 by `max_concurrency`.
static FXM: LazyLock<TaskEnvironment> = LazyLock::new(|| {
    TaskEnvironment::new("fxm")
        .reuse(ReusePolicy::new().replicas(2..=2).concurrency(4))
        .max_concurrency(3)
});

fn now_us() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros()
}

/// Logs its start and end times (µs) with its pid.
#[weir::task(env = FXM)]
async fn mwork(i: u64, sleep_ms: u64, log: String) -> Result<u64> {
    log_line(
        &log,
        format!("mstart {i} {} {}", now_us(), std::process::id()),
    );
    tokio::time::sleep(Duration::from_millis(sleep_ms)).await;
    log_line(
        &log,
        format!("mend {i} {} {}", now_us(), std::process::id()),
    );
    Ok(i)
}

/// `n` `mwork` calls at once.
#[weir::task(env = FXD)]
async fn mfan(n: u64, sleep_ms: u64, log: String) -> Result<u64> {
    let out = weir::map(move |i| mwork(i, sleep_ms, log.clone()), 0..n)
        .fail_fast()
        .await?;
    Ok(out.into_iter().sum())
}

fn main() -> std::process::ExitCode {
    // `fixture remote-add URL TOKEN A B`: `add(A, B)` through `Runner::remote` (tests/cluster.rs).
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("remote-add") {
        return remote_add(&args[2..]);
    }
    let _failpoints = failpoints();
    weir::cli::main()
}

fn remote_add(args: &[String]) -> std::process::ExitCode {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let result: anyhow::Result<i64> = rt.block_on(async {
        let runner = weir::Runner::remote(&args[0], &args[1])?;
        let run = runner.run(add(args[2].parse()?, args[3].parse()?)).await?;
        eprintln!("submitted {}", run.name());
        Ok(run.wait().await?)
    });
    match result {
        Ok(sum) => {
            println!("{sum}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

// ---- The fault matrix (tests/faults.rs): failpoints and a workload touching every durable step.

/// Configures the failpoints named in `FAILPOINTS` (`fail` syntax, e.g.
/// `blob.put.after=3*off->panic`) in an engine process (a worker process, which inherits the
/// variable, configures none). A failpoint's `panic` kills the process on the spot (abort),
/// as a SIGKILL would: a panic on a runtime thread would otherwise be caught.
fn failpoints() -> Option<fail::FailScenario<'static>> {
    if std::env::var_os("FAILPOINTS").is_none() || std::env::args().any(|a| a == "worker") {
        return None;
    }
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failpoint ") && message.ends_with(" panic") {
            eprintln!("fixture: {message}: killing the process");
            std::process::abort();
        }
        default_hook(info)
    }));
    Some(fail::FailScenario::setup())
}

/// Reused workers for the fault workload: 1 to 2 replicas of 4 slots.
static FXF: LazyLock<TaskEnvironment> = LazyLock::new(|| {
    TaskEnvironment::new("fxf").reuse(ReusePolicy::new().replicas(1..=2).concurrency(4))
});

/// `len` characters derived from `seed`: over 64 KiB it is offloaded to the object store.
fn big_value(seed: u64, len: usize) -> String {
    let unit = format!("{seed:016x}.");
    unit.chars().cycle().take(len).collect()
}

/// FNV-1a of some strings, in order.
fn fnv(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for p in parts {
        for b in p.bytes().chain([0]) {
            h = (h ^ b as u64).wrapping_mul(0x100000001b3);
        }
    }
    h
}

/// A child of the fault workload: logs its execution, returns a large value.
#[weir::task(env = FXF)]
async fn fault_child(i: u64, size: usize, log: String) -> Result<String> {
    log_line(&log, format!("child {i}"));
    Ok(big_value(i, size))
}

/// Large payloads both ways (tests/s3.rs): a child call with `size` characters of inputs, a
/// child returning `size` characters, and `size` characters of output after the first child's
/// digest of what it received.
#[weir::task(env = FXF)]
async fn payload_job(seed: u64, size: usize) -> Result<String> {
    let digest = payload_digest(big_value(seed + 1, size)).await?;
    let echoed = payload_make(seed, size).await?;
    Ok(format!("{digest}|{echoed}"))
}

/// `size` characters made from `seed`: a large output handed back to the calling parent.
#[weir::task(env = FXF)]
async fn payload_make(seed: u64, size: usize) -> Result<String> {
    Ok(big_value(seed, size))
}

/// A trace with a large output (tests/s3.rs); logs each execution.
#[weir::trace]
async fn payload_trace(seed: u64, size: usize, log: String) -> Result<String> {
    log_line(&log, format!("payload_trace {seed}"));
    Ok(big_value(seed, size))
}

/// Records `payload_trace`, then fails its first attempt (creating `marker`): the retry reads
/// the trace's output back instead of running it. The length and FNV-1a of that output.
#[weir::task(env = FXF, retries = 1)]
async fn payload_retried(seed: u64, size: usize, log: String, marker: String) -> Result<String> {
    let v = payload_trace(seed, size, log).await?;
    if !std::path::Path::new(&marker).exists() {
        std::fs::write(&marker, "failed once").expect("marker written");
        return Err(Error::msg("payload_retried: the first attempt fails"));
    }
    Ok(format!("{} {:016x}", v.len(), fnv(&[&v])))
}

/// A `weir::File` of `size` bytes made from `seed`, read back whole by a child: the child's
/// length and FNV-1a of the bytes (tests/s3.rs).
#[weir::task(env = FXF)]
async fn file_job(seed: u64, size: usize) -> Result<String> {
    let f = weir::File::from_bytes(big_value(seed, size)).await?;
    let seen = file_check(f.clone()).await?;
    Ok(format!("{} {seen}", f.hash()))
}

/// A `weir::DataFrame` of `rows` rows (`id` = 0.., `name`), written by a child.
#[weir::task(env = FXF)]
async fn frame_make(rows: i64) -> Result<weir::DataFrame> {
    use std::sync::Arc;
    use weir::arrow::array::{Int64Array, RecordBatch, StringArray};
    use weir::arrow::schema::{DataType, Field, Schema};
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, false),
    ]));
    let mut w = weir::DataFrame::writer(schema.clone())?;
    let mut at = 0;
    while at < rows {
        let to = (at + 10_000).min(rows);
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(at..to)),
                Arc::new(StringArray::from_iter_values(
                    (at..to).map(|i| format!("row{i}")),
                )),
            ],
        )
        .map_err(Error::msg)?;
        w.write(&batch).await?;
        at = to;
    }
    w.finish().await
}

/// Rows and sum of `id` reading every column, then rows reading `id` alone.
#[weir::task(env = FXF)]
async fn frame_sum(df: weir::DataFrame) -> Result<(u64, i64, u64)> {
    use futures::StreamExt;
    use weir::arrow::array::Int64Array;
    let (mut rows, mut sum, mut projected) = (0u64, 0i64, 0u64);
    let mut all = df.read().await?;
    while let Some(b) = all.next().await {
        let b = b?;
        rows += b.num_rows() as u64;
        let ids = b.column(0).as_any().downcast_ref::<Int64Array>();
        sum += ids.map_or(0, |a| a.values().iter().sum::<i64>());
    }
    let mut ids = df.read_columns(&["id"]).await?;
    while let Some(b) = ids.next().await {
        projected += b?.num_rows() as u64;
    }
    Ok((rows, sum, projected))
}

/// A DataFrame made by a child and read back by another (tests/s3.rs): the frame, and what
/// `frame_sum` saw.
#[weir::task(env = FXF)]
async fn frame_job(rows: i64) -> Result<(weir::DataFrame, (u64, i64, u64))> {
    let df = frame_make(rows).await?;
    let seen = frame_sum(df.clone()).await?;
    Ok((df, seen))
}

/// A tree of `files` files (file `i` is `big_value(i, size + i)`, some in subdirectories)
/// written under `root/src`, uploaded as a `weir::Dir` by a child and downloaded by another to
/// `root/dst`: the number of files and their total size as the second saw them (tests/s3.rs).
#[weir::task(env = FXF)]
async fn dir_job(root: String, files: u64, size: usize) -> Result<(u64, u64)> {
    let src = std::path::Path::new(&root).join("src");
    for i in 0..files {
        let path = src.join(format!("d{}/f{i}.txt", i % 3));
        std::fs::create_dir_all(path.parent().unwrap()).map_err(Error::msg)?;
        std::fs::write(&path, big_value(i, size + i as usize)).map_err(Error::msg)?;
    }
    let d = dir_up(src.display().to_string()).await?;
    dir_down(
        d,
        std::path::Path::new(&root)
            .join("dst")
            .display()
            .to_string(),
    )
    .await
}

#[weir::task(env = FXF)]
async fn dir_up(path: String) -> Result<weir::Dir> {
    weir::Dir::from_path(path).await
}

#[weir::task(env = FXF)]
async fn dir_down(d: weir::Dir, to: String) -> Result<(u64, u64)> {
    d.download(&to).await?;
    Ok((d.files().count() as u64, d.size()))
}

/// A `weir::File` of `size` bytes from `seed`; logs each execution (tests/files.rs).
#[weir::task(env = FX)]
async fn file_make(seed: u64, size: usize, log: String) -> Result<weir::File> {
    log_line(&log, format!("file_make {seed}"));
    weir::File::from_bytes(big_value(seed, size)).await
}

/// Makes a file in a child, then waits for `gate` to exist (the test kills the process
/// meanwhile and resumes the run); the file's hash and what reading it gives.
#[weir::task(env = FX)]
async fn file_resume(seed: u64, size: usize, log: String, gate: String) -> Result<String> {
    let f = file_make(seed, size, log.clone()).await?;
    // A parent gets a child's result once the commit that holds it is durable.
    log_line(&log, "parent has the file".into());
    while !std::path::Path::new(&gate).exists() {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let seen = file_check_fx(f.clone()).await?;
    Ok(format!("{} {seen}", f.hash()))
}

/// `file_check` in the in-process environment.
#[weir::task(env = FX)]
async fn file_check_fx(f: weir::File) -> Result<String> {
    file_check(f).await
}

/// The length and FNV-1a of a file's bytes.
#[weir::task(env = FXF)]
async fn file_check(f: weir::File) -> Result<String> {
    let bytes = f.bytes().await?;
    let text = String::from_utf8(bytes).map_err(Error::msg)?;
    Ok(format!("{} {:016x}", text.len(), fnv(&[&text])))
}

/// Holds its lease until `gate` exists (tests/s3.rs sends child calls in its name meanwhile).
#[weir::task(env = FXF)]
async fn payload_hold(gate: String) -> Result<String> {
    while !std::path::Path::new(&gate).exists() {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Ok("released".into())
}

/// The length and FNV-1a of its (large) input; cached, so that a second call is answered by
/// the control plane from its cache key.
#[weir::task(env = FXF, cache = "v1")]
async fn payload_digest(text: String) -> Result<String> {
    Ok(format!("{} {:016x}", text.len(), fnv(&[&text])))
}

/// A checkpointed step of the fault workload: logs its execution, returns a large value.
#[weir::trace]
async fn fault_step(k: u64, size: usize, log: String) -> Result<String> {
    log_line(&log, format!("trace {k}"));
    Ok(big_value(1000 + k, size))
}

/// A cached task of the fault workload: logs its execution, returns a large value.
#[weir::task(env = FXF, cache = "v1")]
async fn fault_cached(x: u64, size: usize, log: String) -> Result<String> {
    log_line(&log, format!("cached {x}"));
    Ok(big_value(2000 + x, size))
}

/// The fault workload: a trace, `n` children (`width` at a time), a cached call, another
/// trace; returns a digest of all their outputs. Retried twice (an injected error is
/// retryable).
#[weir::task(env = FXF, retries = 2)]
async fn fault_job(n: u64, width: usize, size: usize, log: String) -> Result<String> {
    log_line(&log, "job".into());
    let first = fault_step(1, size, log.clone()).await?;
    let log2 = log.clone();
    let children = weir::map(move |i| fault_child(i, size, log2.clone()), 0..n)
        .concurrency(width)
        .fail_fast()
        .await?;
    let cached = fault_cached(7, size, log.clone()).await?;
    let last = fault_step(2, size, log.clone()).await?;
    let mut parts: Vec<&str> = vec![&first];
    parts.extend(children.iter().map(String::as_str));
    parts.extend([cached.as_str(), last.as_str()]);
    let bytes: usize = parts.iter().map(|p| p.len()).sum();
    Ok(format!(
        "{} values, {bytes} bytes, fnv {:016x}",
        parts.len(),
        fnv(&parts)
    ))
}
