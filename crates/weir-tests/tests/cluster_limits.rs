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
    let (lines, max) = weir_tests::most_at_once(&std::fs::read_to_string(&log).unwrap());
    assert_eq!(lines, 24, "each of the 12 ran once");
    assert!(max <= 3, "{max} ran at once; max_concurrency is 3");
    assert!(
        max >= 2,
        "the bound held, but nothing ran concurrently ({max})"
    );
}
