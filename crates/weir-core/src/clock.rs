//! The wall clock weir records times with: microseconds since the Unix epoch, the unit of
//! every stored time (queue, start and end times, cache entries, heartbeats).

/// Microseconds since the Unix epoch.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or_default()
}
