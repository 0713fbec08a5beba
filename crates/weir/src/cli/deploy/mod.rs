//! `deploy kubernetes`: renders a worker Deployment per task environment registered in this
//! binary, for a control plane (`serve`) run on Kubernetes (see `deploy/kubernetes/`).
//!
//! Each Deployment runs `<binary> worker --server URL --env ENV` from the image (the user's own
//! binary: the workers must be the same file as the binary that renders them, since a run's
//! actions go only to workers of its code version). Its replicas are the reuse policy's `min`
//! (1 without one), its container resources the environment's `Resources`, its token the
//! cluster token from a Secret (`WEIR_TOKEN`), and its annotations name the scaling signal the
//! control plane exposes (`weir_desired_workers` on `/metrics`). A setting a Deployment cannot
//! express is refused with an error naming the environment, or (a GPU kind without
//! `--gpu-node-label`) recorded in an annotation and said on stderr.
//!
//! YAML is written by hand: block mappings and sequences whose every key and string is a
//! JSON string literal, which YAML reads as a double-quoted scalar of the same text, so no
//! value can turn into another type (`"yes"`, `"0755"`) or break the structure.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use weir_core::spec::{ReuseScope, TaskEnvironment};

use super::{CliResult, Failure, OutputFormat};

mod yaml;
use yaml::Node;

#[derive(Subcommand, Debug)]
pub(crate) enum DeployCommand {
    /// Render a worker Deployment per registered environment (YAML, or JSON with -o json).
    Kubernetes(KubernetesArgs),
}

#[derive(Args, Debug)]
pub(crate) struct KubernetesArgs {
    /// The container image holding this binary (e.g. `registry.example.com/app:1.4.2`).
    #[arg(long)]
    image: String,
    /// The control plane as the workers reach it: the Service of `deploy/kubernetes/`.
    #[arg(long, default_value = "http://weir:8700", value_name = "URL[,URL...]")]
    server: String,
    /// The namespace of the Deployments (default: none written, `kubectl`'s current one).
    #[arg(long)]
    namespace: Option<String>,
    /// Write one file per environment (`worker-NAME.yaml` or `.json`) into this directory
    /// instead of printing them all to stdout.
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
    /// The binary's path in the image, written as the container's `command`. Default: none
    /// written, the image's ENTRYPOINT must be the binary.
    #[arg(long, value_name = "PATH")]
    command: Option<String>,
    /// The Secret holding the cluster token (the one `serve` uses).
    #[arg(long, default_value = "weir", value_name = "NAME")]
    token_secret: String,
    /// The key of the token in that Secret.
    #[arg(long, default_value = "token", value_name = "KEY")]
    token_key: String,
    /// An environment variable set in every worker (repeatable), `NAME=VALUE`.
    #[arg(long = "set-env", value_name = "NAME=VALUE")]
    set_env: Vec<String>,
    /// A Secret whose keys become environment variables of every worker (repeatable).
    #[arg(long = "env-secret", value_name = "SECRET")]
    env_secrets: Vec<String>,
    /// The node label that names a node's GPU model (e.g. `nvidia.com/gpu.product`): an
    /// environment's GPU kind (`"A10G:1"` → `A10G`) becomes a nodeSelector on it. Without it,
    /// the kind is only recorded in the annotation `weir.dev/gpu-kind`.
    #[arg(long, value_name = "LABEL")]
    gpu_node_label: Option<String>,
}

/// The metric the control plane exposes per queue (`ENV@VERSION`) on `/metrics`.
const SCALING_METRIC: &str = "weir_desired_workers";
/// Variables the rendered container sets itself.
const RESERVED_ENV: &[&str] = &["WEIR_TOKEN"];

