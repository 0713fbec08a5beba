//! Canonical MessagePack to JSON text, streamed: the JSON is written as the MessagePack is
//! read, so printing a large value (`run`'s output, `get io`) costs the encoded bytes and a
//! write buffer, not a tree of JSON values many times their size.
//!
//! The output is the same text as [`codec::to_json`](crate::codec::to_json) followed by
//! `serde_json`'s compact or pretty printer: object keys sorted, non-string keys written as
//! their JSON text, binary and extension data as arrays of bytes, NaN and infinities as
//! `null`.

use std::io::{self, Write};

/// Deeper nesting than this is refused (as the decoder of [`crate::codec`] does).
const MAX_DEPTH: usize = 1024;

fn bad(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

/// Writes the MessagePack value `bytes` as JSON text to `out` (2-space indented when
/// `pretty`). An error of kind `InvalidData` when `bytes` is not one well-formed value; what
/// was written before it is then incomplete.
pub fn write_json(bytes: &[u8], out: &mut impl Write, pretty: bool) -> io::Result<()> {
    write_json_at(bytes, out, pretty, 0)
}

/// [`write_json`] for a value nested `indent` levels deep in pretty-printed text (its inner
/// lines are indented that much more).
pub fn write_json_at(
    bytes: &[u8],
    out: &mut impl Write,
    pretty: bool,
    indent: usize,
) -> io::Result<()> {
    let mut t = Transcoder {
        out,
        pretty,
        indent,
    };
    let mut input = bytes;
    t.value(&mut input, 0)?;
    if !input.is_empty() {
        return Err(bad(format!(
            "{} bytes after the end of the value",
            input.len()
        )));
    }
    Ok(())
}

/// The text a non-string map key shows as (as [`codec::to_json`](crate::codec::to_json)
/// shows it): its compact JSON, where the non-string keys of maps inside it are written into
/// it once, quoted but not escaped again (escaping them at every level would grow the text
/// fourfold per level), and those maps keep their order.
fn key_text(input: &mut &[u8], out: &mut String, depth: usize) -> io::Result<()> {
    if depth > MAX_DEPTH {
        return Err(bad(format!("nested deeper than {MAX_DEPTH}")));
    }
    match head(input)? {
        Head::Nil => out.push_str("null"),
        Head::Bool(b) => out.push_str(if b { "true" } else { "false" }),
        Head::Uint(v) => out.push_str(&v.to_string()),
        Head::Int(v) => out.push_str(&v.to_string()),
        Head::F32(f) => float_text(f64::from(f), out),
        Head::F64(f) => float_text(f, out),
        Head::Str(n) => {
            let s = std::str::from_utf8(take(input, n)?).unwrap_or_default();
            out.push_str(&serde_json::to_string(s).map_err(io::Error::other)?);
        }
        Head::Bin(n) => byte_text(take(input, n)?, out),
        Head::Ext(n) => byte_text(&take(input, n + 1)?[1..], out),
        Head::Array(n) => {
            if n > input.len() {
                return Err(bad(format!("array of {n} items in {} bytes", input.len())));
            }
            out.push('[');
            for i in 0..n {
                if i > 0 {
                    out.push(',');
                }
                key_text(input, out, depth + 1)?;
            }
            out.push(']');
        }
        Head::Map(n) => {
            if n > input.len() / 2 {
                return Err(bad(format!("map of {n} entries in {} bytes", input.len())));
            }
            out.push('{');
            for i in 0..n {
                if i > 0 {
                    out.push(',');
                }
                let string_key = matches!(input.first(), Some(0xa0..=0xbf | 0xd9..=0xdb));
                if string_key {
                    key_text(input, out, depth + 1)?;
                } else {
                    out.push('"');
                    key_text(input, out, depth + 1)?;
                    out.push('"');
                }
                out.push(':');
                key_text(input, out, depth + 1)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

fn byte_text(data: &[u8], out: &mut String) {
    out.push('[');
    for (i, b) in data.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&b.to_string());
    }
    out.push(']');
}

/// A float as `serde_json` writes it (NaN and infinities: `null`).
fn float_text(f: f64, out: &mut String) {
    match f.is_finite() {
        true => out.push_str(&serde_json::to_string(&f).unwrap_or_default()),
        false => out.push_str("null"),
    }
}

fn take<'a>(input: &mut &'a [u8], n: usize) -> io::Result<&'a [u8]> {
    if input.len() < n {
        return Err(bad(format!(
            "truncated: {n} bytes needed, {} left",
            input.len()
        )));
    }
    let (head, rest) = input.split_at(n);
    *input = rest;
    Ok(head)
}

fn uint(input: &mut &[u8], n: usize) -> io::Result<u64> {
    Ok(take(input, n)?
        .iter()
        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
}

/// One value's header: what it is, and for containers and byte strings, its length.
enum Head {
    Nil,
    Bool(bool),
    Uint(u64),
    Int(i64),
    F32(f32),
    F64(f64),
    Str(usize),
    Bin(usize),
    /// Extension: its type byte, then `len` bytes of data.
    Ext(usize),
    Array(usize),
    Map(usize),
}

fn head(input: &mut &[u8]) -> io::Result<Head> {
    let b = take(input, 1)?[0];
    let len = |input: &mut &[u8], n| uint(input, n).map(|v| v as usize);
    Ok(match b {
        0x00..=0x7f => Head::Uint(u64::from(b)),
        0x80..=0x8f => Head::Map(usize::from(b & 0x0f)),
        0x90..=0x9f => Head::Array(usize::from(b & 0x0f)),
        0xa0..=0xbf => Head::Str(usize::from(b & 0x1f)),
        0xc0 => Head::Nil,
        0xc2 => Head::Bool(false),
        0xc3 => Head::Bool(true),
        0xc4 => Head::Bin(len(input, 1)?),
        0xc5 => Head::Bin(len(input, 2)?),
        0xc6 => Head::Bin(len(input, 4)?),
        0xc7 => Head::Ext(len(input, 1)?),
        0xc8 => Head::Ext(len(input, 2)?),
        0xc9 => Head::Ext(len(input, 4)?),
        0xca => Head::F32(f32::from_bits(uint(input, 4)? as u32)),
        0xcb => Head::F64(f64::from_bits(uint(input, 8)?)),
        0xcc => Head::Uint(uint(input, 1)?),
        0xcd => Head::Uint(uint(input, 2)?),
        0xce => Head::Uint(uint(input, 4)?),
        0xcf => Head::Uint(uint(input, 8)?),
        0xd0 => Head::Int(i64::from(uint(input, 1)? as u8 as i8)),
        0xd1 => Head::Int(i64::from(uint(input, 2)? as u16 as i16)),
        0xd2 => Head::Int(i64::from(uint(input, 4)? as u32 as i32)),
        0xd3 => Head::Int(uint(input, 8)? as i64),
        0xd4 => Head::Ext(1),
        0xd5 => Head::Ext(2),
        0xd6 => Head::Ext(4),
        0xd7 => Head::Ext(8),
        0xd8 => Head::Ext(16),
        0xd9 => Head::Str(len(input, 1)?),
        0xda => Head::Str(len(input, 2)?),
        0xdb => Head::Str(len(input, 4)?),
        0xdc => Head::Array(len(input, 2)?),
        0xdd => Head::Array(len(input, 4)?),
        0xde => Head::Map(len(input, 2)?),
        0xdf => Head::Map(len(input, 4)?),
        0xe0..=0xff => Head::Int(i64::from(b as i8)),
        0xc1 => return Err(bad("reserved byte 0xc1")),
    })
}

/// Skips one value; returns it as a slice of the input.
fn skip<'a>(input: &mut &'a [u8], depth: usize) -> io::Result<&'a [u8]> {
    if depth > MAX_DEPTH {
        return Err(bad(format!("nested deeper than {MAX_DEPTH}")));
    }
    let start = *input;
    match head(input)? {
        Head::Str(n) | Head::Bin(n) => {
            take(input, n)?;
        }
        Head::Ext(n) => {
            take(input, n + 1)?;
        }
        Head::Array(n) => {
            for _ in 0..n {
                skip(input, depth + 1)?;
            }
        }
        Head::Map(n) => {
            for _ in 0..n {
                skip(input, depth + 1)?;
                skip(input, depth + 1)?;
            }
        }
        _ => {}
    }
    Ok(&start[..start.len() - input.len()])
}

