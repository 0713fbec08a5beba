//! Bounded previews of payloads: the JSON text of a MessagePack value, written straight from
//! the bytes (no decoded tree is built) and stopped at a budget of text and of nesting depth.
//!
//! The bytes may be only the beginning of the payload (a prefix read from the object store), so
//! running out of bytes inside the value ends the preview rather than failing it. The text
//! matches `weir_core::codec::to_json` for the part shown: binary and extension data become
//! arrays of numbers, non-string map keys are rendered as strings, invalid UTF-8 strings are
//! empty, non-finite floats are `null`. Map entries come in the payload's (canonical) order.

use std::fmt::Write as _;

/// The JSON text of a payload, or of its beginning.
#[derive(Debug)]
pub(crate) struct Preview {
    /// JSON text: the whole value when `complete`, otherwise its beginning followed by `…`.
    pub(crate) text: String,
    /// Whether `text` is the whole value.
    pub(crate) complete: bool,
}

/// Why writing stopped before the value's end.
enum Stop {
    /// The text budget is spent.
    Full,
    /// The bytes ran out.
    End,
    /// The value nests deeper than allowed.
    Deep,
    /// The bytes are not MessagePack.
    Bad(String),
}

/// Writes the JSON text of the MessagePack value at the start of `bytes`, at most `max_text`
/// bytes of it and at most `max_depth` arrays or maps deep. `whole`: `bytes` is the whole
/// payload, so running out of bytes means it is malformed; otherwise it is a prefix and the
/// preview just ends there.
pub(crate) fn preview(
    bytes: &[u8],
    whole: bool,
    max_text: usize,
    max_depth: usize,
) -> Result<Preview, String> {
    let mut w = Writer {
        buf: bytes,
        pos: 0,
        out: String::new(),
        max_text,
        max_depth,
    };
    let stop = match w.value(0) {
        Ok(()) => {
            return Ok(Preview {
                text: w.out,
                complete: true,
            });
        }
        Err(stop) => stop,
    };
    match stop {
        Stop::Bad(why) => return Err(format!("cannot decode MessagePack value: {why}")),
        Stop::End if whole => {
            return Err(format!(
                "cannot decode MessagePack value: it ends early ({} bytes)",
                bytes.len()
            ));
        }
        Stop::Full | Stop::End | Stop::Deep => {}
    }
    let mut text = w.out;
    text.push('…');
    Ok(Preview {
        text,
        complete: false,
    })
}

struct Writer<'a> {
    buf: &'a [u8],
    pos: usize,
    out: String,
    max_text: usize,
    max_depth: usize,
}

