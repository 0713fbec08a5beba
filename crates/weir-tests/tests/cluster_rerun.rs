//! `rerun RUN [--recover [--force ACTION|TASK]] --server` (SPEC §4.3) through `serve` on the
//! machine's PostgreSQL: a run fails after its children and a trace succeeded on a worker; the
//! recovering rerun runs only the root, takes the rest from the failed run (recorded as
//! recovered), `--force` runs what it names again, and bad requests are refused.

mod support;

use support::*;

fn actions(cl: &Cluster, url: &str, run: &str) -> Vec<serde_json::Value> {
    let (code, out, err) = cl.output(&["get", "actions", run, "--server", url, "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str::<serde_json::Value>(out.trim())
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn lines(log: &std::path::Path, prefix: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with(prefix))
        .count()
}

#[test]
fn rerun_recover_through_serve_takes_what_succeeded_and_runs_the_rest() {
    let mut cl = Cluster::new();
    let url = cl.serve(&[]);
    cl.worker(&url, "fx", "4");
    let log = cl.state().join("log");
    let gate = cl.state().join("gate");
    std::fs::write(&gate, "closed").unwrap();
    let input = format!(
        r#"{{"n": 3, "gate": "{}", "log": "{}"}}"#,
        gate.display(),
        log.display()
    );
    let (code, _, err) = cl.output(&[
        "run", "gated", "--input", &input, "--name", "first", "--server", &url,
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("is closed"), "{err}");
    assert_eq!((lines(&log, "start "), lines(&log, "step ")), (3, 1));

    // The recovering rerun runs the root only: children and the trace come from `first`.
    std::fs::remove_file(&gate).unwrap();
    let (code, out, err) = cl.output(&[
        "rerun",
        "first",
        "--recover",
        "--name",
        "again",
        "--server",
        &url,
    ]);
    assert_eq!((code, out.trim()), (0, "106"), "{err}");
    assert!(err.contains("started from run first"), "{err}");
    assert_eq!(
        (lines(&log, "start "), lines(&log, "step ")),
        (3, 1),
        "nothing but the root ran again"
    );
    let acts = actions(&cl, &url, "again");
    assert_eq!(acts.len(), 5, "{acts:#?}");
    for a in &acts {
        let is_root = a["parent"] == a["id"];
        assert_eq!(a["status"], "succeeded", "{a}");
        assert_eq!(a["recovered"], !is_root, "{a}");
    }
    assert!(
        acts.iter()
            .any(|a| a["kind"] == "trace" && a["recovered"] == true)
    );
    // The earlier run is untouched.
    let firsts = actions(&cl, &url, "first");
    assert!(
        firsts.iter().all(|a| a["recovered"] == false),
        "{firsts:#?}"
    );

    // --force names a task: its actions run again; the trace is still recovered.
    let (code, out, err) = cl.output(&[
        "rerun",
        "first",
        "--recover",
        "--force",
        "fx.child",
        "--name",
        "forced",
        "--server",
        &url,
    ]);
    assert_eq!((code, out.trim()), (0, "106"), "{err}");
    assert_eq!((lines(&log, "start "), lines(&log, "step ")), (6, 1));
    let acts = actions(&cl, &url, "forced");
    assert_eq!(
        acts.iter().filter(|a| a["recovered"] == true).count(),
        1,
        "only the trace is recovered: {acts:#?}"
    );

    // A plain rerun runs everything again.
    let (code, out, err) = cl.output(&["rerun", "first", "--server", &url]);
    assert_eq!((code, out.trim()), (0, "106"), "{err}");
    assert_eq!((lines(&log, "start "), lines(&log, "step ")), (9, 2));

    // Refused, exit 2: a --force name that names nothing, an unknown run.
    let (code, _, err) = cl.output(&[
        "rerun",
        "first",
        "--recover",
        "--force",
        "fx.nothing",
        "--server",
        &url,
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--force \"fx.nothing\""), "{err}");
    let (code, _, err) = cl.output(&["rerun", "nosuch", "--recover", "--server", &url]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no run named"), "{err}");
}