pub(crate) fn deploy(out: OutputFormat, cmd: DeployCommand) -> CliResult {
    let DeployCommand::Kubernetes(args) = cmd;
    let version = weir_engine::cluster::binary_version().map_err(Failure::other)?;
    let envs = environments()?;
    let options = Options::from_args(&args)?;
    let mut rendered: Vec<(String, Node)> = Vec::new();
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    for env in &envs {
        let deployment = worker_deployment(env, &options, &version)?;
        let name = deployment.name.clone();
        if let Some(other) = names.insert(name.clone(), env.name().to_string()) {
            return Err(Failure::input(format!(
                "environments {other:?} and {:?} would both be the Deployment {name}; rename one of them",
                env.name()
            )));
        }
        for note in &deployment.notes {
            eprintln!("deploy kubernetes: {note}");
        }
        rendered.push((name, deployment.manifest));
    }
    let text = |node: &Node| match out {
        OutputFormat::Json => node.to_json() + "\n",
        OutputFormat::Table => node.to_yaml(),
    };
    match &args.out_dir {
        None => {
            let mut all = String::new();
            for (i, (_, node)) in rendered.iter().enumerate() {
                if out == OutputFormat::Table && i > 0 {
                    all.push_str("---\n");
                }
                all.push_str(&text(node));
            }
            print!("{all}");
        }
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| Failure::other(format!("cannot create {}: {e}", dir.display())))?;
            let ext = if out == OutputFormat::Json {
                "json"
            } else {
                "yaml"
            };
            for (name, node) in &rendered {
                let path = dir.join(format!("{}.{ext}", name.trim_start_matches("weir-")));
                std::fs::write(&path, text(node))
                    .map_err(|e| Failure::other(format!("cannot write {}: {e}", path.display())))?;
                eprintln!("deploy kubernetes: wrote {}", path.display());
            }
        }
    }
    Ok(())
}

/// The environments of the registered tasks, by name.
fn environments() -> Result<Vec<&'static TaskEnvironment>, Failure> {
    distinct_environments(
        weir_engine::registry::tasks().map(|def| (def.environment(), def.full_name().to_string())),
    )
}

/// Each environment of `(environment, task)` pairs once, by name; two different definitions
/// under one name are refused (which one would the workers have?).
fn distinct_environments<'a>(
    tasks: impl Iterator<Item = (&'a TaskEnvironment, String)>,
) -> Result<Vec<&'a TaskEnvironment>, Failure> {
    let mut by_name: BTreeMap<&str, (&TaskEnvironment, String)> = BTreeMap::new();
    for (env, task) in tasks {
        match by_name.get(env.name()) {
            None => {
                by_name.insert(env.name(), (env, task));
            }
            Some((seen, first)) => {
                let same = seen.resources_spec() == env.resources_spec()
                    && seen.reuse_policy() == env.reuse_policy();
                if !same {
                    return Err(Failure::input(format!(
                        "environment {:?} is defined twice with different resources or reuse policies (tasks {first} and {task}); define it once and share it",
                        env.name()
                    )));
                }
            }
        }
    }
    if by_name.is_empty() {
        return Err(Failure::input(
            "this binary registers no task, so there is no environment to deploy workers of",
        ));
    }
    Ok(by_name.into_values().map(|(env, _)| env).collect())
}

/// The checked flags every Deployment shares.
struct Options {
    image: String,
    server: String,
    namespace: Option<String>,
    command: Option<String>,
    token_secret: String,
    token_key: String,
    set_env: Vec<(String, String)>,
    env_secrets: Vec<String>,
    gpu_node_label: Option<String>,
}

