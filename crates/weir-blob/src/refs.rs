//! Reference data (SPEC §5.2): the bytes of a `weir::File`, kept in the object store under
//! `raw/<blake3 of the bytes>` and passed between tasks as a reference (hash and size), never
//! through the state store.
//!
//! Content-addressed: the same bytes have one key whatever file or run they came from, so a
//! reference's identity (and a cache key over it) is its content, and uploading the same bytes
//! twice stores them once. An upload streams into a temporary object under `raw/.uploads/`
//! while its hash is computed (as a multipart upload: never the whole file in memory), then is
//! moved to its key, or dropped when that key already holds the same bytes. A read checks the
//! size, and a full read the hash: a changed or truncated object is [`Error::Corrupt`].

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, WriteMultipart};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::{BlobStore, Error, MULTIPART_PART_SIZE, Result};

/// Where reference data lives in a store.
pub const RAW_PREFIX: &str = "raw";

/// Ranges of an object read at once while it streams out.
const RANGES_IN_FLIGHT: usize = 3;

/// Bytes read from a source at a time while uploading.
const READ_CHUNK: usize = 256 << 10;

/// A reference's object: its key, size and content hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawObject {
    /// `raw/<hash>`.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// blake3 of the bytes, lower-case hex.
    pub hash: String,
}

/// The key of the reference data with content hash `hash` ([`Error::BadKey`] for anything but
/// 64 lower-case hex digits: a reference cannot name another object).
pub fn raw_key(hash: &str) -> Result<String> {
    let ok = hash.len() == 64 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !ok {
        return Err(Error::BadKey {
            key: format!("{RAW_PREFIX}/{hash}"),
            reason: "a reference's hash is 64 lower-case hex digits (blake3)".into(),
        });
    }
    Ok(format!("{RAW_PREFIX}/{hash}"))
}

/// Refuses a range that is not inside the object.
fn check_range(object: &RawObject, range: &Range<u64>) -> Result<()> {
    if range.start > range.end || range.end > object.size {
        return Err(Error::BadKey {
            key: object.key.clone(),
            reason: format!(
                "bytes {}..{} are outside the object's {} bytes",
                range.start, range.end, object.size
            ),
        });
    }
    Ok(())
}

impl BlobStore {
    fn backend_error(&self, key: &str, source: object_store::Error) -> Error {
        match source {
            object_store::Error::NotFound { .. } => Error::Missing {
                key: key.to_string(),
                store: self.url().to_string(),
            },
            source => Error::Backend {
                key: key.to_string(),
                store: self.url().to_string(),
                source,
            },
        }
    }

