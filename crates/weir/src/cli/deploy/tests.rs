use super::yaml::yaml_key;
use super::*;

#[test]
fn yaml_and_json_hold_the_same_tree_and_strings_stay_strings() {
    let tricky = [
        "yes",
        "0755",
        "a: b",
        "- x",
        "#c",
        "\"q\"",
        "back\\slash",
        "line\nbreak",
        "tab\t",
        "",
        "null",
        "~",
        "\u{7f}\u{1b}[0m",
        "é",
    ];
    let node = Node::map(vec![
        (
            "list",
            Node::List(tricky.iter().map(|s| Node::str(*s)).collect()),
        ),
        (
            "nested",
            Node::List(vec![
                Node::map(vec![("k: v", Node::Int(3)), ("b", Node::Bool(true))]),
                Node::List(vec![Node::str("inner")]),
                Node::map(vec![]),
            ]),
        ),
        ("empty", Node::List(vec![])),
    ]);
    let json: serde_json::Value = serde_json::from_str(&node.to_json()).unwrap();
    assert_eq!(json["list"][0], "yes");
    assert_eq!(json["nested"][0]["k: v"], 3);
    let yaml = node.to_yaml();
    // Every line is a key (bare only when a plain name), or a list item, each value
    // quoted: nothing in a value can start a structure of its own.
    for line in yaml.lines() {
        let t = line.trim_start();
        assert!(
            t.starts_with('"')
                || t.starts_with("- ")
                || t.starts_with("list:")
                || t.starts_with("nested:")
                || t.starts_with("b:")
                || t.starts_with("empty:"),
            "line {line:?} of\n{yaml}"
        );
    }
    assert!(yaml.contains("\"k: v\": 3\n"), "{yaml}");
    assert_eq!(yaml_key("Yes"), "\"Yes\"");
    assert_eq!(yaml_key("app.kubernetes.io/name"), "app.kubernetes.io/name");
    assert_eq!(yaml_key("9x"), "\"9x\"");
    assert!(yaml.contains("\"line\\nbreak\""), "{yaml}");
    assert!(yaml.contains("- - \"inner\"\n"), "{yaml}");
    assert!(yaml.contains("empty: []\n"), "{yaml}");
}

#[test]
fn quantities_and_gpus_are_checked() {
    assert_eq!(cpu_quantity("e", 4.0).unwrap(), "4");
    assert_eq!(cpu_quantity("e", 0.5).unwrap(), "500m");
    assert_eq!(cpu_quantity("e", 1.25).unwrap(), "1250m");
    for bad in [0.0, -1.0, 0.0004, 1.0005, f64::NAN, f64::INFINITY] {
        let e = cpu_quantity("etl", bad).unwrap_err();
        assert!(e.message.contains("\"etl\""), "{}", e.message);
    }
    for good in ["16Gi", "512Mi", "2G", "1.5Gi", "1000"] {
        assert!(is_memory_quantity(good), "{good}");
    }
    for bad in [
        "16GB", "Gi", "0", "0Gi", "-1Gi", "1e9", "1.Gi", ".5Gi", "16 Gi", "",
    ] {
        assert!(!is_memory_quantity(bad), "{bad}");
    }
    assert_eq!(
        gpu_request("e", "A10G:1").unwrap(),
        (Some("A10G".into()), 1)
    );
    assert_eq!(gpu_request("e", "2").unwrap(), (None, 2));
    assert_eq!(gpu_request("e", "H100").unwrap(), (Some("H100".into()), 1));
    for bad in ["A10G:0", "A10G:x", ":1", "0", "A10G:-1"] {
        assert!(gpu_request("e", bad).is_err(), "{bad}");
    }
    assert_eq!(slug("ETL_v2").unwrap(), "etl-v2");
    assert!(is_label_key("nvidia.com/gpu.product") && !is_label_key("a b"));
    assert_eq!(slug("__a..b__").unwrap(), "a-b");
    assert!(slug("__").is_err());
    assert_eq!(slug(&"x".repeat(80)).unwrap().len(), 40);
}

fn options() -> Options {
    Options {
        image: "img".into(),
        server: "http://weir:8700".into(),
        namespace: None,
        command: None,
        token_secret: "weir".into(),
        token_key: "token".into(),
        set_env: Vec::new(),
        env_secrets: Vec::new(),
        gpu_node_label: None,
    }
}

#[test]
#[allow(clippy::reversed_empty_ranges)] // an inverted range is what is refused
fn settings_a_deployment_cannot_hold_are_refused_naming_the_environment() {
    use weir_core::spec::{Resources, ReusePolicy};
    let refused = [
        (
            TaskEnvironment::new("perrun").reuse(ReusePolicy::new().scope(ReuseScope::Run)),
            "ReuseScope::Run",
        ),
        (
            TaskEnvironment::new("upside").reuse(ReusePolicy::new().replicas(3..=1)),
            "3..=1 replicas",
        ),
        (
            TaskEnvironment::new("mem").resources(Resources::new().memory("16GB")),
            "not a Kubernetes quantity",
        ),
        (
            TaskEnvironment::new("gpu").resources(Resources::new().gpu("A10G:0")),
            "write KIND:COUNT",
        ),
        (
            TaskEnvironment::new("cpu").resources(Resources::new().cpu(0.0001)),
            "millicores",
        ),
        (TaskEnvironment::new("__"), "no letter or digit"),
    ];
    for (env, says) in refused {
        let e = worker_deployment(&env, &options(), "v1").err().unwrap();
        assert_eq!(e.code, 2);
        assert!(e.message.contains(says), "{}", e.message);
        if env.name() != "__" {
            assert!(
                e.message.contains(&format!("{:?}", env.name())),
                "{}",
                e.message
            );
        }
    }
    // A GPU kind that cannot be a label value, with a node label to put it in.
    let mut with_label = options();
    with_label.gpu_node_label = Some("nvidia.com/gpu.product".into());
    let env = TaskEnvironment::new("g").resources(Resources::new().gpu("A10G 24GB:1"));
    let e = worker_deployment(&env, &with_label, "v1").err().unwrap();
    assert!(
        e.message.contains("cannot be the value of the node label"),
        "{}",
        e.message
    );

    // One name, two definitions: refused; the same definition twice is one environment.
    let a = TaskEnvironment::new("etl").resources(Resources::new().cpu(1));
    let b = TaskEnvironment::new("etl").resources(Resources::new().cpu(2));
    let same = a.clone();
    let e = distinct_environments([(&a, "etl.x".into()), (&b, "etl.y".into())].into_iter())
        .err()
        .unwrap();
    assert!(
        e.message.contains("\"etl\" is defined twice") && e.message.contains("etl.y"),
        "{}",
        e.message
    );
    let one =
        distinct_environments([(&a, "etl.x".into()), (&same, "etl.y".into())].into_iter()).unwrap();
    assert_eq!(one.len(), 1);
    assert!(distinct_environments(std::iter::empty()).is_err());
}