impl Options {
    fn from_args(args: &KubernetesArgs) -> Result<Options, Failure> {
        if args.image.trim().is_empty() || args.image.chars().any(char::is_whitespace) {
            return Err(Failure::input(format!(
                "--image {:?} is not an image reference",
                args.image
            )));
        }
        for url in args.server.split(',') {
            let url = url.trim();
            if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() < 9 {
                return Err(Failure::input(format!(
                    "--server {url:?} is not an http:// or https:// URL"
                )));
            }
        }
        if let Some(ns) = &args.namespace
            && !is_dns_label(ns)
        {
            return Err(Failure::input(format!(
                "--namespace {ns:?} is not a Kubernetes namespace name (lowercase letters, digits and '-', at most 63)"
            )));
        }
        for (flag, name) in [("--token-secret", &args.token_secret)]
            .into_iter()
            .chain(args.env_secrets.iter().map(|s| ("--env-secret", s)))
        {
            if !is_dns_subdomain(name) {
                return Err(Failure::input(format!(
                    "{flag} {name:?} is not a Kubernetes Secret name (lowercase letters, digits, '-' and '.')"
                )));
            }
        }
        if args.token_key.is_empty()
            || !args
                .token_key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
        {
            return Err(Failure::input(format!(
                "--token-key {:?} is not a Secret key (letters, digits, '-', '.' and '_')",
                args.token_key
            )));
        }
        let mut set_env = Vec::new();
        for item in &args.set_env {
            let Some((name, value)) = item.split_once('=') else {
                return Err(Failure::input(format!(
                    "--set-env {item:?} is not NAME=VALUE"
                )));
            };
            if !is_env_name(name) {
                return Err(Failure::input(format!(
                    "--set-env {name:?} is not an environment variable name (letters, digits, '_', '-' and '.', not starting with a digit)"
                )));
            }
            if RESERVED_ENV.contains(&name) {
                return Err(Failure::input(format!(
                    "--set-env {name}: the Deployment sets {name} itself (from --token-secret)"
                )));
            }
            if set_env.iter().any(|(n, _)| n == name) {
                return Err(Failure::input(format!("--set-env {name} is given twice")));
            }
            set_env.push((name.to_string(), value.to_string()));
        }
        if let Some(label) = &args.gpu_node_label
            && !is_label_key(label)
        {
            return Err(Failure::input(format!(
                "--gpu-node-label {label:?} is not a label key (e.g. nvidia.com/gpu.product)"
            )));
        }
        Ok(Options {
            image: args.image.clone(),
            server: args.server.clone(),
            namespace: args.namespace.clone(),
            command: args.command.clone(),
            token_secret: args.token_secret.clone(),
            token_key: args.token_key.clone(),
            set_env,
            env_secrets: args.env_secrets.clone(),
            gpu_node_label: args.gpu_node_label.clone(),
        })
    }
}

struct Rendered {
    name: String,
    manifest: Node,
    /// What the user should know (said on stderr).
    notes: Vec<String>,
}

