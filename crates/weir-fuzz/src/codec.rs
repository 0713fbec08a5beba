//! The canonical codec (`weir_core::codec`) on untrusted bytes.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_bytes::ByteBuf;
use weir_core::codec;

/// An enum of every variant shape serde has.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Shape {
    /// Unit variant.
    Empty,
    /// Newtype variant.
    Square(f32),
    /// Tuple variant.
    Pair(u8, i16),
    /// Struct variant.
    Circle {
        /// Radius.
        r: f64,
    },
}

/// What the `#[weir::task]` macro decodes inputs into: a struct of named parameters.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// An unsigned integer.
    pub a: u64,
    /// A string.
    pub b: String,
    /// A sequence.
    pub c: Vec<i32>,
    /// A map.
    pub d: HashMap<String, f64>,
    /// An optional enum.
    pub e: Option<Shape>,
    /// Bytes.
    pub f: ByteBuf,
}

/// Decodes `data` as `T`; what decodes must encode, and its encoding must decode to a value
/// that encodes to the same bytes (the canonical form is a fixed point).
fn stable<T: Serialize + DeserializeOwned + Debug>(data: &[u8]) {
    let Ok(value) = codec::decode::<T>(data) else {
        return;
    };
    let once = codec::encode(&value)
        .unwrap_or_else(|e| panic!("{value:?} decoded from {data:02x?} does not encode: {e}"));
    let again: T = codec::decode(&once)
        .unwrap_or_else(|e| panic!("encoding {once:02x?} of {value:?} does not decode: {e}"));
    let twice = codec::encode(&again).expect("a decoded value encodes");
    assert_eq!(once, twice, "decode→encode is not stable for {value:?}");
    assert_eq!(
        codec::canonicalize(once.clone()).expect("canonical bytes canonicalize"),
        once,
        "encode's output is not canonical"
    );
}

/// The codec on `data`: what the UI and CLI show of a payload (`to_json`), `canonicalize`,
/// the cache key's input hash, and typed decodes of task-like types with their round trip.
pub fn codec_decode(data: &[u8]) {
    let _ = codec::to_json(data);
    let _ = weir_core::cache::inputs_hash_without(data, &["b", "ignored"]);
    if let Ok(canonical) = codec::canonicalize(data.to_vec()) {
        assert_eq!(
            codec::canonicalize(canonical.clone()).expect("canonical bytes canonicalize"),
            canonical,
            "canonicalize is not idempotent"
        );
        // (It may not show: the fast path accepts nesting deeper than the decoders' 1024.)
        let _ = codec::to_json(&canonical);
    }
    stable::<rmpv::Value>(data);
    stable::<serde_json::Value>(data);
    stable::<Args>(data);
    stable::<Vec<u8>>(data);
    stable::<ByteBuf>(data);
    stable::<String>(data);
    stable::<(u64, i8, bool, char)>(data);
    stable::<BTreeMap<String, Vec<u32>>>(data);
    stable::<HashMap<u32, Option<String>>>(data);
    stable::<Vec<Shape>>(data);
    stable::<f32>(data);
    stable::<()>(data);
}
