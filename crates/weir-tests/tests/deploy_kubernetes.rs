//! Kubernetes: `deploy kubernetes` renders a worker Deployment per environment of the
//! `deployed` binary as its settings say; the static manifests of `deploy/kubernetes/` run as
//! written (serve's arguments, environment and probe commands, taken from the YAML) against a
//! PostgreSQL of the test's own and moto's S3, the readiness probe failing while PostgreSQL is
//! down and the liveness probe not; and the rendered workers' command lines run a task through
//! that serve. The manifests' schemas are checked by `.ci/run` (kubernetes-validate).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;
use weir_tests::wait_for;

#[path = "../../weir-blob/tests/moto/mod.rs"]
mod moto;

const BIN: &str = env!("CARGO_BIN_EXE_deployed");

fn manifests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes")
}

/// Runs the binary: (exit code, stdout, stderr).
fn deployed(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The Deployments `deploy kubernetes -o json` renders, by environment (annotation).
fn rendered(extra: &[&str]) -> BTreeMap<String, Value> {
    let mut args = vec!["deploy", "kubernetes", "-o", "json"];
    args.extend(extra);
    let (code, out, err) = deployed(&args);
    assert_eq!(code, 0, "{err}");
    out.lines()
        .map(|line| {
            let d: Value = serde_json::from_str(line).unwrap();
            let env = d["metadata"]["annotations"]["weir.dev/environment"]
                .as_str()
                .unwrap()
                .to_string();
            (env, d)
        })
        .collect()
}

/// Parses a YAML file of several documents with Python's PyYAML (which kubernetes-validate
/// brings; `.ci/run` installs it before the tests).
fn yaml_documents(path: &Path) -> Vec<Value> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys, json, yaml; print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d]))",
        ])
        .arg(path)
        .output()
        .expect("this test reads YAML with python3");
    assert!(
        out.status.success(),
        "reading {} with PyYAML (python3 -m pip install kubernetes-validate==1.31.0 brings it): {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_worker_deployment_per_environment_follows_its_settings() {
    let all = rendered(&[
        "--image",
        "registry.example.com/app:1.4",
        "--server",
        "http://weir.ml.svc:8700",
        "--namespace",
        "ml",
        "--set-env",
        "RUST_LOG=info",
        "--env-secret",
        "model-keys",
        "--command",
        "/usr/local/bin/app",
    ]);
    assert_eq!(
        all.keys().collect::<Vec<_>>(),
        ["burst", "etl", "gpu_infer", "plain"]
    );
    // (environment, replicas, cpu request, memory request and limit, GPU limit)
    type Expected<'a> = (
        &'a str,
        i64,
        Option<&'a str>,
        Option<&'a str>,
        Option<&'a str>,
    );
    let expected: [Expected; 4] = [
        ("gpu_infer", 2, Some("4"), Some("16Gi"), Some("1")),
        ("etl", 1, Some("500m"), Some("512Mi"), None),
        ("plain", 1, None, None, None),
        ("burst", 0, None, None, Some("2")),
    ];
    let mut versions = Vec::new();
    for (env, replicas, cpu, memory, gpu) in expected {
        let d = &all[env];
        assert_eq!(d["apiVersion"], "apps/v1");
        assert_eq!(d["kind"], "Deployment");
        assert_eq!(d["metadata"]["namespace"], "ml");
        assert_eq!(
            d["metadata"]["name"],
            format!("weir-worker-{}", env.replace('_', "-"))
        );
        assert_eq!(d["spec"]["replicas"], replicas, "{env}");
        // The selector picks the template's pods and no other environment's.
        let selector = d["spec"]["selector"]["matchLabels"].as_object().unwrap();
        let labels = d["spec"]["template"]["metadata"]["labels"]
            .as_object()
            .unwrap();
        for (k, v) in selector {
            assert_eq!(&labels[k], v, "{env}: selector {k}");
        }
        assert_eq!(selector["weir.dev/environment"], env.replace('_', "-"));
        let pod = &d["spec"]["template"]["spec"];
        let containers = pod["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 1);
        let c = &containers[0];
        assert_eq!(c["image"], "registry.example.com/app:1.4");
        assert_eq!(strings(&c["command"]), ["/usr/local/bin/app"]);
        assert_eq!(
            strings(&c["args"]),
            [
                "worker",
                "--server",
                "http://weir.ml.svc:8700",
                "--env",
                env
            ]
        );
        // The token from the Secret, then the variables asked for; the Secret's keys too.
        let vars = c["env"].as_array().unwrap();
        assert_eq!(vars.len(), 2, "{env}");
        assert_eq!(vars[0]["name"], "WEIR_TOKEN");
        assert_eq!(
            vars[0]["valueFrom"]["secretKeyRef"],
            serde_json::json!({"name": "weir", "key": "token"})
        );
        assert_eq!(
            vars[1],
            serde_json::json!({"name": "RUST_LOG", "value": "info"})
        );
        assert_eq!(c["envFrom"][0]["secretRef"]["name"], "model-keys");
        let r = &c["resources"];
        assert_eq!(r["requests"]["cpu"].as_str(), cpu, "{env}");
        assert_eq!(r["requests"]["memory"].as_str(), memory, "{env}");
        assert_eq!(r["limits"]["memory"].as_str(), memory, "{env}");
        assert_eq!(r["limits"]["nvidia.com/gpu"].as_str(), gpu, "{env}");
        if (cpu, memory, gpu) == (None, None, None) {
            assert!(c.get("resources").is_none(), "{env}: {c}");
        }
        // The scaling hint: the control plane's metric for this environment's queue.
        let a = &d["metadata"]["annotations"];
        let version = a["weir.dev/version"].as_str().unwrap().to_string();
        assert_eq!(version.len(), 16);
        assert_eq!(a["weir.dev/autoscale-metric"], "weir_desired_workers");
        assert_eq!(
            a["weir.dev/autoscale-query"],
            format!("weir_desired_workers{{queue=\"{env}@{version}\"}}")
        );
        assert_eq!(a["weir.dev/autoscale-target"], "1");
        versions.push(version);
    }
    // The reuse policy's range and scale-down time; none without a policy.
    let a = &all["gpu_infer"]["metadata"]["annotations"];
    assert_eq!(
        (
            &a["weir.dev/replicas-min"],
            &a["weir.dev/replicas-max"],
            &a["weir.dev/scaledown-after"]
        ),
        (&Value::from("2"), &Value::from("6"), &Value::from("90s"))
    );
    assert!(all["plain"]["metadata"]["annotations"]["weir.dev/replicas-max"].is_null());
    // Every Deployment names the one version: the binary that rendered them.
    versions.dedup();
    assert_eq!(versions.len(), 1);

    // A GPU kind: recorded and said without a node label, a nodeSelector with one.
    let (code, _, err) = deployed(&["deploy", "kubernetes", "--image", "x"]);
    assert_eq!(code, 0);
    assert!(
        err.contains("environment \"gpu_infer\" asks for GPU kind A10G")
            && err.contains("--gpu-node-label"),
        "{err}"
    );
    assert!(err.contains("\"burst\" keeps at least 0 workers"), "{err}");
    let plain = rendered(&["--image", "x"]);
    assert_eq!(
        plain["gpu_infer"]["metadata"]["annotations"]["weir.dev/gpu-kind"],
        "A10G"
    );
    assert!(plain["gpu_infer"]["spec"]["template"]["spec"]["nodeSelector"].is_null());
    assert!(plain["gpu_infer"]["metadata"].get("namespace").is_none());
    assert_eq!(
        strings(&plain["etl"]["spec"]["template"]["spec"]["containers"][0]["args"])[2],
        "http://weir:8700"
    );
    assert!(plain["etl"]["spec"]["template"]["spec"]["containers"][0]["command"].is_null());
    let labelled = rendered(&["--image", "x", "--gpu-node-label", "nvidia.com/gpu.product"]);
    assert_eq!(
        labelled["gpu_infer"]["spec"]["template"]["spec"]["nodeSelector"],
        serde_json::json!({"nvidia.com/gpu.product": "A10G"})
    );
    // A count alone asks for no kind.
    assert!(labelled["burst"]["spec"]["template"]["spec"]["nodeSelector"].is_null());

    // Refused, naming what was wrong, with nothing on stdout.
    for (args, says) in [
        (vec!["--set-env", "WEIR_TOKEN=x"], "sets WEIR_TOKEN itself"),
        (vec!["--set-env", "NOVALUE"], "is not NAME=VALUE"),
        (
            vec!["--set-env", "1X=y"],
            "is not an environment variable name",
        ),
        (vec!["--set-env", "A=1", "--set-env", "A=2"], "given twice"),
        (vec!["--namespace", "Team_A"], "not a Kubernetes namespace"),
        (
            vec!["--server", "weir:8700"],
            "not an http:// or https:// URL",
        ),
        (
            vec!["--env-secret", "Bad_Name"],
            "not a Kubernetes Secret name",
        ),
        (vec!["--gpu-node-label", "a b"], "not a label key"),
    ] {
        let mut full = vec!["deploy", "kubernetes", "--image", "x"];
        full.extend(&args);
        let (code, out, err) = deployed(&full);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?}: {out}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let (code, _, err) = deployed(&["deploy", "kubernetes", "--image", "a b"]);
    assert_eq!(code, 2);
    assert!(err.contains("not an image reference"), "{err}");

    // --out-dir: a file per environment, each the document stdout has.
    let dir = tempfile::tempdir().unwrap();
    let (code, yaml, err) = deployed(&["deploy", "kubernetes", "--image", "x"]);
    assert_eq!(code, 0, "{err}");
    let out_dir = dir.path().join("workers");
    let (code, out, err) = deployed(&[
        "deploy",
        "kubernetes",
        "--image",
        "x",
        "--out-dir",
        out_dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.is_empty());
    let mut files: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "worker-burst.yaml",
            "worker-etl.yaml",
            "worker-gpu-infer.yaml",
            "worker-plain.yaml"
        ]
    );
    let joined: Vec<String> = files
        .iter()
        .map(|f| std::fs::read_to_string(out_dir.join(f)).unwrap())
        .collect();
    assert_eq!(joined.join("---\n"), yaml);
    // The YAML holds what the JSON holds.
    let stdout_yaml = dir.path().join("all.yaml");
    std::fs::write(&stdout_yaml, &yaml).unwrap();
    let from_yaml = yaml_documents(&stdout_yaml);
    let from_json: Vec<Value> = rendered(&["--image", "x"]).into_values().collect();
    assert_eq!(from_yaml, from_json);
}

