//! Seed inputs of each target: well-formed messages of every kind, and the malformed shapes
//! that matter (lengths claiming gigabytes, deep nesting, truncation). The fuzzer starts from
//! them (`fuzz/seeds/`, written by `cargo run -p weir-fuzz --example write_seeds`), and the
//! smoke test runs them and mutations of them.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde_bytes::ByteBuf;
use weir_core::{ActionId, ErrorKind, Failure};
use weir_engine::worker::protocol::{
    AttemptOutcome, CancelCalls, Checkpoint, ChildCall, ChildResult, CompleteBatch, CompleteReply,
    Completion, ErrorReply, Heartbeat, HeartbeatReply, LeaseRequest, LeaseResponse, LeasedAction,
    ObjectStoreOffer, PayloadRef, Register, Registered, RemoteError, ResultsReply, ResultsRequest,
    SubmitBatch, TraceLookup, TraceRecord,
};
use weir_store::RunId;

use crate::codec::{Args, Shape};

/// The seeds of target `name` (one of [`crate::TARGETS`]).
pub fn seeds(name: &str) -> Vec<Vec<u8>> {
    match name {
        "codec_decode" => codec(),
        "protocol_messages" => protocol(),
        "ui_params" => ui(),
        "cli_input" => cli(),
        other => panic!("no target {other}"),
    }
}

/// Byte strings that malformed MessagePack is made of: headers of every kind with lengths
/// claiming up to 4 GiB, for mutations and as a libFuzzer dictionary.
pub const MSGPACK_TOKENS: &[&[u8]] = &[
    &[0xdc, 0xff, 0xff],
    &[0xdd, 0xff, 0xff, 0xff, 0xff],
    &[0xde, 0xff, 0xff],
    &[0xdf, 0xff, 0xff, 0xff, 0xff],
    &[0xc4, 0xff],
    &[0xc6, 0xff, 0xff, 0xff, 0xff],
    &[0xdb, 0xff, 0xff, 0xff, 0xff],
    &[0xc9, 0xff, 0xff, 0xff, 0xff, 0x01],
    &[0xd8, 0x01],
    &[0xcb],
    &[0xcf],
    &[0xc1],
    &[0x81],
    &[0x91],
    &[0x9f],
    &[0xa0],
];

fn enc<T: Serialize + ?Sized>(v: &T) -> Vec<u8> {
    rmp_serde::to_vec_named(v).expect("a seed encodes")
}

fn codec() -> Vec<Vec<u8>> {
    let args = Args {
        a: u64::MAX,
        b: "héllo".into(),
        c: vec![-1, 0, i32::MAX],
        d: HashMap::from([("z".into(), 1.5), ("a".into(), f64::NAN)]),
        e: Some(Shape::Circle { r: 2.0 }),
        f: ByteBuf::from(vec![0, 1, 2, 255]),
    };
    let mut out = vec![
        enc(&args),
        enc(&Args {
            e: Some(Shape::Pair(1, -2)),
            ..args.clone()
        }),
        enc(&vec![Shape::Empty, Shape::Square(0.5)]),
        enc(&BTreeMap::from([("k".to_string(), vec![1u32, 2])])),
        enc(&HashMap::from([(1u32, Some("x")), (2, None)])),
        enc(&(7u64, -3i8, true, 'é')),
        enc(&"text"),
        enc(&ByteBuf::from(vec![9; 40])),
        enc(&serde_json::json!({"b": [1, {"z": null, "a": 2.5}], "a": "s"})),
        // maps out of order, non-string keys, ext, f32, every integer width
        vec![0x82, 0xa1, b'b', 0x01, 0xa1, b'a', 0x02],
        vec![0x82, 0x02, 0xc0, 0x01, 0x81, 0xa1, b'z', 0xa1, b'a'],
        vec![0xd4, 0x01, 0x02],
        vec![0xc7, 0x02, 0x05, 0x01, 0x02],
        vec![0xca, 0x3f, 0x80, 0x00, 0x00],
        vec![
            0x96, 0xcc, 0xff, 0xcd, 0xff, 0xff, 0xd0, 0x80, 0xd1, 0x80, 0x00, 0xce, 0, 0, 0, 1,
            0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0,
        ],
        // invalid UTF-8 in a string, a truncated map
        vec![0xa2, 0xff, 0xfe],
        vec![0x82, 0xa1, b'a'],
        // deep nesting
        vec![0x91; 2000],
        [[0x81, 0xa1, b'k'].repeat(600), vec![0xc0]].concat(),
    ];
    out.extend(MSGPACK_TOKENS.iter().map(|t| t.to_vec()));
    out
}

