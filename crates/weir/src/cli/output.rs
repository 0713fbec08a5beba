//! Printing for the data commands: aligned tables, time formats, and JSON documents whose
//! payloads are streamed (one place for all of them).

use std::io::{self, Write};

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
    let mut w = io::BufWriter::new(stdout.lock());
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
    let mut w = io::BufWriter::new(stdout.lock());
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

/// Prints an aligned table (data to stdout).
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
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
        line(r.clone());
    }
}
