//! The canonical MessagePack codec (SPEC §5.1).
//!
//! Values are encoded with `rmp-serde` with named struct fields (so inputs of a task are a map
//! `{param: value}`) and then made canonical: every map's entries are sorted by the bytes of
//! their encoded keys. Equal values therefore have equal bytes whatever the iteration order of a
//! `HashMap`, and the bytes are what gets hashed for action ids and cache keys.

use serde::{Serialize, de::DeserializeOwned};

/// A codec failure, naming what could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The value could not be serialized.
    #[error("cannot encode value as MessagePack: {0}")]
    Encode(String),
    /// The bytes do not hold a value of the expected type.
    #[error("cannot decode MessagePack value: {0}")]
    Decode(String),
    /// A JSON input did not match the expected type.
    #[error("{0}")]
    Json(String),
}

/// Encodes a value canonically.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
    let raw = rmp_serde::to_vec_named(value).map_err(|e| Error::Encode(e.to_string()))?;
    canonicalize(raw)
}

/// Decodes canonical (or any valid) MessagePack bytes into `T`.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    rmp_serde::from_slice(bytes).map_err(|e| Error::Decode(e.to_string()))
}

/// The deepest nesting of arrays, maps and extension values that [`decode`] accepts
/// (`rmp-serde`'s limit), and so that [`canonicalize`] (and [`encode`]) accepts.
const MAX_DEPTH: usize = 1023;

/// Re-encodes MessagePack bytes with every map sorted by key bytes. Bytes that are already
/// canonical (the common case: structs with one field, scalars, sequences without maps) are
/// returned without re-encoding. A value nested deeper than [`decode`] accepts is refused,
/// whatever the order of its maps.
pub fn canonicalize(raw: Vec<u8>) -> Result<Vec<u8>, Error> {
    // Fast path: walk the bytes without allocating; most values are already canonical.
    let (end, sorted) = scan(&raw, 0).ok_or_else(|| {
        Error::Decode(format!(
            "not a MessagePack value, or one nested deeper than {MAX_DEPTH} levels"
        ))
    })?;
    if sorted && end == raw.len() {
        return Ok(raw);
    }
    // rmpv counts two levels per array or map and one for the body of a string, binary or
    // extension value; its default (1024) is about 511 levels of nesting.
    let mut value = rmpv::decode::read_value_with_max_depth(&mut raw.as_slice(), 2 * MAX_DEPTH + 2)
        .map_err(|e| Error::Decode(e.to_string()))?;
    sort_maps(&mut value);
    let mut out = Vec::with_capacity(raw.len());
    rmpv::encode::write_value(&mut out, &value).map_err(|e| Error::Encode(e.to_string()))?;
    Ok(out)
}

/// Walks one MessagePack value starting at `pos`: returns where it ends and whether every map
/// in it has its keys in ascending byte order. `None` for malformed or truncated input, and
/// for nesting deeper than [`MAX_DEPTH`].
fn scan(buf: &[u8], pos: usize) -> Option<(usize, bool)> {
    scan_at(buf, pos, 0)
}