fn failure() -> Failure {
    Failure {
        action_id: "0123456789abcdef".into(),
        task: "env.task".into(),
        kind: ErrorKind::User,
        message: "boom".into(),
        chain: vec!["cause".into()],
    }
}

fn remote() -> RemoteError {
    RemoteError {
        kind: ErrorKind::ChildFailed,
        message: "child failed".into(),
        chain: vec![],
        child: Some(failure()),
    }
}

fn protocol() -> Vec<Vec<u8>> {
    let w = || "w-1".to_string();
    let id = ActionId(0x0123_4567_89ab_cdef);
    let messages: Vec<(u8, Vec<u8>)> = vec![
        (
            0,
            enc(&Register {
                worker: w(),
                cluster: None,
            }),
        ),
        (
            1,
            enc(&LeaseRequest {
                worker: w(),
                max: 8,
                received: Some(3),
                direct: true,
            }),
        ),
        (2, enc(&Heartbeat { worker: w() })),
        (
            3,
            enc(&CompleteBatch {
                worker: w(),
                completions: vec![
                    Completion {
                        lease: 1,
                        run: Some(RunId(7)),
                        attempt: 1,
                        action: id,
                        outcome: AttemptOutcome::Output(vec![0x2a]),
                        log: None,
                        phases: None,
                    },
                    Completion {
                        lease: 4,
                        run: Some(RunId(7)),
                        attempt: 2,
                        action: id,
                        outcome: AttemptOutcome::Stored(PayloadRef {
                            key: "demo/0123456789abcdef/2/4/outputs".into(),
                            size: 70_000,
                            hash: "00".repeat(32),
                        }),
                        log: None,
                        phases: None,
                    },
                    Completion {
                        lease: 2,
                        run: None,
                        attempt: 3,
                        action: ActionId::ROOT,
                        outcome: AttemptOutcome::Error(remote()),
                        log: None,
                        phases: None,
                    },
                ],
            }),
        ),
        (
            4,
            enc(&SubmitBatch {
                worker: w(),
                calls: vec![ChildCall {
                    call: 1,
                    run: RunId(1),
                    parent: ActionId::ROOT,
                    id,
                    task: "env.child".into(),
                    inputs: vec![0x81, 0xa1, b'x', 0x01],
                    group: Some("g".into()),
                    check_store: true,
                    inputs_ref: None,
                }],
            }),
        ),
        (
            5,
            enc(&ResultsRequest {
                worker: w(),
                direct: true,
            }),
        ),
        (
            6,
            enc(&CancelCalls {
                worker: w(),
                calls: vec![1, 2, u64::MAX],
            }),
        ),
        (
            7,
            enc(&TraceLookup {
                worker: w(),
                run: RunId(-1),
                id,
                parent: ActionId::ROOT,
                direct: true,
            }),
        ),
        (
            8,
            enc(&TraceRecord {
                worker: w(),
                run: RunId(3),
                id,
                parent: ActionId::ROOT,
                name: "fetch".into(),
                inputs: vec![0x90],
                started_at: -5,
                outcome: Err(failure()),
                inputs_ref: None,
                output_ref: None,
            }),
        ),
        (
            8,
            enc(&TraceRecord {
                worker: w(),
                run: RunId(3),
                id,
                parent: ActionId::ROOT,
                name: "fetch".into(),
                inputs: vec![],
                started_at: i64::MAX,
                outcome: Ok(ByteBuf::new()),
                inputs_ref: Some(PayloadRef {
                    key: "r/a1/inputs".into(),
                    size: 65_537,
                    hash: "f".repeat(64),
                }),
                output_ref: Some(PayloadRef {
                    key: "r/a1/1/9/outputs".into(),
                    size: 70_000,
                    hash: "0".repeat(64),
                }),
            }),
        ),
        (
            9,
            enc(&Registered {
                token: "t0k3n".into(),
                object_store: Some(ObjectStoreOffer {
                    url: "s3://bucket/prefix".into(),
                    inline_threshold: 65_536,
                }),
                reference_store: None,
            }),
        ),
        (
            10,
            enc(&LeaseResponse {
                actions: vec![LeasedAction {
                    lease: 7,
                    run: RunId(1),
                    run_name: "demo".into(),
                    action: id,
                    attempt: 1,
                    task: "env.task".into(),
                    inputs: vec![0x80],
                    check_store: false,
                    inputs_ref: None,
                }],
                shutdown: false,
            }),
        ),
        (
            11,
            enc(&HeartbeatReply {
                cancelled: vec![7, 8],
                shutdown: true,
            }),
        ),
        (
            12,
            enc(&CompleteReply {
                rejected: vec![(7, "stale lease".into())],
            }),
        ),
        (
            13,
            enc(&ResultsReply {
                results: vec![
                    ChildResult {
                        call: 1,
                        outcome: Ok(ByteBuf::from(vec![1, 2])),
                        output_ref: None,
                    },
                    ChildResult {
                        call: 2,
                        outcome: Err(remote()),
                        output_ref: None,
                    },
                    ChildResult {
                        call: 3,
                        outcome: Ok(ByteBuf::new()),
                        output_ref: Some(PayloadRef {
                            key: "r/a1/1/7/outputs".into(),
                            size: 70_000,
                            hash: "0".repeat(64),
                        }),
                    },
                ],
                shutdown: false,
            }),
        ),
        (14, enc(&Checkpoint::Nothing)),
        (14, enc(&Checkpoint::Output(vec![0xc3]))),
        (14, enc(&Checkpoint::Failure(failure()))),
        (
            14,
            enc(&Checkpoint::Stored(PayloadRef {
                key: "r/a1/1/9/outputs".into(),
                size: 70_000,
                hash: "0".repeat(64),
            })),
        ),
        (
            15,
            enc(&ErrorReply {
                message: "no".into(),
            }),
        ),
        (15, b"plain text refusal".to_vec()),
    ];
    let mut out: Vec<Vec<u8>> = messages
        .into_iter()
        .map(|(selector, body)| [vec![selector], body].concat())
        .collect();
    // Batches and byte fields claiming 4 GiB.
    for selector in [3u8, 4, 6, 10, 11, 12, 13] {
        out.push(
            [
                vec![selector, 0x82, 0xa6],
                b"worker".to_vec(),
                vec![0xa3],
                b"w-1".to_vec(),
                vec![0xa5],
                b"calls".to_vec(),
                vec![0xdd, 0xff, 0xff, 0xff, 0xff],
            ]
            .concat(),
        );
    }
    out.push(
        [
            vec![14, 0x81, 0xa6],
            b"Output".to_vec(),
            vec![0xc6, 0xff, 0xff, 0xff, 0xff],
        ]
        .concat(),
    );
    out
}

