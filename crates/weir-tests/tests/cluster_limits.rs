//! An environment's `max_concurrency` through `serve` on the machine's PostgreSQL: its actions
//! never run more at once than the limit, across worker processes that have more slots.

mod support;

use support::*;

#[test]
fn max_concurrency_bounds_an_environment_across_cluster_workers() {
    let mut cl = Cluster::new();
    let url = cl.serve(&[]);
    // The parent's environment, and two workers of `fxm` (max_concurrency 3) with 4 slots each.
    cl.worker(&url, "fxd", "4");
    cl.worker(&url, "fxm", "4");
    cl.worker(&url, "fxm", "4");
    let log = cl.state().join("exec.log");
    let input = format!(
        r#"{{"n": 12, "sleep_ms": 150, "log": "{}"}}"#,
        log.display()
    );
    let (code, out, err) = cl.output(&["run", "mfan", "--input", &input, "--server", &url]);
    assert_eq!((code, out.trim()), (0, "66"), "{err}");
    // Overlap of the recorded [start, end] intervals, across both worker processes.
    let mut events: Vec<(u128, i32)> = Vec::new();
    let mut pids = std::collections::HashSet::new();
    for line in std::fs::read_to_string(&log).unwrap().lines() {
        let w: Vec<&str> = line.split(' ').collect();
        let at: u128 = w[2].parse().unwrap();
        pids.insert(w[3].to_string());
        events.push((at, if w[0] == "mstart" { 1 } else { -1 }));
    }
    events.sort_by_key(|&(at, delta)| (at, delta)); // an end before a start at the same µs
    let (mut now, mut max) = (0, 0);
    for (_, delta) in &events {
        now += delta;
        max = max.max(now);
    }
    assert_eq!(events.len(), 24, "each of the 12 ran once");
    assert!(max <= 3, "{max} ran at once; max_concurrency is 3");
    assert!(
        max >= 2,
        "the bound held, but nothing ran concurrently ({max})"
    );
}