/// [`scan`] of a value inside `depth` arrays, maps or extension values.
fn scan_at(buf: &[u8], pos: usize, depth: usize) -> Option<(usize, bool)> {
    let marker = *buf.get(pos)?;
    if depth >= MAX_DEPTH && matches!(marker, 0x80..=0x9f | 0xc7..=0xc9 | 0xd4..=0xd8 | 0xdc..=0xdf)
    {
        return None;
    }
    let be = |at: usize, n: usize| -> Option<usize> {
        let bytes = buf.get(at..at + n)?;
        Some(bytes.iter().fold(0usize, |acc, b| (acc << 8) | *b as usize))
    };
    let body = pos + 1;
    // A value of `n` bytes after the marker, if the buffer holds them.
    let fixed = |n: usize| Some((body + n, true)).filter(|(e, _)| *e <= buf.len());
    let (len_bytes, kind) = match marker {
        0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => return Some((body, true)),
        0x80..=0x8f => return scan_map(buf, body, (marker & 0x0f) as usize, depth + 1),
        0x90..=0x9f => return scan_array(buf, body, (marker & 0x0f) as usize, depth + 1),
        0xa0..=0xbf => return fixed((marker & 0x1f) as usize),
        0xcc | 0xd0 => return fixed(1),
        0xcd | 0xd1 => return fixed(2),
        0xca | 0xce | 0xd2 => return fixed(4),
        0xcb | 0xcf | 0xd3 => return fixed(8),
        0xd4 => return fixed(2),
        0xd5 => return fixed(3),
        0xd6 => return fixed(5),
        0xd7 => return fixed(9),
        0xd8 => return fixed(17),
        0xc4 | 0xd9 => (1, 's'),
        0xc5 | 0xda => (2, 's'),
        0xc6 | 0xdb => (4, 's'),
        0xc7 => (1, 'e'),
        0xc8 => (2, 'e'),
        0xc9 => (4, 'e'),
        0xdc => (2, 'a'),
        0xdd => (4, 'a'),
        0xde => (2, 'm'),
        0xdf => (4, 'm'),
        _ => return None,
    };
    let n = be(body, len_bytes)?;
    let after = body + len_bytes;
    let end = match kind {
        's' => after + n,
        'e' => after + 1 + n,
        'a' => return scan_array(buf, after, n, depth + 1),
        _ => return scan_map(buf, after, n, depth + 1),
    };
    (end <= buf.len()).then_some((end, true))
}

fn scan_array(buf: &[u8], mut pos: usize, n: usize, depth: usize) -> Option<(usize, bool)> {
    let mut sorted = true;
    for _ in 0..n {
        let (end, s) = scan_at(buf, pos, depth)?;
        sorted &= s;
        pos = end;
    }
    Some((pos, sorted))
}

fn scan_map(buf: &[u8], mut pos: usize, n: usize, depth: usize) -> Option<(usize, bool)> {
    let mut sorted = true;
    let mut prev: Option<&[u8]> = None;
    for _ in 0..n {
        let (key_end, ks) = scan_at(buf, pos, depth)?;
        let key = &buf[pos..key_end];
        if prev.is_some_and(|p| p > key) {
            sorted = false;
        }
        prev = Some(key);
        let (val_end, vs) = scan_at(buf, key_end, depth)?;
        sorted &= ks && vs;
        pos = val_end;
    }
    Some((pos, sorted))
}

/// Sorts every map in place; returns whether anything moved.
fn sort_maps(value: &mut rmpv::Value) -> bool {
    match value {
        rmpv::Value::Array(items) => items.iter_mut().fold(false, |c, v| sort_maps(v) | c),
        rmpv::Value::Map(entries) => {
            let mut changed = false;
            for (k, v) in entries.iter_mut() {
                changed |= sort_maps(k);
                changed |= sort_maps(v);
            }
            let keys: Vec<Vec<u8>> = entries.iter().map(|(k, _)| key_bytes(k)).collect();
            if keys.windows(2).any(|w| w[0] > w[1]) {
                let mut paired: Vec<_> = keys.into_iter().zip(std::mem::take(entries)).collect();
                paired.sort_by(|a, b| a.0.cmp(&b.0));
                *entries = paired.into_iter().map(|(_, e)| e).collect();
                changed = true;
            }
            changed
        }
        _ => false,
    }
}

fn key_bytes(key: &rmpv::Value) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = rmpv::encode::write_value(&mut out, key);
    out
}

/// Converts MessagePack bytes to JSON for display (CLI, UI). Binary data becomes an array of
/// numbers; non-string map keys are rendered as strings.
pub fn to_json(bytes: &[u8]) -> Result<serde_json::Value, Error> {
    let value =
        rmpv::decode::read_value(&mut &bytes[..]).map_err(|e| Error::Decode(e.to_string()))?;
    Ok(value_to_json(value))
}