/// Queries and paths for the UI (see [`crate::ui_params`] for the layout).
fn ui() -> Vec<Vec<u8>> {
    let actions = crate::ui::known_actions();
    let queries: &[&str] = &[
        "",
        "status=running&name=big&offset=0&limit=10",
        "status=failed&offset=1&limit=1",
        "status=succeeded",
        "name=%25_%5C%27%22&limit=500",
        "offset=9223372036854775807&limit=500",
        "offset=18446744073709551615",
        "limit=0",
        "limit=501",
        "buckets=10",
        "buckets=2000&offset=2&limit=1",
        "buckets=9",
        "unknown=1",
        "%ff=%fe",
        "status=&name=&offset=&limit=",
        "limit=1&limit=2",
        "name=héllo",
    ];
    let mut out = Vec::new();
    for endpoint in 0u8..9 {
        for (i, q) in queries.iter().enumerate() {
            let pick = (i as u8 % 4) << 4;
            out.push([vec![endpoint | pick], q.as_bytes().to_vec()].concat());
        }
    }
    for a in &actions {
        for endpoint in [5u8, 6, 7] {
            out.push([vec![endpoint], b"limit=2\n".to_vec(), a.as_bytes().to_vec()].concat());
        }
    }
    for extra in [
        "\n\nsmall-1",
        "\nA0\nbig",
        "\nzz\n",
        "\n0123456789ABCDEF\n",
        "\n\nno-such-run",
        "\n\n%ff",
        "status=failed\n\nsquares",
        "\n\nnone",
    ] {
        for endpoint in [1u8, 5, 6, 7] {
            out.push([vec![endpoint], extra.as_bytes().to_vec()].concat());
        }
    }
    for raw in [
        "/",
        "/assets/app.js",
        "/assets/..%2f..%2fCargo.toml",
        "/favicon.ico",
        "/api/nothing",
        "/api/runs/big/actions/a0/groups/squares/extra",
        "/api/runs//timeline",
    ] {
        out.push([vec![9], raw.as_bytes().to_vec()].concat());
    }
    out
}