    /// Streams `reader` into the store as reference data; its key, size and hash.
    pub async fn put_raw<R: AsyncRead + Unpin + Send>(&self, mut reader: R) -> Result<RawObject> {
        static UPLOADS: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let tmp_key = format!(
            "{RAW_PREFIX}/.uploads/{}-{nanos}-{}",
            std::process::id(),
            UPLOADS.fetch_add(1, Ordering::Relaxed)
        );
        let tmp = Path::parse(&tmp_key).map_err(|e| Error::BadKey {
            key: tmp_key.clone(),
            reason: e.to_string(),
        })?;
        let store = self.object_store();
        let upload = store
            .put_multipart(&tmp)
            .await
            .map_err(|e| self.backend_error(&tmp_key, e))?;
        let mut write = WriteMultipart::new_with_chunk_size(upload, MULTIPART_PART_SIZE);
        let mut hasher = blake3::Hasher::new();
        let mut size = 0u64;
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            let n = match reader.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    let _ = write.abort().await;
                    return Err(Error::Backend {
                        key: tmp_key,
                        store: self.url().to_string(),
                        source: object_store::Error::Generic {
                            store: "upload source",
                            source: Box::new(e),
                        },
                    });
                }
            };
            hasher.update(&buf[..n]);
            size += n as u64;
            if let Err(e) = write.wait_for_capacity(4).await {
                let _ = write.abort().await;
                return Err(self.backend_error(&tmp_key, e));
            }
            write.write(&buf[..n]);
        }
        write
            .finish()
            .await
            .map_err(|e| self.backend_error(&tmp_key, e))?;
        let hash = hasher.finalize().to_hex().to_string();
        let key = raw_key(&hash)?;
        let path = Path::parse(&key).expect("a raw key is a valid path");
        // The same bytes already there: keep them, drop the upload.
        let there = match store.head(&path).await {
            Ok(meta) => meta.size == size,
            Err(object_store::Error::NotFound { .. }) => false,
            Err(e) => return Err(self.backend_error(&key, e)),
        };
        if there {
            store
                .delete(&tmp)
                .await
                .map_err(|e| self.backend_error(&tmp_key, e))?;
        } else {
            store
                .rename(&tmp, &path)
                .await
                .map_err(|e| self.backend_error(&key, e))?;
        }
        Ok(RawObject { key, size, hash })
    }

    /// The bytes of reference data, checked against its size and hash.
    pub async fn get_raw(&self, object: &RawObject) -> Result<Vec<u8>> {
        let bytes = self.get(&object.key).await?;
        let hash = blake3::hash(&bytes).to_hex().to_string();
        if bytes.len() as u64 != object.size || hash != object.hash {
            return Err(self.corrupt(object, bytes.len() as u64, &hash));
        }
        Ok(bytes)
    }

    /// Bytes `range` of reference data (the object's size is checked, not its hash: that
    /// needs every byte).
    pub async fn get_raw_range(&self, object: &RawObject, range: Range<u64>) -> Result<Bytes> {
        let (store, path) = self.raw_for_ranges(object).await?;
        check_range(object, &range)?;
        store
            .get_range(&path, range)
            .await
            .map_err(|e| self.backend_error(&object.key, e))
    }

    /// Streams reference data into `out`, checking size and hash at the end (the caller
    /// discards what it wrote on an error). Read in ranges of [`MULTIPART_PART_SIZE`], a few
    /// at a time (one ranged GET each on S3; a local file's stream would come in small pieces).
    pub async fn copy_raw_to<W: AsyncWrite + Unpin + Send>(
        &self,
        object: &RawObject,
        out: &mut W,
    ) -> Result<()> {
        let mut chunks = self.raw_stream(object, 0..object.size).await?;
        while let Some(chunk) = chunks.next().await {
            out.write_all(&chunk?).await.map_err(|e| Error::Backend {
                key: object.key.clone(),
                store: self.url().to_string(),
                source: object_store::Error::Generic {
                    store: "download target",
                    source: Box::new(e),
                },
            })?;
        }
        out.flush().await.ok();
        Ok(())
    }

    /// The store and path of reference data for reads by range (a Parquet reader's), after
    /// checking that the object is there with the reference's size (its hash needs every byte:
    /// see [`BlobStore::verify_raw`]).
    pub async fn raw_for_ranges(
        &self,
        object: &RawObject,
    ) -> Result<(std::sync::Arc<dyn object_store::ObjectStore>, Path)> {
        let path = Path::parse(&object.key).map_err(|e| Error::BadKey {
            key: object.key.clone(),
            reason: e.to_string(),
        })?;
        let store = self.object_store();
        let size = store
            .head(&path)
            .await
            .map_err(|e| self.backend_error(&object.key, e))?
            .size;
        if size != object.size {
            return Err(self.corrupt(object, size, "(not read)"));
        }
        Ok((store.clone(), path))
    }

    /// Reads every byte of reference data and checks its size and hash.
    pub async fn verify_raw(&self, object: &RawObject) -> Result<()> {
        self.copy_raw_to(object, &mut tokio::io::sink()).await
    }

    /// Bytes `range` of reference data as a stream of chunks (ranges of
    /// [`MULTIPART_PART_SIZE`], a few in flight). The object's size is checked first; when the
    /// range is the whole object its hash is checked too, and a mismatch is the stream's last
    /// item (an error): what came before it is not the reference's.
    pub async fn raw_stream(
        &self,
        object: &RawObject,
        range: Range<u64>,
    ) -> Result<futures::stream::BoxStream<'static, Result<Bytes>>> {
        let (store, path) = self.raw_for_ranges(object).await?;
        check_range(object, &range)?;
        let whole = range.start == 0 && range.end == object.size;
        let step = MULTIPART_PART_SIZE as u64;
        let (start, end) = (range.start, range.end);
        let ranges = (0..(end - start).div_ceil(step))
            .map(move |i| start + i * step..(start + (i + 1) * step).min(end));
        let this = self.clone();
        let object = object.clone();
        let key = object.key.clone();
        let chunks = futures::stream::iter(ranges.map(move |r| {
            let store = store.clone();
            let path = path.clone();
            async move { store.get_range(&path, r).await }
        }))
        .buffered(RANGES_IN_FLIGHT);
        // What was read (and its hash, for a whole read), checked once the chunks end: a short
        // or changed object is the stream's last item, an error.
        let state = std::sync::Arc::new(std::sync::Mutex::new((
            whole.then(blake3::Hasher::new),
            0u64,
        )));
        let seen = state.clone();
        let body = chunks.map(move |chunk| {
            let chunk = chunk.map_err(|e| this.backend_error(&key, e))?;
            let mut st = seen.lock().expect("not poisoned");
            st.1 += chunk.len() as u64;
            if let Some(h) = st.0.as_mut() {
                h.update(&chunk);
            }
            Ok(chunk)
        });
        let this = self.clone();
        let tail = futures::stream::once(async move {
            let (hasher, read) = {
                let mut st = state.lock().expect("not poisoned");
                (st.0.take(), st.1)
            };
            let hash = hasher.map(|h| h.finalize().to_hex().to_string());
            let changed = hash.as_ref().is_some_and(|h| *h != object.hash);
            (read != end - start || changed)
                .then(|| Err(this.corrupt(&object, read, hash.as_deref().unwrap_or("(a range)"))))
        })
        .filter_map(futures::future::ready);
        let checked = body.chain(tail).boxed();
        Ok(checked)
    }

    fn corrupt(&self, object: &RawObject, size: u64, hash: &str) -> Error {
        Error::Corrupt {
            key: object.key.clone(),
            store: self.url().to_string(),
            expected: format!("{} bytes, blake3 {}", object.size, object.hash),
            found: format!("{size} bytes, blake3 {hash}"),
        }
    }
}