fn value_to_json(value: rmpv::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        rmpv::Value::Nil => J::Null,
        rmpv::Value::Boolean(b) => J::Bool(b),
        rmpv::Value::Integer(i) => {
            if let Some(v) = i.as_i64() {
                J::from(v)
            } else {
                J::from(i.as_u64().unwrap_or_default())
            }
        }
        rmpv::Value::F32(f) => J::from(f as f64),
        rmpv::Value::F64(f) => J::from(f),
        rmpv::Value::String(s) => J::String(s.into_str().unwrap_or_default()),
        rmpv::Value::Binary(b) => J::Array(b.into_iter().map(J::from).collect()),
        rmpv::Value::Array(items) => J::Array(items.into_iter().map(value_to_json).collect()),
        rmpv::Value::Map(entries) => J::Object(
            entries
                .into_iter()
                .map(|(k, v)| {
                    let key = match k {
                        rmpv::Value::String(s) => s.into_str().unwrap_or_default(),
                        other => key_text(other),
                    };
                    (key, value_to_json(v))
                })
                .collect(),
        ),
        rmpv::Value::Ext(_, data) => J::Array(data.into_iter().map(J::from).collect()),
    }
}

/// The text a non-string map key shows as: its JSON, where the non-string keys of maps inside
/// it are written the same way and not escaped as strings again. (Escaping them at every level
/// made the text grow fourfold per level of maps nested in keys: a 60-byte value took
/// gigabytes to show.)
fn key_text(key: rmpv::Value) -> String {
    fn write(out: &mut String, value: rmpv::Value) {
        match value {
            rmpv::Value::Array(items) => {
                out.push('[');
                for (i, v) in items.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(out, v);
                }
                out.push(']');
            }
            rmpv::Value::Map(entries) => {
                out.push('{');
                for (i, (k, v)) in entries.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    if k.is_str() {
                        out.push_str(&value_to_json(k).to_string());
                    } else {
                        out.push('"');
                        write(out, k);
                        out.push('"');
                    }
                    out.push(':');
                    write(out, v);
                }
                out.push('}');
            }
            other => out.push_str(&value_to_json(other).to_string()),
        }
    }
    let mut out = String::new();
    write(&mut out, key);
    out
}

