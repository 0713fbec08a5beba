//! Payloads for display: a bounded preview of an action's inputs or output, read under a cap
//! on how many are read at once.
//!
//! Every view reads at most [`PREFIX`] bytes of an offloaded payload (a range read from the
//! object store) and writes at most [`MAX_JSON`] bytes of JSON text from it
//! ([`crate::preview`]), so the cost of a view does not grow with the payload. At most
//! `Options::payload_reads` views read at once and `Options::payload_waiting` more wait; further
//! ones are answered 503. The work runs on the request's own future: when the client goes, the
//! server drops that future and the read stops with it.
//!
//! An offloaded payload's size is checked against its reference on every view; its content hash
//! only when it was read whole (at most [`PREFIX`] bytes): a preview of a larger one is not
//! checked, and says so (`"hash_checked": false`).

use std::sync::Arc;

use futures::future::BoxFuture;
use object_store::{GetOptions, GetRange, ObjectStore};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, SemaphorePermit};
use weir_store::Payload;

use crate::app::{ApiError, App};
use crate::preview::preview;

/// Most bytes of JSON text in one payload's preview.
pub(crate) const MAX_JSON: usize = 64 * 1024;
/// Deepest nesting of arrays and maps shown.
pub(crate) const MAX_DEPTH: usize = 64;
/// Bytes of an offloaded payload read for its preview: enough for [`MAX_JSON`] of text whatever
/// the value (a 9-byte float64 can print as 4 characters).
pub(crate) const PREFIX: u64 = 256 * 1024;
/// Largest payload read whole, from an object store other than a local directory (those are
/// read by range).
const MAX_WHOLE_READ: u64 = 16 * 1024 * 1024;

/// Observes payload views, for tests: [`PayloadProbe::enter`] is called once a view holds its
/// permit, and the view waits for the returned future before it reads anything;
/// [`PayloadProbe::exit`] when it is over, whether it finished or was dropped.
#[doc(hidden)]
pub trait PayloadProbe: Send + Sync + 'static {
    /// A view holds a permit and is about to read.
    fn enter(&self) -> BoxFuture<'static, ()>;
    /// That view is over.
    fn exit(&self);
}

/// The cap on payload views.
pub(crate) struct Gate {
    admitted: Semaphore,
    reading: Semaphore,
    reads: usize,
    waiting: usize,
    probe: Option<Arc<dyn PayloadProbe>>,
}

/// A view's place under the cap, given back when dropped.
pub(crate) struct Slot<'a> {
    _admitted: SemaphorePermit<'a>,
    _reading: SemaphorePermit<'a>,
    probe: Option<&'a dyn PayloadProbe>,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.probe {
            p.exit();
        }
    }
}

impl Gate {
    pub(crate) fn new(reads: usize, waiting: usize, probe: Option<Arc<dyn PayloadProbe>>) -> Gate {
        let reads = reads.max(1);
        Gate {
            admitted: Semaphore::new(reads + waiting),
            reading: Semaphore::new(reads),
            reads,
            waiting,
            probe,
        }
    }

    /// Waits for a permit to read payloads, or answers 503 when `reads` views are reading and
    /// `waiting` more are waiting.
    pub(crate) async fn enter(&self) -> Result<Slot<'_>, ApiError> {
        let admitted = self.admitted.try_acquire().map_err(|_| {
            ApiError::unavailable(format!(
                "too many action views at once: {} are being read and {} are waiting, the most \
                 this server allows; try again in a moment",
                self.reads, self.waiting
            ))
        })?;
        let reading = self
            .reading
            .acquire()
            .await
            .map_err(|_| ApiError::internal("the payload gate is closed"))?;
        let slot = Slot {
            _admitted: admitted,
            _reading: reading,
            probe: self.probe.as_deref(),
        };
        if let Some(p) = slot.probe {
            // `slot` is dropped (and `exit` called) if this request is dropped while waiting.
            p.enter().await;
        }
        Ok(slot)
    }
}

/// A payload for display: `{"size", "offloaded", "value"}`, or `"truncated": true` with a
/// `"preview"` of the first [`MAX_JSON`] bytes of its JSON text, or a `"note"` saying why it
/// cannot be shown. An offloaded one also says whether what is shown was checked against its
/// content hash (`"hash_checked"`: only when all of it was read). Call with a [`Slot`] held.
pub(crate) async fn payload_json(app: &App, payload: Option<Payload>) -> Value {
    let Some(payload) = payload else {
        return Value::Null;
    };
    let size = payload.size();
    let (bytes, whole, offloaded, checked) = match payload {
        Payload::Inline(b) => (bytes::Bytes::from(b), true, None, None),
        Payload::Offloaded { path, size, hash } => {
            match read_prefix(app, &path, size, hash).await {
                Ok(read) => (read.bytes, read.whole, Some(path), Some(read.hash_checked)),
                Err(e) => return json!({ "size": size, "offloaded": path, "note": e }),
            }
        }
    };
    let mut doc = match preview(&bytes, whole, MAX_JSON, MAX_DEPTH) {
        Ok(p) if p.complete => match serde_json::from_str::<Value>(&p.text) {
            Ok(value) => json!({ "size": size, "offloaded": offloaded, "value": value }),
            Err(e) => json!({
                "size": size, "offloaded": offloaded,
                "note": format!("cannot show the value: {e}"),
            }),
        },
        Ok(p) => json!({
            "size": size, "offloaded": offloaded, "truncated": true, "preview": p.text,
        }),
        Err(e) => json!({ "size": size, "offloaded": offloaded, "note": e }),
    };
    if let Some(checked) = checked {
        doc["hash_checked"] = json!(checked);
    }
    // References to object-store data (weir::File, Dir, DataFrame): URI, size, hash, and a
    // frame's schema and first rows, all from the reference (the data itself is not read).
    if whole {
        let url = store_url(app).await;
        let refs = weir_core::refs::references(&bytes, &url);
        if !refs.is_empty() {
            doc["references"] = json!(refs);
        }
    }
    doc
}