/// The Deployment of one environment's workers.
fn worker_deployment(
    env: &TaskEnvironment,
    options: &Options,
    version: &str,
) -> Result<Rendered, Failure> {
    let env_name = env.name();
    let slug = slug(env_name)?;
    let name = format!("weir-worker-{slug}");
    let mut notes = Vec::new();
    let mut annotations = vec![
        ("weir.dev/environment", Node::str(env_name)),
        ("weir.dev/version", Node::str(version)),
        ("weir.dev/autoscale-metric", Node::str(SCALING_METRIC)),
        (
            "weir.dev/autoscale-query",
            Node::str(format!(
                "{SCALING_METRIC}{{queue=\"{}\"}}",
                prometheus_label_value(&format!("{env_name}@{version}"))
            )),
        ),
        // The metric is already a number of workers: one replica per unit.
        ("weir.dev/autoscale-target", Node::str("1")),
    ];
    let replicas = match env.reuse_policy() {
        None => 1,
        Some(policy) => {
            if policy.scope == ReuseScope::Run {
                return Err(Failure::input(format!(
                    "environment {env_name:?} keeps its workers per run (ReuseScope::Run); a Deployment's workers serve every run, so it cannot be deployed as one. Use ReuseScope::Global"
                )));
            }
            let (min, max) = (*policy.replicas.start(), *policy.replicas.end());
            if min > max {
                return Err(Failure::input(format!(
                    "environment {env_name:?} has a reuse policy of {min}..={max} replicas: the least is above the most"
                )));
            }
            annotations.push(("weir.dev/replicas-min", Node::str(min.to_string())));
            annotations.push(("weir.dev/replicas-max", Node::str(max.to_string())));
            annotations.push((
                "weir.dev/scaledown-after",
                Node::str(format!("{}s", policy.scaledown_ttl.as_secs())),
            ));
            if min == 0 {
                notes.push(format!(
                    "{name}: environment {env_name:?} keeps at least 0 workers, so the Deployment has 0 replicas until an autoscaler follows {SCALING_METRIC}"
                ));
            }
            min
        }
    };
    let mut labels = vec![
        ("app.kubernetes.io/name", Node::str("weir-worker")),
        ("app.kubernetes.io/component", Node::str("worker")),
        ("weir.dev/environment", Node::str(slug.clone())),
    ];
    let selector = Node::map(labels.clone());
    let resources = env.resources_spec();
    let mut requests = Vec::new();
    let mut limits = Vec::new();
    if let Some(cpu) = resources.cpu {
        requests.push(("cpu", Node::str(cpu_quantity(env_name, cpu)?)));
    }
    if let Some(memory) = &resources.memory {
        if !is_memory_quantity(memory) {
            return Err(Failure::input(format!(
                "environment {env_name:?} asks for memory {memory:?}, which is not a Kubernetes quantity (e.g. 16Gi, 512Mi, 2G)"
            )));
        }
        // The limit too: a worker over its request is the one the kernel kills, not a neighbour.
        requests.push(("memory", Node::str(memory.clone())));
        limits.push(("memory", Node::str(memory.clone())));
    }
    let mut node_selector = Vec::new();
    if let Some(gpu) = &resources.gpu {
        let (kind, count) = gpu_request(env_name, gpu)?;
        limits.push(("nvidia.com/gpu", Node::str(count.to_string())));
        if let Some(kind) = kind {
            match &options.gpu_node_label {
                Some(label) => {
                    if !is_label_value(&kind) {
                        return Err(Failure::input(format!(
                            "environment {env_name:?} asks for GPU kind {kind:?}, which cannot be the value of the node label {label}"
                        )));
                    }
                    node_selector.push((label.as_str(), Node::str(kind)));
                }
                None => {
                    notes.push(format!(
                        "{name}: environment {env_name:?} asks for GPU kind {kind}; pods are not placed by GPU kind without --gpu-node-label (recorded in the annotation weir.dev/gpu-kind)"
                    ));
                    annotations.push(("weir.dev/gpu-kind", Node::str(kind)));
                }
            }
        }
    }
    let mut container_env = vec![Node::map(vec![
        ("name", Node::str("WEIR_TOKEN")),
        (
            "valueFrom",
            Node::map(vec![(
                "secretKeyRef",
                Node::map(vec![
                    ("name", Node::str(&options.token_secret)),
                    ("key", Node::str(&options.token_key)),
                ]),
            )]),
        ),
    ])];
    for (k, v) in &options.set_env {
        container_env.push(Node::map(vec![
            ("name", Node::str(k)),
            ("value", Node::str(v)),
        ]));
    }
    let mut container = vec![
        ("name", Node::str("worker")),
        ("image", Node::str(&options.image)),
    ];
    if let Some(command) = &options.command {
        container.push(("command", Node::List(vec![Node::str(command)])));
    }
    container.push((
        "args",
        Node::List(
            ["worker", "--server", &options.server, "--env", env_name]
                .into_iter()
                .map(Node::str)
                .collect(),
        ),
    ));
    container.push(("env", Node::List(container_env)));
    if !options.env_secrets.is_empty() {
        container.push((
            "envFrom",
            Node::List(
                options
                    .env_secrets
                    .iter()
                    .map(|s| {
                        Node::map(vec![("secretRef", Node::map(vec![("name", Node::str(s))]))])
                    })
                    .collect(),
            ),
        ));
    }
    let mut resource_fields = Vec::new();
    if !requests.is_empty() {
        resource_fields.push(("requests", Node::map(requests)));
    }
    if !limits.is_empty() {
        resource_fields.push(("limits", Node::map(limits)));
    }
    if !resource_fields.is_empty() {
        container.push(("resources", Node::map(resource_fields)));
    }
    let mut pod_spec = vec![
        // Workers talk to the control plane only, never to the Kubernetes API.
        ("automountServiceAccountToken", Node::Bool(false)),
        ("containers", Node::List(vec![Node::map(container)])),
    ];
    if !node_selector.is_empty() {
        pod_spec.push(("nodeSelector", Node::map(node_selector)));
    }
    let mut metadata = vec![("name", Node::str(&name))];
    if let Some(ns) = &options.namespace {
        metadata.push(("namespace", Node::str(ns)));
    }
    labels.push(("weir.dev/version", Node::str(version)));
    metadata.push(("labels", Node::map(labels.clone())));
    metadata.push(("annotations", Node::map(annotations)));
    let manifest = Node::map(vec![
        ("apiVersion", Node::str("apps/v1")),
        ("kind", Node::str("Deployment")),
        ("metadata", Node::map(metadata)),
        (
            "spec",
            Node::map(vec![
                ("replicas", Node::Int(replicas as i64)),
                ("selector", Node::map(vec![("matchLabels", selector)])),
                (
                    "template",
                    Node::map(vec![
                        ("metadata", Node::map(vec![("labels", Node::map(labels))])),
                        ("spec", Node::map(pod_spec)),
                    ]),
                ),
            ]),
        ),
    ]);
    Ok(Rendered {
        name,
        manifest,
        notes,
    })
}