/// `--input` texts for each task (see [`crate::cli_input`] for the layout).
fn cli() -> Vec<Vec<u8>> {
    let inputs: &[(u8, &str)] = &[
        (
            0,
            r#"{"n": 18446744073709551615, "i": -2147483648, "f": 1e308, "g": 0.1, "flag": true, "c": "é", "s": "x\u0000y"}"#,
        ),
        (
            0,
            r#"{"s": "", "c": "a", "flag": false, "g": -0.0, "f": 5, "i": 0, "n": 0}"#,
        ),
        (
            1,
            r#"{"items": [1, 2, 3], "names": {"b": -1, "a": 9223372036854775807}, "keyed": {"2": "two", "1": "one"}, "pair": [255, "p"], "fixed": [1, 2, 65535], "maybe": [true]}"#,
        ),
        (
            1,
            r#"{"items": [], "names": {}, "keyed": {}, "pair": [0, ""], "fixed": [0, 0, 0], "maybe": null}"#,
        ),
        (
            2,
            r#"{"point": {"x": -1, "y": null, "tags": ["a"]}, "shapes": ["Empty", {"Square": 0.5}, {"Pair": [1, -2]}, {"Circle": {"r": 1e-9}}], "bytes": [0, 255], "nothing": null}"#,
        ),
        (
            2,
            r#"{"point": {"x": 0, "tags": []}, "shapes": [], "bytes": "abc", "nothing": null}"#,
        ),
        (
            3,
            r#"{"value": {"b": [1, 2.5, "x", null, true, {"z": {}}], "a": -1, "": 18446744073709551615}}"#,
        ),
        (3, r#"{"value": 1.0}"#),
        (4, "{}"),
        (4, r#"{"extra": 1}"#),
        (5, r#"{"n": -128}"#),
        (5, r#"{"n": 1, "n": 2}"#),
        (0, "[]"),
        (0, "null"),
        (0, "{not json"),
        (3, r#"{"value": "\ud800"}"#),
        (
            3,
            "{\"value\": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}",
        ),
    ];
    let mut out: Vec<Vec<u8>> = inputs
        .iter()
        .map(|(task, text)| [vec![*task], text.as_bytes().to_vec()].concat())
        .collect();
    for name in [
        "fz.scalars",
        "scalars",
        "collections",
        "fz.no_params",
        "nope",
        "",
        ".",
    ] {
        out.push([vec![240], name.as_bytes().to_vec()].concat());
    }
    for arg in [
        "a0",
        "A0",
        "0123456789abcdef",
        "+123456789abcdef",
        "ffffffffffffffff",
        "running",
        "succeeded",
        "failed",
        "queued",
    ] {
        out.push([vec![248], arg.as_bytes().to_vec()].concat());
    }
    out
}