/// Parses JSON text into `T` and encodes it canonically; the error names the JSON problem
/// (line, column, expected type).
pub fn json_to_canonical<T: Serialize + DeserializeOwned>(json: &str) -> Result<Vec<u8>, Error> {
    let value: T = serde_json::from_str(json).map_err(|e| Error::Json(e.to_string()))?;
    encode(&value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;
    use std::collections::{BTreeMap, HashMap};

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Args {
        zeta: u32,
        alpha: Vec<String>,
        map: HashMap<String, i64>,
    }

    #[test]
    fn struct_round_trips_and_is_canonical() {
        let a = Args {
            zeta: 7,
            alpha: vec!["x".into()],
            map: [("b".into(), 2), ("a".into(), 1)].into(),
        };
        let bytes = encode(&a).unwrap();
        let back: Args = decode(&bytes).unwrap();
        assert_eq!(back, a);
        // fields come out sorted by name
        assert_eq!(
            to_json(&bytes).unwrap().to_string(),
            r#"{"alpha":["x"],"map":{"a":1,"b":2},"zeta":7}"#
        );
        assert!(decode::<String>(&bytes).is_err());
    }

    #[test]
    fn json_errors_name_the_problem() {
        let err =
            json_to_canonical::<Args>(r#"{"zeta": "no", "alpha": [], "map": {}}"#).unwrap_err();
        assert!(err.to_string().contains("invalid type"), "{err}");
        let err = json_to_canonical::<Args>("{not json").unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
    }

    /// Found by the `codec_decode` fuzz target (`fuzz/`): a map whose key is a truncated
    /// fixed-size value (here a fixext 16 marker and nothing after it) made the scanner slice
    /// past the end of the buffer and panic.
    #[test]
    fn truncated_fixed_size_map_key_is_an_error_not_a_panic() {
        for bytes in [
            &[0x82, 0xd8][..],
            &[0x82, 0xd8, 0x78],
            &[0x81, 0xcc],
            &[0x81, 0xcb, 0, 0, 0],
            &[0x81, 0xd4, 0x01],
            &[0x81, 0xa3, b'a'],
        ] {
            assert_eq!(scan(bytes, 0), None, "{bytes:02x?}");
            assert!(canonicalize(bytes.to_vec()).is_err(), "{bytes:02x?}");
        }
        // and complete ones still scan
        assert_eq!(scan(&[0x81, 0xcc, 0x01, 0xc0], 0), Some((4, true)));
        assert_eq!(scan(&[0xd8; 18], 0), Some((18, true)));
    }

    /// Found by the `codec_decode` fuzz target: `decode` takes 1023 levels of nesting, but
    /// re-sorting a value's maps read it back with rmpv's default depth (about 511 levels), so
    /// whether a deeply nested value encoded depended on the order of its maps (a `HashMap`'s
    /// is random; a struct's fields come in declaration order). Now what decodes encodes, and
    /// what is nested deeper than decode takes is refused whatever its maps' order.
    #[test]
    fn what_decodes_encodes_whatever_its_depth_and_map_order() {
        // (1022 levels take more than a test thread's 2 MiB of stack in a debug build; about
        // under 512 KiB in a release build.)
        std::thread::Builder::new()
            .stack_size(64 << 20)
            .spawn(decode_encode_depths)
            .unwrap()
            .join()
            .unwrap();
    }

    fn decode_encode_depths() {
        // [{"b": 0, "a": 0}, [[[...[0]...]]]]: an unsorted map, then `levels` nested arrays
        let deep = |map: &[u8], levels: usize| -> Vec<u8> {
            [&[0x92][..], map, &vec![0x91; levels], &[0x00]].concat()
        };
        let unsorted = [0x82, 0xa1, b'b', 0x00, 0xa1, b'a', 0x00];
        let sorted = [0x82, 0xa1, b'a', 0x00, 0xa1, b'b', 0x00];
        for levels in [600, MAX_DEPTH - 1] {
            let value: rmpv::Value = decode(&deep(&unsorted, levels)).unwrap();
            let bytes = encode(&value).unwrap();
            assert_eq!(bytes, deep(&sorted, levels));
            let again: rmpv::Value = decode(&bytes).unwrap();
            assert_eq!(encode(&again).unwrap(), bytes);
        }
        for map in [unsorted, sorted] {
            assert!(decode::<rmpv::Value>(&deep(&map, MAX_DEPTH)).is_err());
            assert!(canonicalize(deep(&map, MAX_DEPTH)).is_err());
        }
    }

    /// Found by the `codec_decode` fuzz target (a timeout): maps used as map keys, nested,
    /// took time and memory fourfold per level to show as JSON, as each level's key text was
    /// escaped again inside the next (`{{{...: nil}: nil}: nil}`, 16 levels in 33 bytes, made
    /// 131 186 characters; 32 levels did not finish).
    #[test]
    fn nested_map_keys_show_in_linear_size() {
        let nested = |levels: usize| [vec![0x81; levels], vec![0xc0; levels + 1]].concat();
        assert_eq!(
            to_json(&nested(2)).unwrap().to_string(),
            r#"{"{\"null\":null}":null}"#
        );
        for levels in [16, 400] {
            let shown = to_json(&nested(levels)).unwrap().to_string();
            assert!(
                shown.len() < 20 * levels,
                "{levels} levels: {}",
                shown.len()
            );
        }
        // keys that are scalars, or containers without maps, show as before
        let bytes = encode(&BTreeMap::from([((1u8, vec![true]), 2u8)])).unwrap();
        assert_eq!(to_json(&bytes).unwrap().to_string(), r#"{"[1,[true]]":2}"#);
        let bytes = encode(&BTreeMap::from([(3i8, "x")])).unwrap();
        assert_eq!(to_json(&bytes).unwrap().to_string(), r#"{"3":"x"}"#);
    }

    /// Found by the `cli_input` fuzz target: serde_json's default float parsing is only nearly
    /// exact, so a number as `get io` shows it (the shortest text that parses back exactly)
    /// could come back one unit in the last place off when given to `run --input`: other
    /// inputs, so another action id and cache key. The workspace now enables serde_json's
    /// `float_roundtrip`.
    #[test]
    fn json_floats_parse_exactly_and_show_back_the_same() {
        for text in [
            "4846174407370954444444444444444444451615",
            "4.8461744073709545e+39",
            "0.1",
            "2.2250738585072014e-308",
            "1.7976931348623157e308",
        ] {
            let exact: f64 = text.parse().unwrap();
            let bytes = json_to_canonical::<f64>(text).unwrap();
            assert_eq!(bytes, encode(&exact).unwrap(), "{text}");
            let shown = to_json(&bytes).unwrap().to_string();
            assert_eq!(
                json_to_canonical::<f64>(&shown).unwrap(),
                bytes,
                "{text} → {shown}"
            );
        }
    }

    proptest! {
        #[test]
        fn shown_floats_parse_back_exactly(bits in any::<u64>()) {
            let value = f64::from_bits(bits);
            prop_assume!(value.is_finite());
            let bytes = encode(&value).unwrap();
            let shown = to_json(&bytes).unwrap().to_string();
            prop_assert_eq!(json_to_canonical::<f64>(&shown).unwrap(), bytes);
        }
    }

    proptest! {
        #[test]
        fn equal_maps_encode_equally_whatever_the_insertion_order(
            entries in proptest::collection::vec(("[a-z]{0,6}", any::<i64>()), 0..20)
        ) {
            let sorted: BTreeMap<String, i64> = entries.iter().cloned().collect();
            let mut hashed = HashMap::new();
            for (k, v) in entries.iter().rev() { hashed.entry(k.clone()).or_insert(*v); }
            // same content: rebuild hashed from sorted to get identical values
            let hashed: HashMap<String, i64> = sorted.iter().map(|(k, v)| (k.clone(), *v)).collect();
            let a = encode(&sorted).unwrap();
            let b = encode(&hashed).unwrap();
            prop_assert_eq!(&a, &b);
            let back: BTreeMap<String, i64> = decode(&a).unwrap();
            prop_assert_eq!(back, sorted);
            // canonicalizing canonical bytes is the identity, and the scanner agrees with the
            // full decode on what is canonical
            prop_assert_eq!(canonicalize(a.clone()).unwrap(), a.clone());
            prop_assert_eq!(scan(&a, 0), Some((a.len(), true)));
            let raw = rmp_serde::to_vec_named(&hashed).unwrap();
            let mut v = rmpv::decode::read_value(&mut raw.as_slice()).unwrap();
            let moved = sort_maps(&mut v);
            prop_assert_eq!(scan(&raw, 0), Some((raw.len(), !moved)));
        }
    }

    /// The bytes weir's Python front must produce for the same values (its test
    /// `test_values.py::test_bytes_match_rust` pins the same hex): one action id and cache key
    /// whichever SDK made the call.
    #[test]
    fn bytes_the_python_front_pins() {
        #[derive(Serialize)]
        struct Point {
            label: String,
            x: i64,
            y: f64,
        }
        #[derive(Serialize)]
        struct Inputs {
            count: u32,
            negative: i64,
            big: u64,
            ratio: f64,
            name: String,
            flag: bool,
            nothing: Option<i32>,
            blob: serde_bytes::ByteBuf,
            tags: Vec<String>,
            scores: BTreeMap<String, i32>,
            point: Point,
        }
        let inputs = Inputs {
            count: 3,
            negative: -200,
            big: 1 << 40,
            ratio: 0.5,
            name: "weir".into(),
            flag: true,
            nothing: None,
            blob: serde_bytes::ByteBuf::from(vec![0u8, 255]),
            tags: vec!["a".into(), "b".into()],
            scores: BTreeMap::from([("z".into(), 1), ("a".into(), -1)]),
            point: Point {
                label: "p".into(),
                x: 1,
                y: 2.5,
            },
        };
        let hex: String = encode(&inputs)
            .unwrap()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hex, PYTHON_PINNED, "{hex}");
    }

    const PYTHON_PINNED: &str = "8ba3626967cf0000010000000000a4626c6f62c40200ffa4666c6167c3a46e616d65a477656972a47461677392a161a162a5636f756e7403a5706f696e7483a17801a179cb4004000000000000a56c6162656ca170a5726174696fcb3fe0000000000000a673636f72657382a161ffa17a01a76e6f7468696e67c0a86e65676174697665d1ff38";
}