impl<'a> Writer<'a> {
    fn byte(&mut self) -> Result<u8, Stop> {
        let b = *self.buf.get(self.pos).ok_or(Stop::End)?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Stop> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(Stop::End)?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// A big-endian unsigned integer of `n` bytes.
    fn uint(&mut self, n: usize) -> Result<u64, Stop> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | *b as u64))
    }

    fn push(&mut self, s: &str) -> Result<(), Stop> {
        if self.out.len() + s.len() > self.max_text {
            return Err(Stop::Full);
        }
        self.out.push_str(s);
        Ok(())
    }

    fn number(&mut self, n: impl std::fmt::Display) -> Result<(), Stop> {
        let before = self.out.len();
        // Writing to a String cannot fail.
        let _ = write!(self.out, "{n}");
        if self.out.len() > self.max_text {
            self.out.truncate(before);
            return Err(Stop::Full);
        }
        Ok(())
    }

    fn float(&mut self, f: f64) -> Result<(), Stop> {
        match serde_json::Number::from_f64(f) {
            Some(n) => self.number(n),
            None => self.push("null"),
        }
    }

    fn value(&mut self, depth: usize) -> Result<(), Stop> {
        let at = self.pos;
        let marker = self.byte()?;
        match marker {
            0x00..=0x7f => self.number(marker),
            0xe0..=0xff => self.number(marker as i8),
            0x80..=0x8f => self.map((marker & 0x0f) as u64, depth),
            0x90..=0x9f => self.array((marker & 0x0f) as u64, depth),
            0xa0..=0xbf => self.string((marker & 0x1f) as u64),
            0xc0 => self.push("null"),
            0xc2 => self.push("false"),
            0xc3 => self.push("true"),
            0xc4 => {
                let n = self.uint(1)?;
                self.data(n)
            }
            0xc5 => {
                let n = self.uint(2)?;
                self.data(n)
            }
            0xc6 => {
                let n = self.uint(4)?;
                self.data(n)
            }
            0xc7..=0xc9 => {
                let n = self.uint(1 << (marker - 0xc7))?;
                self.byte()?; // the extension's type
                self.data(n)
            }
            0xca => {
                let bits = self.uint(4)? as u32;
                self.float(f32::from_bits(bits) as f64)
            }
            0xcb => {
                let bits = self.uint(8)?;
                self.float(f64::from_bits(bits))
            }
            0xcc..=0xcf => {
                let n = self.uint(1 << (marker - 0xcc))?;
                self.number(n)
            }
            0xd0 => {
                let n = self.uint(1)? as u8 as i8;
                self.number(n)
            }
            0xd1 => {
                let n = self.uint(2)? as u16 as i16;
                self.number(n)
            }
            0xd2 => {
                let n = self.uint(4)? as u32 as i32;
                self.number(n)
            }
            0xd3 => {
                let n = self.uint(8)? as i64;
                self.number(n)
            }
            0xd4..=0xd8 => {
                self.byte()?; // the extension's type
                self.data(1 << (marker - 0xd4))
            }
            0xd9 => {
                let n = self.uint(1)?;
                self.string(n)
            }
            0xda => {
                let n = self.uint(2)?;
                self.string(n)
            }
            0xdb => {
                let n = self.uint(4)?;
                self.string(n)
            }
            0xdc => {
                let n = self.uint(2)?;
                self.array(n, depth)
            }
            0xdd => {
                let n = self.uint(4)?;
                self.array(n, depth)
            }
            0xde => {
                let n = self.uint(2)?;
                self.map(n, depth)
            }
            0xdf => {
                let n = self.uint(4)?;
                self.map(n, depth)
            }
            0xc1 => Err(Stop::Bad(format!("invalid marker 0xc1 at byte {at}"))),
        }
    }

    /// Binary or extension data of `n` bytes, as an array of numbers.
    fn data(&mut self, n: u64) -> Result<(), Stop> {
        self.push("[")?;
        for i in 0..n {
            if i > 0 {
                self.push(",")?;
            }
            let b = self.byte()?;
            self.number(b)?;
        }
        self.push("]")
    }

    fn array(&mut self, n: u64, depth: usize) -> Result<(), Stop> {
        if depth >= self.max_depth {
            return Err(Stop::Deep);
        }
        self.push("[")?;
        for i in 0..n {
            if i > 0 {
                self.push(",")?;
            }
            self.value(depth + 1)?;
        }
        self.push("]")
    }

    fn map(&mut self, n: u64, depth: usize) -> Result<(), Stop> {
        if depth >= self.max_depth {
            return Err(Stop::Deep);
        }
        self.push("{")?;
        for i in 0..n {
            if i > 0 {
                self.push(",")?;
            }
            let is_string = matches!(self.buf.get(self.pos), Some(0xa0..=0xbf | 0xd9..=0xdb));
            if is_string {
                self.value(depth + 1)?;
            } else {
                // A non-string key is shown as the string of its JSON text.
                let start = self.out.len();
                self.value(depth + 1)?;
                let text = self.out.split_off(start);
                self.escaped(&text)?;
            }
            self.push(":")?;
            self.value(depth + 1)?;
        }
        self.push("}")
    }

    /// A string of `n` bytes (invalid UTF-8 shows as `""`, as in `to_json`).
    fn string(&mut self, n: u64) -> Result<(), Stop> {
        let available = (self.buf.len() - self.pos) as u64;
        let cut = n > available;
        let bytes = self.take(n.min(available) as usize)?;
        let text = match std::str::from_utf8(bytes) {
            Ok(s) => s,
            // Cut inside a character by the end of the bytes read: show what is whole.
            Err(e) if cut && e.error_len().is_none() => {
                std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default()
            }
            Err(_) => "",
        };
        if cut {
            self.push("\"")?;
            self.escaped_chars(text)?;
            return Err(Stop::End);
        }
        self.escaped(text)
    }

    /// `s` as a JSON string.
    fn escaped(&mut self, s: &str) -> Result<(), Stop> {
        self.push("\"")?;
        self.escaped_chars(s)?;
        self.push("\"")
    }

    /// The characters of `s`, escaped as in a JSON string, as many as fit.
    fn escaped_chars(&mut self, s: &str) -> Result<(), Stop> {
        for c in s.chars() {
            let mut tmp = [0u8; 4];
            let esc;
            let piece = match c {
                '"' => "\\\"",
                '\\' => "\\\\",
                '\n' => "\\n",
                '\r' => "\\r",
                '\t' => "\\t",
                '\u{8}' => "\\b",
                '\u{c}' => "\\f",
                c if (c as u32) < 0x20 => {
                    esc = format!("\\u{:04x}", c as u32);
                    esc.as_str()
                }
                c => c.encode_utf8(&mut tmp),
            };
            self.push(piece)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;
    use std::collections::BTreeMap;

    fn full(bytes: &[u8]) -> String {
        let p = preview(bytes, true, 1 << 20, 64).unwrap();
        assert!(p.complete);
        p.text
    }

    /// The preview of a whole value parses to what `to_json` gives.
    fn same_as_to_json(bytes: &[u8]) {
        let text = full(bytes);
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed, weir_core::codec::to_json(bytes).unwrap(), "{text}");
    }

    #[derive(Serialize)]
    struct Args {
        name: String,
        data: Vec<u64>,
        negative: Vec<i64>,
        floats: Vec<f64>,
        flags: (bool, Option<u8>),
        nested: BTreeMap<String, Vec<BTreeMap<String, f32>>>,
        #[serde(with = "serde_bytes_like")]
        raw: Vec<u8>,
    }

    mod serde_bytes_like {
        pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(v)
        }
    }

    #[test]
    fn whole_values_read_as_to_json_gives_them() {
        let args = Args {
            name: "quote \" backslash \\ newline \n tab \t nul \u{0} é 日本".into(),
            data: vec![
                0,
                1,
                127,
                128,
                255,
                256,
                65_535,
                65_536,
                u32::MAX as u64,
                u64::MAX,
            ],
            negative: vec![-1, -32, -33, -128, -129, -32_768, -32_769, i64::MIN],
            floats: vec![0.1, 1.0, -2.5e300, f64::NAN, f64::INFINITY],
            flags: (true, None),
            nested: [("k".to_string(), vec![[("x".to_string(), 0.1f32)].into()])].into(),
            raw: vec![0, 1, 255],
        };
        same_as_to_json(&weir_core::codec::encode(&args).unwrap());
        for v in [
            serde_json::json!(null),
            serde_json::json!("s"),
            serde_json::json!([]),
            serde_json::json!({}),
        ] {
            same_as_to_json(&weir_core::codec::encode(&v).unwrap());
        }
        // non-string keys, binary, extensions
        let mut buf = Vec::new();
        let value = rmpv::Value::Map(vec![
            (rmpv::Value::from(7), rmpv::Value::from("seven")),
            (
                rmpv::Value::Array(vec![rmpv::Value::Nil, rmpv::Value::from("\"")]),
                rmpv::Value::Ext(5, vec![1, 2, 3]),
            ),
            (rmpv::Value::from("bin"), rmpv::Value::Binary(vec![9; 300])),
        ]);
        rmpv::encode::write_value(&mut buf, &value).unwrap();
        same_as_to_json(&buf);
        // a string that is not UTF-8 shows as ""
        same_as_to_json(&[0x91, 0xa2, 0xff, 0xfe]);
        assert_eq!(full(&[0x91, 0xa2, 0xff, 0xfe]), "[\"\"]");
    }

    #[test]
    fn large_values_stop_at_the_text_budget() {
        let data: Vec<u64> = (0..100_000).map(|i| i << 33).collect();
        let bytes = weir_core::codec::encode(&BTreeMap::from([("data", &data)])).unwrap();
        let p = preview(&bytes, true, 1000, 64).unwrap();
        assert!(!p.complete);
        assert!(p.text.len() <= 1000 + '…'.len_utf8(), "{}", p.text.len());
        assert!(p.text.starts_with("{\"data\":[0,8589934592,"), "{}", p.text);
        assert!(p.text.ends_with('…'));
        // a prefix of the bytes is enough, and garbage after it is never looked at
        let mut prefix = bytes[..2000].to_vec();
        let q = preview(&prefix, false, 1000, 64).unwrap();
        assert_eq!(q.text, p.text);
        prefix.extend_from_slice(&[0xc1; 100]);
        assert_eq!(preview(&prefix, true, 1000, 64).unwrap().text, p.text);
        // a prefix that ends before the budget is spent shows what it holds
        let short = preview(&bytes[..100], false, 1000, 64).unwrap();
        assert!(!short.complete && short.text.starts_with("{\"data\":[0,"));
        // a long string stops mid-string
        let s = "é".repeat(10_000);
        let bytes = weir_core::codec::encode(&s).unwrap();
        let p = preview(&bytes, true, 101, 64).unwrap();
        assert!(!p.complete);
        assert_eq!(p.text, format!("\"{}…", "é".repeat(50)));
        let cut = preview(&bytes[..102], false, 1 << 20, 64).unwrap();
        assert_eq!(
            cut.text,
            format!("\"{}…", "é".repeat(49)),
            "whole chars only"
        );
    }

    #[test]
    fn depth_and_malformed_bytes_are_bounded_and_reported() {
        // 100 000 nested arrays: stops at the depth limit instead of overflowing the stack
        let mut deep = vec![0x91; 100_000];
        deep.push(0x01);
        let p = preview(&deep, true, 1 << 20, 64).unwrap();
        assert!(!p.complete);
        assert_eq!(p.text, format!("{}…", "[".repeat(64)));
        // a header that claims more than there is
        let claims = [0xdd, 0xff, 0xff, 0xff, 0xff, 0x01];
        let err = preview(&claims, true, 1 << 20, 64).unwrap_err();
        assert!(err.contains("ends early"), "{err}");
        assert!(!preview(&claims, false, 1 << 20, 64).unwrap().complete);
        let err = preview(&[0x92, 0x01, 0xc1], true, 1 << 20, 64).unwrap_err();
        assert!(err.contains("invalid marker 0xc1 at byte 2"), "{err}");
        assert!(
            preview(&[], true, 10, 64)
                .unwrap_err()
                .contains("ends early")
        );
    }
}