/// A DNS label made of an environment's name (`ETL_v2` → `etl-v2`).
fn slug(env: &str) -> Result<String, Failure> {
    let mut s = String::new();
    for c in env.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            s.push(c);
        } else if !s.ends_with('-') {
            s.push('-');
        }
    }
    let s = s.trim_matches('-');
    // `weir-worker-` and the ReplicaSet's and pod's suffixes must fit in a 63-character name.
    let s: String = s.chars().take(40).collect::<String>();
    let s = s.trim_end_matches('-').to_string();
    if s.is_empty() {
        return Err(Failure::input(format!(
            "environment {env:?} has no letter or digit to name its Deployment by"
        )));
    }
    Ok(s)
}

/// CPU cores as a Kubernetes quantity: whole cores, or millicores.
fn cpu_quantity(env: &str, cpu: f64) -> Result<String, Failure> {
    let milli = cpu * 1000.0;
    if !cpu.is_finite() || milli < 1.0 || (milli - milli.round()).abs() > 1e-6 {
        return Err(Failure::input(format!(
            "environment {env:?} asks for {cpu} CPU cores; Kubernetes takes a positive number of millicores (e.g. 0.5 or 2)"
        )));
    }
    let milli = milli.round() as u64;
    Ok(if milli.is_multiple_of(1000) {
        (milli / 1000).to_string()
    } else {
        format!("{milli}m")
    })
}

/// A positive byte count: digits (a fraction allowed) and an optional binary or decimal suffix.
fn is_memory_quantity(q: &str) -> bool {
    let suffixes = [
        "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "k", "M", "G", "T", "P", "E", "",
    ];
    suffixes.iter().any(|suffix| {
        let Some(number) = q.strip_suffix(suffix) else {
            return false;
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, "0"));
        !whole.is_empty()
            && !fraction.is_empty()
            && whole.chars().all(|c| c.is_ascii_digit())
            && fraction.chars().all(|c| c.is_ascii_digit())
            && number.chars().any(|c| c.is_ascii_digit() && c != '0')
    })
}

/// `KIND:COUNT`, `COUNT` or `KIND` (one GPU).
fn gpu_request(env: &str, gpu: &str) -> Result<(Option<String>, u32), Failure> {
    let bad = || {
        Failure::input(format!(
            "environment {env:?} asks for GPU {gpu:?}; write KIND:COUNT (e.g. A10G:1), COUNT or KIND"
        ))
    };
    let (kind, count) = match gpu.rsplit_once(':') {
        Some((kind, count)) => (Some(kind), count.parse::<u32>().map_err(|_| bad())?),
        None => match gpu.parse::<u32>() {
            Ok(n) => (None, n),
            Err(_) => (Some(gpu), 1),
        },
    };
    if count == 0 || kind.is_some_and(|k| k.trim().is_empty()) {
        return Err(bad());
    }
    Ok((kind.map(|k| k.trim().to_string()), count))
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn is_label_value(s: &str) -> bool {
    s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && s.chars().next().is_none_or(|c| c.is_ascii_alphanumeric())
        && s.chars().last().is_none_or(|c| c.is_ascii_alphanumeric())
}

fn is_label_key(s: &str) -> bool {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    prefix.is_none_or(is_dns_subdomain) && !name.is_empty() && is_label_value(name)
}

fn is_env_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
}

/// A Prometheus label value's escapes (`\`, `"`, newline).
fn prometheus_label_value(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests;
