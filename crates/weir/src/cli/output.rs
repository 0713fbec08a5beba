//! Printing for the data commands: aligned tables, time formats, JSON documents whose payloads
//! are streamed, and the escaping of control characters (one place for all of them).

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::{self, Write};

/// `s` with its control characters (C0, DEL, C1) escaped as `\\n`, `\\r`, `\\t` or `\\xNN`,
/// except those in `keep`: text from the state (run names, errors, worker output) printed to a
/// terminal cannot move the cursor, retitle the window or write the clipboard.
pub(crate) fn escape_controls<'a>(s: &'a str, keep: &[char]) -> Cow<'a, str> {
    if !s.chars().any(|c| c.is_control() && !keep.contains(&c)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            c if !c.is_control() || keep.contains(&c) => out.push(c),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
        }
    }
    Cow::Owned(out)
}

/// A table cell or a one-line field: every control character escaped.
pub(crate) fn esc(s: &str) -> Cow<'_, str> {
    escape_controls(s, &[])
}

/// A message or a line of output: line feeds and tabs kept, other control characters escaped.
pub(crate) fn escape_message(s: &str) -> Cow<'_, str> {
    escape_controls(s, &['\n', '\t'])
}

/// JSON text on its way to a terminal: JSON escapes C0 characters in strings but not DEL
/// (`0x7f`) or the C1 ones (U+0080 to U+009F, `0xc2 0x80..=0x9f` in UTF-8), which some
/// terminals obey; they are written as `\\u00NN` (still JSON, the same value). Raw line feeds
/// are the layout's.
/// Only `active` (pretty, for a terminal) output is escaped; `-o json` is left as it is.
struct TerminalJson<W: Write> {
    inner: W,
    active: bool,
    /// The last byte written was a `0xc2` held back (a C1 character may be split across writes).
    held: bool,
}

impl<W: Write> TerminalJson<W> {
    fn new(inner: W, active: bool) -> Self {
        TerminalJson {
            inner,
            active,
            held: false,
        }
    }
}

impl<W: Write> Write for TerminalJson<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.active {
            return self.inner.write(buf);
        }
        let mut out = Vec::with_capacity(buf.len() + 8);
        for &b in buf {
            if std::mem::take(&mut self.held) {
                if (0x80..=0x9f).contains(&b) {
                    let _ = io::Write::write_fmt(&mut out, format_args!("\\u00{b:02x}"));
                    continue;
                }
                out.push(0xc2);
            }
            match b {
                0xc2 => self.held = true,
                0x7f => out.extend_from_slice(b"\\u007f"),
                b => out.push(b),
            }
        }
        self.inner.write_all(&out)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if std::mem::take(&mut self.held) {
            self.inner.write_all(&[0xc2])?;
        }
        self.inner.flush()
    }
}

/// One field of a printed JSON document.
pub(crate) enum Field<'a> {
    /// A small value.
    Value(serde_json::Value),
    /// A payload (canonical MessagePack), transcoded to JSON as it is written; `None` is `null`.
    Payload(Option<&'a [u8]>),
}

/// Prints a JSON object to stdout, `fields` in the order given (give them sorted, as
/// `serde_json` prints maps), pretty when `pretty`. A payload is streamed, never held as a
/// JSON tree: printing a value of a million items costs its encoded bytes and a buffer.
pub(crate) fn print_object(fields: Vec<(&str, Field<'_>)>, pretty: bool) -> io::Result<()> {
    let stdout = io::stdout();
    let mut w = TerminalJson::new(io::BufWriter::new(stdout.lock()), pretty);
    w.write_all(b"{")?;
    for (i, (key, field)) in fields.into_iter().enumerate() {
        if i > 0 {
            w.write_all(b",")?;
        }
        if pretty {
            w.write_all(b"\n  ")?;
        }
        serde_json::to_writer(&mut w, key).map_err(io::Error::other)?;
        w.write_all(if pretty { b": " } else { b":" })?;
        match field {
            Field::Value(v) if pretty => {
                let text = serde_json::to_string_pretty(&v).map_err(io::Error::other)?;
                // Nested one level: JSON text has no raw newline inside a string.
                w.write_all(text.replace('\n', "\n  ").as_bytes())?;
            }
            Field::Value(v) => serde_json::to_writer(&mut w, &v).map_err(io::Error::other)?,
            Field::Payload(None) => w.write_all(b"null")?,
            Field::Payload(Some(bytes)) => {
                weir_core::transcode::write_json_at(bytes, &mut w, pretty, 1)?
            }
        }
    }
    w.write_all(if pretty { b"\n}\n" } else { b"}\n" })?;
    w.flush()
}

/// Prints a payload's JSON to stdout (pretty when `pretty`), streamed.
pub(crate) fn print_payload(bytes: &[u8], pretty: bool) -> io::Result<()> {
    let stdout = io::stdout();
    let mut w = TerminalJson::new(io::BufWriter::new(stdout.lock()), pretty);
    weir_core::transcode::write_json(bytes, &mut w, pretty)?;
    w.write_all(b"\n")?;
    w.flush()
}

/// A time of day (UTC) to the second: `14:03:27Z`.
pub(crate) fn fmt_time(us: i64) -> String {
    let secs = us / 1_000_000;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    format!("{h:02}:{m:02}:{s:02}Z")
}

/// A time of day (UTC) to the millisecond: `14:03:27.120Z` (worker events come close together).
pub(crate) fn fmt_time_ms(us: i64) -> String {
    let ms = (us / 1_000) % 1_000;
    let secs = us / 1_000_000;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    format!("{h:02}:{m:02}:{s:02}.{ms:03}Z")
}

/// A duration: `850µs`, `12.5ms`, `3.20s`.
pub(crate) fn fmt_dur(us: i64) -> String {
    if us < 1_000 {
        format!("{us}µs")
    } else if us < 1_000_000 {
        format!("{:.1}ms", us as f64 / 1e3)
    } else {
        format!("{:.2}s", us as f64 / 1e6)
    }
}

/// Prints an aligned table (data to stdout), control characters in cells escaped.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| esc(c).into_owned()).collect())
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(header.iter().map(|s| s.to_string()).collect());
    for r in rows {
        line(r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_is_kept() {
        assert_eq!(esc("plain é ✓"), "plain é ✓");
        assert_eq!(
            esc("a\nb\x1b[2Jc\u{9b}d\u{7f}"),
            "a\\nb\\x1b[2Jc\\x9bd\\x7f"
        );
        assert_eq!(escape_message("one\ntwo\t\x07"), "one\ntwo\t\\x07");
        let json = serde_json::to_string_pretty(&serde_json::json!({"s": "a\u{1b}b\u{9b}\u{7f}é"}))
            .unwrap();
        // Written a byte at a time: a C1 character split across writes is still escaped.
        let mut w = TerminalJson::new(Vec::new(), true);
        for b in json.as_bytes() {
            w.write_all(std::slice::from_ref(b)).unwrap();
        }
        w.flush().unwrap();
        let shown = String::from_utf8(w.inner).unwrap();
        assert!(
            !shown.chars().any(|c| c.is_control() && c != '\n'),
            "{shown}"
        );
        let back: serde_json::Value = serde_json::from_str(&shown).unwrap();
        assert_eq!(back["s"], "a\u{1b}b\u{9b}\u{7f}é");
    }
}
