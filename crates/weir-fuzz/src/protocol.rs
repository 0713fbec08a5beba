//! Every message decoder of the worker protocol (`weir_engine::worker::protocol`).

use std::fmt::Debug;

use serde::{Serialize, de::DeserializeOwned};
use weir_engine::worker::protocol::{
    CancelCalls, Checkpoint, CompleteBatch, CompleteReply, ErrorReply, Heartbeat, HeartbeatReply,
    LeaseRequest, LeaseResponse, Register, Registered, Request, ResultsReply, ResultsRequest,
    SubmitBatch, TraceLookup, TraceRecord,
};

/// The decoders, in the order of the selector byte: the requests as the engine's HTTP server
/// decodes them, then the replies as the worker decodes them.
pub const DECODERS: [&str; 16] = [
    "Register",
    "LeaseRequest",
    "Heartbeat",
    "CompleteBatch",
    "SubmitBatch",
    "ResultsRequest",
    "CancelCalls",
    "TraceLookup",
    "TraceRecord",
    "Registered",
    "LeaseResponse",
    "HeartbeatReply",
    "CompleteReply",
    "ResultsReply",
    "Checkpoint",
    "ErrorReply",
];

/// Decodes a body as the transport does (`rmp_serde::from_slice`); a message that decodes
/// re-encodes (`to_vec_named`, as it is sent) to bytes that decode to the same encoding.
fn reencode<T: Serialize + DeserializeOwned + Debug>(body: &[u8]) -> Option<T> {
    let msg: T = rmp_serde::from_slice(body).ok()?;
    let once = rmp_serde::to_vec_named(&msg)
        .unwrap_or_else(|e| panic!("{msg:?} decoded from {body:02x?} does not encode: {e}"));
    let again: T = rmp_serde::from_slice(&once)
        .unwrap_or_else(|e| panic!("encoding {once:02x?} of {msg:?} does not decode: {e}"));
    let twice = rmp_serde::to_vec_named(&again).expect("a decoded message encodes");
    assert_eq!(once, twice, "decode→encode is not stable for {msg:?}");
    Some(msg)
}

/// A request, and the checks the server makes before the engine sees it.
fn request<R: Request + Serialize + DeserializeOwned + Debug>(body: &[u8]) {
    if let Some(req) = reencode::<R>(body) {
        let _ = req.worker() == "w-1";
        let _ = req.items() > weir_engine::worker::protocol::MAX_BATCH;
    }
}

/// A reply as the worker decodes it.
fn reply<T: Serialize + DeserializeOwned + Debug>(body: &[u8]) {
    let _ = reencode::<T>(body);
}

/// The first byte picks the decoder (see [`DECODERS`]); the rest is the body.
pub fn protocol_messages(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    match selector as usize % DECODERS.len() {
        0 => request::<Register>(body),
        1 => request::<LeaseRequest>(body),
        2 => request::<Heartbeat>(body),
        3 => request::<CompleteBatch>(body),
        4 => request::<SubmitBatch>(body),
        5 => request::<ResultsRequest>(body),
        6 => request::<CancelCalls>(body),
        7 => request::<TraceLookup>(body),
        8 => request::<TraceRecord>(body),
        9 => reply::<Registered>(body),
        10 => reply::<LeaseResponse>(body),
        11 => reply::<HeartbeatReply>(body),
        12 => reply::<CompleteReply>(body),
        13 => reply::<ResultsReply>(body),
        14 => reply::<Checkpoint>(body),
        _ => {
            // A refusal: its ErrorReply, or the body as text.
            let message = rmp_serde::from_slice::<ErrorReply>(body)
                .map(|r| r.message)
                .unwrap_or_else(|_| String::from_utf8_lossy(body).into_owned());
            let _ = message.len();
            reply::<ErrorReply>(body);
        }
    }
}