/// The URL of the state's object store, for references' URIs.
async fn store_url(app: &App) -> String {
    let recorded = app
        .read(|r| r.setting(weir_blob::BLOB_URL_SETTING))
        .await
        .ok()
        .flatten();
    app.payload_store(recorded.as_deref())
        .ok()
        .and_then(|p| p.blobs().ok().map(|b| b.url().to_string()))
        .unwrap_or_else(|| "(the object store)".to_string())
}

/// What was read of an offloaded payload.
struct Read {
    /// Its first [`PREFIX`] bytes (or all of it).
    bytes: bytes::Bytes,
    /// Whether `bytes` is all of it.
    whole: bool,
    /// Whether `bytes` was checked against the reference's content hash.
    hash_checked: bool,
}

/// The first [`PREFIX`] bytes of an offloaded payload. Its size is checked against the
/// reference, and its content hash too when it was read whole.
async fn read_prefix(
    app: &App,
    key: &str,
    size: u64,
    hash: Option<String>,
) -> Result<Read, String> {
    let recorded = app
        .read(|r| r.setting(weir_blob::BLOB_URL_SETTING))
        .await
        .map_err(|e| e.message().to_string())?;
    let payloads = app.payload_store(recorded.as_deref())?;
    let blobs = payloads.blobs().map_err(|e| match e {
        weir_blob::Error::Missing { store, .. } => weir_blob::Error::Missing {
            key: key.to_string(),
            store,
        }
        .to_string(),
        e => e.to_string(),
    })?;
    let url = blobs.url().to_string();
    let Some(dir) = url.strip_prefix("file://") else {
        // Another kind of store: read it whole (and checked) through `Payloads`, up to a bound.
        if size > MAX_WHOLE_READ {
            return Err(format!(
                "too large to preview from {url} ({size} bytes); use `weir get io`"
            ));
        }
        let hash_checked = hash.is_some();
        let payload = Payload::Offloaded {
            path: key.to_string(),
            size,
            hash,
        };
        let bytes = payloads.load(&payload).await.map_err(|e| e.to_string())?;
        let whole = bytes.len() as u64 <= PREFIX;
        let prefix = bytes::Bytes::copy_from_slice(&bytes[..bytes.len().min(PREFIX as usize)]);
        return Ok(Read {
            bytes: prefix,
            whole,
            hash_checked,
        });
    };
    let path = object_key(key)?;
    let store = object_store::local::LocalFileSystem::new_with_prefix(dir)
        .map_err(|e| format!("object store {url}: {e}"))?;
    let options = GetOptions {
        range: (size > 0).then_some(GetRange::Bounded(0..PREFIX)),
        ..GetOptions::default()
    };
    let backend = |e: object_store::Error| match e {
        object_store::Error::NotFound { .. } => weir_blob::Error::Missing {
            key: key.to_string(),
            store: url.clone(),
        }
        .to_string(),
        e => format!("object store {url}, key {key:?}: {e}"),
    };
    let got = store.get_opts(&path, options).await.map_err(backend)?;
    let found = got.meta.size;
    let bytes = got.bytes().await.map_err(backend)?;
    let whole = bytes.len() as u64 >= found;
    let found_hash = match &hash {
        Some(_) if whole => Some(weir_core::payload::content_hash(&bytes)),
        _ => None,
    };
    if found != size
        || found_hash
            .as_ref()
            .is_some_and(|h| Some(h) != hash.as_ref())
    {
        let describe = |size: u64, hash: &Option<String>| match hash {
            Some(h) => format!("{size} bytes with blake3 {h}"),
            None => format!("{size} bytes"),
        };
        return Err(weir_blob::Error::Corrupt {
            key: key.to_string(),
            store: url.clone(),
            expected: describe(size, &hash),
            found: describe(found, &found_hash),
        }
        .to_string());
    }
    Ok(Read {
        bytes,
        whole,
        hash_checked: found_hash.is_some(),
    })
}

/// The object path of a payload key, refusing keys that could leave the store's root (the
/// rules of `weir_blob::BlobStore`).
fn object_key(key: &str) -> Result<object_store::path::Path, String> {
    let bad = |reason: &str| {
        weir_blob::Error::BadKey {
            key: key.to_string(),
            reason: reason.to_string(),
        }
        .to_string()
    };
    if key.is_empty() || key.starts_with('/') {
        return Err(bad("keys are relative and non-empty"));
    }
    if key
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Err(bad("empty, '.' and '..' segments are not allowed"));
    }
    object_store::path::Path::parse(key).map_err(|e| bad(&e.to_string()))
}