struct Transcoder<'w, W: Write> {
    out: &'w mut W,
    pretty: bool,
    indent: usize,
}

impl<W: Write> Transcoder<'_, W> {
    fn newline(&mut self) -> io::Result<()> {
        if self.pretty {
            self.out.write_all(b"\n")?;
            for _ in 0..self.indent {
                self.out.write_all(b"  ")?;
            }
        }
        Ok(())
    }

    fn string(&mut self, s: &str) -> io::Result<()> {
        serde_json::to_writer(&mut *self.out, s).map_err(io::Error::other)
    }

    fn float(&mut self, f: f64) -> io::Result<()> {
        if f.is_finite() {
            serde_json::to_writer(&mut *self.out, &f).map_err(io::Error::other)
        } else {
            self.out.write_all(b"null")
        }
    }

    /// Bytes as a JSON array of numbers.
    fn bytes(&mut self, data: &[u8]) -> io::Result<()> {
        self.seq(data.len(), |t, i| write!(t.out, "{}", data[i]))
    }

    /// `[a, b, ...]` with `n` items written by `item`.
    fn seq(
        &mut self,
        n: usize,
        mut item: impl FnMut(&mut Self, usize) -> io::Result<()>,
    ) -> io::Result<()> {
        self.out.write_all(b"[")?;
        if n == 0 {
            return self.out.write_all(b"]");
        }
        self.indent += 1;
        for i in 0..n {
            if i > 0 {
                self.out.write_all(b",")?;
            }
            self.newline()?;
            item(self, i)?;
        }
        self.indent -= 1;
        self.newline()?;
        self.out.write_all(b"]")
    }

    fn value(&mut self, input: &mut &[u8], depth: usize) -> io::Result<()> {
        if depth > MAX_DEPTH {
            return Err(bad(format!("nested deeper than {MAX_DEPTH}")));
        }
        match head(input)? {
            Head::Nil => self.out.write_all(b"null"),
            Head::Bool(b) => self.out.write_all(if b { b"true" } else { b"false" }),
            Head::Uint(v) => write!(self.out, "{v}"),
            Head::Int(v) => write!(self.out, "{v}"),
            Head::F32(f) => self.float(f64::from(f)),
            Head::F64(f) => self.float(f),
            Head::Str(n) => {
                let bytes = take(input, n)?;
                // As the tree decoder does: a string that is not UTF-8 becomes empty.
                self.string(std::str::from_utf8(bytes).unwrap_or_default())
            }
            Head::Bin(n) => {
                let data = take(input, n)?;
                self.bytes(data)
            }
            Head::Ext(n) => {
                let data = &take(input, n + 1)?[1..];
                self.bytes(data)
            }
            Head::Array(n) => {
                // Each item is at least one byte: a length beyond the input is malformed
                // (and is not trusted for anything it would allocate).
                if n > input.len() {
                    return Err(bad(format!("array of {n} items in {} bytes", input.len())));
                }
                self.seq(n, |t, _| t.value(input, depth + 1))
            }
            Head::Map(n) => self.map(input, n, depth),
        }
    }

    /// A map, with its keys sorted as `serde_json`'s map sorts them.
    fn map(&mut self, input: &mut &[u8], n: usize, depth: usize) -> io::Result<()> {
        if n > input.len() / 2 {
            return Err(bad(format!("map of {n} entries in {} bytes", input.len())));
        }
        let mut entries: Vec<(String, &[u8])> = Vec::with_capacity(n);
        for _ in 0..n {
            let key = skip(input, depth + 1)?;
            let key = match head(&mut &key[..])? {
                Head::Str(len) => {
                    let s = &key[key.len() - len..];
                    std::str::from_utf8(s).unwrap_or_default().to_string()
                }
                _ => {
                    let mut text = String::new();
                    key_text(&mut &key[..], &mut text, depth + 1)?;
                    text
                }
            };
            entries.push((key, skip(input, depth + 1)?));
        }
        // Later duplicates win, as when collected into a map.
        entries.reverse();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries.dedup_by(|later, earlier| later.0 == earlier.0);
        self.out.write_all(b"{")?;
        if entries.is_empty() {
            return self.out.write_all(b"}");
        }
        self.indent += 1;
        for (i, (key, mut value)) in entries.into_iter().enumerate() {
            if i > 0 {
                self.out.write_all(b",")?;
            }
            self.newline()?;
            self.string(&key)?;
            self.out.write_all(if self.pretty { b": " } else { b":" })?;
            self.value(&mut value, depth + 1)?;
        }
        self.indent -= 1;
        self.newline()?;
        self.out.write_all(b"}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, HashMap};

    fn both(bytes: &[u8]) -> (String, String) {
        let tree = codec::to_json(bytes).unwrap();
        let mut compact = Vec::new();
        write_json(bytes, &mut compact, false).unwrap();
        let mut pretty = Vec::new();
        write_json(bytes, &mut pretty, true).unwrap();
        assert_eq!(
            String::from_utf8(pretty).unwrap(),
            serde_json::to_string_pretty(&tree).unwrap()
        );
        (
            String::from_utf8(compact).unwrap(),
            serde_json::to_string(&tree).unwrap(),
        )
    }

    #[derive(serde::Serialize)]
    struct Row {
        zeta: u32,
        b: String,
        aa: Vec<Option<f64>>,
        map: HashMap<u64, bool>,
        bytes: serde_bytes::ByteBuf,
        nested: BTreeMap<String, Vec<i64>>,
    }

    #[test]
    fn the_streamed_text_is_the_tree_printers_text() {
        let row = Row {
            zeta: 7,
            b: "quote \" and \u{1} and é".into(),
            aa: vec![Some(1.5), None, Some(f64::NAN), Some(-0.0)],
            map: [(3, true), (1, false)].into_iter().collect(),
            bytes: serde_bytes::ByteBuf::from(vec![0, 255, 7]),
            nested: [
                ("x".to_string(), vec![]),
                ("".to_string(), vec![-1, i64::MIN]),
            ]
            .into_iter()
            .collect(),
        };
        for bytes in [
            codec::encode(&row).unwrap(),
            codec::encode(&vec![row.zeta; 0]).unwrap(),
            codec::encode(&BTreeMap::<String, u8>::new()).unwrap(),
            codec::encode(&(u64::MAX, i64::MIN, "s", ())).unwrap(),
        ] {
            let (streamed, tree) = both(&bytes);
            assert_eq!(streamed, tree);
        }
    }

    #[test]
    fn map_keys_that_are_not_strings_show_as_the_tree_printer_shows_them() {
        let nested = |levels: usize| [vec![0x81; levels], vec![0xc0; levels + 1]].concat();
        for bytes in [
            nested(2),
            nested(16),
            nested(400),
            codec::encode(&BTreeMap::from([((1u8, vec![true]), 2u8)])).unwrap(),
            codec::encode(&BTreeMap::from([(3i8, "x")])).unwrap(),
            codec::encode(&BTreeMap::from([(vec![-5i64], ())])).unwrap(),
            // A map key holding a map with a string key and a bytes key.
            vec![0x81, 0x82, 0xa1, b'k', 0x01, 0xc4, 0x01, 0x07, 0x02, 0xc0],
        ] {
            let (streamed, tree) = both(&bytes);
            assert_eq!(streamed, tree, "{bytes:?}");
        }
        let (streamed, _) = both(&nested(400));
        assert!(streamed.len() < 20 * 400, "linear in the nesting");
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic_or_an_allocation() {
        for bytes in [
            &[][..],
            &[0xc1],
            &[0xdd, 0xff, 0xff, 0xff, 0xff], // an array of 4 G items, no items
            &[0xdf, 0xff, 0xff, 0xff, 0xff, 0x01], // a map of 4 G entries
            &[0xdb, 0xff, 0xff, 0xff, 0xff, b'a'], // a 4 GB string
            &[0x92, 0x01],                   // two items, one given
            &[0x01, 0x02],                   // trailing bytes
        ] {
            let e = write_json(bytes, &mut Vec::new(), false).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{bytes:?}: {e}");
        }
        let deep: Vec<u8> = std::iter::repeat_n(0x91, 5000).chain([0xc0]).collect();
        assert!(write_json(&deep, &mut Vec::new(), false).is_err());
    }

    proptest! {
        #[test]
        fn any_value_streams_as_the_tree_prints(v in proptest::collection::vec(
            (any::<String>(), any::<i64>(), proptest::option::of(any::<bool>())), 0..20)) {
            let bytes = codec::encode(&v).unwrap();
            let (streamed, tree) = both(&bytes);
            prop_assert_eq!(streamed, tree);
        }
    }
}