/// A PostgreSQL of the test's own (initdb, pg_ctl) on a private port, stopped when dropped
/// (as in tests/cluster.rs).
struct PrivatePostgres {
    dir: tempfile::TempDir,
    port: u16,
}

impl PrivatePostgres {
    /// Runs a PostgreSQL tool, as the `postgres` user when this test runs as root.
    fn tool(args: &[&str]) -> std::process::Output {
        let root = Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
        let mut c = if root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", args[0]]);
            c
        } else {
            Command::new(args[0])
        };
        c.args(&args[1..])
            .output()
            .unwrap_or_else(|e| panic!("this test needs {} on PATH: {e}", args[0]))
    }

    fn start() -> PrivatePostgres {
        let dir = tempfile::tempdir().unwrap();
        let _ = Command::new("chmod").arg("777").arg(dir.path()).status();
        let data = dir.path().join("data");
        let out = Self::tool(&[
            "initdb",
            "-D",
            data.to_str().unwrap(),
            "-A",
            "trust",
            "-U",
            "postgres",
        ]);
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let pg = PrivatePostgres { dir, port };
        pg.ctl("start");
        pg
    }

    fn ctl(&self, what: &str) {
        let data = self.dir.path().join("data");
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("pg.log");
        let out = Self::tool(&[
            "pg_ctl",
            "-D",
            data.to_str().unwrap(),
            "-w",
            "-o",
            &opts,
            "-l",
            log.to_str().unwrap(),
            "-m",
            "fast",
            what,
        ]);
        assert!(
            out.status.success(),
            "pg_ctl {what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = Self::tool(&[
            "pg_ctl",
            "-D",
            data.to_str().unwrap(),
            "-m",
            "immediate",
            "stop",
        ]);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills its processes when dropped.
struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `$(NAME)` in a container's command line, expanded from its environment as the kubelet does
/// (a name the environment lacks fails the test: Kubernetes would pass it on unexpanded).
fn expand(arg: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = arg;
    while let Some(at) = rest.find("$(") {
        out.push_str(&rest[..at]);
        let end = rest[at..].find(')').expect("a closed $(") + at;
        let name = &rest[at + 2..end];
        out.push_str(
            env.get(name)
                .unwrap_or_else(|| panic!("{arg}: {name} is not in the container's environment")),
        );
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// Runs an exec probe's command with the test's binary, port and token file: (code, output).
fn probe(command: &[String], port: u16, token_file: &Path) -> (i32, String) {
    let args: Vec<String> = command[1..]
        .iter()
        .map(|a| {
            a.replace("127.0.0.1:8700", &format!("127.0.0.1:{port}"))
                .replace("/etc/weir/token", token_file.to_str().unwrap())
        })
        .collect();
    let out = Command::new(BIN).args(&args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn the_static_manifests_run_as_written_and_rendered_workers_serve_them() {
    let Some(moto) = moto::Moto::start() else {
        return;
    };
    let pg = PrivatePostgres::start();
    let dir = tempfile::tempdir().unwrap();
    let serve_docs = yaml_documents(&manifests_dir().join("serve.yaml"));
    let config_docs = yaml_documents(&manifests_dir().join("config.yaml"));
    let secret_docs = yaml_documents(&manifests_dir().join("secret.example.yaml"));
    let deployment = find(&serve_docs, "Deployment", "weir");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let binary = strings(&c["command"]);
    assert_eq!(binary.len(), 1);

    // The Service and the budget select serve's pods; the probes are exec probes of the binary.
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    let service = find(&serve_docs, "Service", "weir");
    for (k, v) in service["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&labels[k], v);
    }
    assert_eq!(service["spec"]["ports"][0]["port"], 8700);
    let pdb = find(&serve_docs, "PodDisruptionBudget", "weir");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    for (k, v) in pdb["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&labels[k], v);
    }
    let ready = strings(&c["readinessProbe"]["exec"]["command"]);
    let live = strings(&c["livenessProbe"]["exec"]["command"]);
    let startup = strings(&c["startupProbe"]["exec"]["command"]);
    for p in [&ready, &live, &startup] {
        assert_eq!(p[0], binary[0]);
        assert_eq!(p[1], "health");
    }
    assert!(!ready.contains(&"--live".to_string()));
    assert!(live.contains(&"--live".to_string()) && startup.contains(&"--live".to_string()));

    // The token file is the Secret's `token` key, where --token-file and the probes read it.
    let mount = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "token")
        .unwrap();
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "token")
        .unwrap();
    let secret = find(&secret_docs, "Secret", "weir");
    assert_eq!(volume["secret"]["secretName"], "weir");
    let key = volume["secret"]["items"][0]["key"].as_str().unwrap();
    assert!(secret["stringData"][key].is_string());
    let token_path = format!(
        "{}/{}",
        mount["mountPath"].as_str().unwrap(),
        volume["secret"]["items"][0]["path"].as_str().unwrap()
    );
    assert_eq!(token_path, "/etc/weir/token");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "k8s-test-token\n").unwrap();

    // The container's environment: its Secret keys exist, the ConfigMap's values, then moto's
    // endpoint and keys in place of the example's, the test's bucket and PostgreSQL.
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for var in c["env"].as_array().unwrap() {
        let name = var["name"].as_str().unwrap().to_string();
        if let Some(v) = var["value"].as_str() {
            env.insert(name, v.to_string());
        } else {
            let r = &var["valueFrom"]["secretKeyRef"];
            let s = find(&secret_docs, "Secret", r["name"].as_str().unwrap());
            assert!(s["stringData"][r["key"].as_str().unwrap()].is_string());
            assert_eq!(name, "WEIR_DATABASE");
            env.insert(name, pg.url());
        }
    }
    let config = find(&config_docs, "ConfigMap", "weir-serve");
    assert_eq!(c["envFrom"][0]["configMapRef"]["name"], "weir-serve", "{c}");
    for (k, v) in config["data"].as_object().unwrap() {
        env.insert(k.clone(), v.as_str().unwrap().to_string());
    }
    assert!(env["WEIR_BLOBS"].starts_with("s3://"));
    env.extend(moto.env());
    moto.create_bucket("weir-k8s");
    env.insert("WEIR_BLOBS".into(), "s3://weir-k8s/cluster".into());
    env.insert(
        "WEIR_STATE_DIR".into(),
        dir.path().join("state").display().to_string(),
    );

    let port = free_port();
    let args: Vec<String> = strings(&c["args"])
        .iter()
        .map(|a| {
            expand(a, &env)
                .replace("0.0.0.0:8700", &format!("127.0.0.1:{port}"))
                .replace(&token_path, token_file.to_str().unwrap())
        })
        .collect();
    assert_eq!(args[0], "serve");
    let log = dir.path().join("serve.log");
    let f = std::fs::File::create(&log).unwrap();
    let serve = Command::new(BIN)
        .args(&args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(&env)
        .stdin(Stdio::null())
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .spawn()
        .unwrap();
    let mut procs = Processes(vec![serve]);
    wait_for("serve listening", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("listening on")
    });

    // Ready and alive; a wrong token is refused (the probe fails, saying why).
    let (code, out) = probe(&startup, port, &token_file);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok: serving"), "{out}");
    let (code, out) = probe(&ready, port, &token_file);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok: the database answered"), "{out}");
    let wrong = dir.path().join("wrong-token");
    std::fs::write(&wrong, "not-the-token\n").unwrap();
    for p in [&ready, &live] {
        let (code, out) = probe(p, port, &wrong);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains("HTTP 401"), "{out}");
    }

    // The rendered workers' command lines and environment run a task through that serve.
    let workers = rendered(&[
        "--image",
        "x",
        "--server",
        &format!("http://127.0.0.1:{port}"),
    ]);
    for env_name in ["etl", "gpu_infer"] {
        let c = &workers[env_name]["spec"]["template"]["spec"]["containers"][0];
        let r = &c["env"][0]["valueFrom"]["secretKeyRef"];
        assert_eq!(
            (&r["name"], &r["key"]),
            (&Value::from("weir"), &Value::from(key))
        );
        let log = std::fs::File::create(dir.path().join(format!("{env_name}.log"))).unwrap();
        let child = Command::new(BIN)
            .args(strings(&c["args"]))
            .env("WEIR_TOKEN", "k8s-test-token")
            .env("WEIR_STATE_DIR", dir.path().join("worker-state"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        procs.0.push(child);
    }
    let out = Command::new(BIN)
        .args(["run", "load", "--input", r#"{"x": 20}"#])
        .args([
            "--server",
            &format!("http://127.0.0.1:{port}"),
            "-o",
            "json",
        ])
        .env("WEIR_TOKEN", "k8s-test-token")
        .env("WEIR_STATE_DIR", dir.path().join("client-state"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(
        (&v["status"], &v["output"]),
        (&Value::from("succeeded"), &Value::from(42))
    );

    // PostgreSQL down: not ready (the reason said), still alive; back up: ready again.
    pg.ctl("stop");
    let (code, out) = probe(&ready, port, &token_file);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("HTTP 503") && out.contains("the database did not answer"),
        "{out}"
    );
    let (code, out) = probe(&live, port, &token_file);
    assert_eq!(code, 0, "{out}");
    pg.ctl("start");
    let mut last = String::new();
    wait_for("ready again after PostgreSQL restarted", || {
        let (code, out) = probe(&ready, port, &token_file);
        last = out;
        code == 0
    });
    assert!(last.contains("ok: the database answered"), "{last}");
    drop(procs);
    // serve kept nothing in its state directory (the pod's root file system is read-only).
    assert!(!dir.path().join("state").exists());
}
