//! Object storage for weir payloads, on the `object_store` crate (SPEC §5.3).
//!
//! Values too large to keep in a state-store row are written here under
//! `<run>/<action>/<attempt>/{inputs,outputs,error}`. [`BlobStore::from_url`] accepts `file://`
//! (the embedded default), `memory://` and `s3://BUCKET[/PREFIX]` (Amazon S3 or an
//! S3-compatible server, configured by the standard `AWS_*` variables; see
//! [`BlobStore::from_url_with_env`]).
//!
//! Writes are atomic: the local backend writes a temporary file and renames it into place, and
//! object stores publish an object only when its upload completes (values over
//! [`MULTIPART_THRESHOLD`] go to S3 as a multipart upload, published when it completes), so a
//! crash never leaves a partial value that reads as valid. Keys are validated so that none can
//! escape the store's root or prefix (`..`, empty segments and absolute paths are refused).

mod payloads;
mod refs;
mod s3;

use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path;

use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
pub use payloads::{BLOB_URL_SETTING, PayloadKey, Payloads};
pub use refs::{RAW_PREFIX, RawObject, raw_key};

impl Error {
    /// The object is gone or damaged: what it held is lost (a recovering engine runs what
    /// wrote it again), as opposed to a store that could not be reached.
    pub fn is_lost(&self) -> bool {
        matches!(self, Error::Missing { .. } | Error::Corrupt { .. })
    }
}

/// A storage failure, naming the key or URL involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The URL is not a supported object store.
    #[error("unsupported object store URL {url:?}: {reason}")]
    BadUrl {
        /// The URL given.
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// A key that could escape the store's root or is malformed.
    #[error("invalid object key {key:?}: {reason}")]
    BadKey {
        /// The key given.
        key: String,
        /// Why it was refused.
        reason: String,
    },
    /// No object under the key.
    #[error("object {key:?} is missing from {store}")]
    Missing {
        /// The key.
        key: String,
        /// The store URL.
        store: String,
    },
    /// The object's bytes are not the ones its reference was written with (size or content
    /// hash differ): it was changed or damaged after it was written.
    #[error(
        "object {key:?} in {store} is corrupt: expected {expected}, found {found}; it was changed or damaged after it was written"
    )]
    Corrupt {
        /// The key.
        key: String,
        /// The store URL.
        store: String,
        /// What the reference recorded (size and hash).
        expected: String,
        /// What was read.
        found: String,
    },
    /// The store cannot be used at all: its bucket does not exist, its server does not answer
    /// or the credentials may not list it (found when it is opened).
    #[error(
        "object store {store}: bucket {bucket:?} at {endpoint} {problem}; check that the bucket exists and that the AWS_* settings (AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY) reach it"
    )]
    Unavailable {
        /// The store URL.
        store: String,
        /// The bucket.
        bucket: String,
        /// The server it was looked for on.
        endpoint: String,
        /// What went wrong, in short (`does not exist`, `cannot be listed: AccessDenied ...`).
        problem: String,
        /// The underlying error.
        #[source]
        source: Box<object_store::Error>,
    },
    /// The backend failed.
    #[error("object store {store}, key {key:?}: {source}")]
    Backend {
        /// The key.
        key: String,
        /// The store URL.
        store: String,
        /// The underlying error.
        #[source]
        source: object_store::Error,
    },
}

/// Result of blob operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Values larger than this are written to S3 as a multipart upload, in parts of
/// [`MULTIPART_PART_SIZE`] (S3 refuses a single upload over 5 GiB, and a part that fails is
/// sent again alone). Other stores take them in one write.
pub const MULTIPART_THRESHOLD: usize = 8 << 20;

/// The size of each part of a multipart upload but the last (S3's minimum is 5 MiB).
pub const MULTIPART_PART_SIZE: usize = 8 << 20;

/// Parts of one multipart upload in flight at once.
const PARTS_IN_FLIGHT: usize = 4;

/// A handle on an object store, cheap to clone.
#[derive(Clone)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    url: String,
    /// The bucket of an `s3://` store (checked when opened; large values go as multipart).
    bucket: Option<Arc<s3::Bucket>>,
}

impl std::fmt::Debug for BlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobStore").field("url", &self.url).finish()
    }
}

impl BlobStore {
    /// A store on a local directory, created if needed.
    pub fn local(dir: &std::path::Path) -> Result<BlobStore> {
        let bad = |reason: String| Error::BadUrl {
            url: dir.display().to_string(),
            reason,
        };
        std::fs::create_dir_all(dir).map_err(|e| bad(e.to_string()))?;
        let dir = dir.canonicalize().map_err(|e| bad(e.to_string()))?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(&dir)
            .map_err(|e| bad(e.to_string()))?;
        Ok(BlobStore {
            store: Arc::new(store),
            url: format!("file://{}", dir.display()),
            bucket: None,
        })
    }

    /// A store from a URL: `file:///abs/dir`, `memory://` or `s3://BUCKET[/PREFIX]`, the
    /// latter configured by the process's `AWS_*` variables (see
    /// [`BlobStore::from_url_with_env`]). Nothing is contacted yet: a process that starts
    /// calls [`BlobStore::check`] so that a missing bucket is an error then.
    pub fn from_url(url: &str) -> Result<BlobStore> {
        let env = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
        BlobStore::from_url_with_env(url, env)
    }

    /// [`BlobStore::from_url`] with `env` in place of the process environment: for
    /// `s3://BUCKET[/PREFIX]`, the `AWS_*` variables object_store's
    /// `AmazonS3Builder::from_env` reads, among them `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION` (default `us-east-1`) and
    /// `AWS_ENDPOINT_URL` (an S3-compatible server; one given as `http://...` may be plain HTTP
    /// unless `AWS_ALLOW_HTTP=false`). Without keys, credentials come from a web identity
    /// token, the container's or the instance's metadata. Keys live under the prefix.
    ///
    /// ```
    /// let env = [("AWS_ENDPOINT_URL", "http://127.0.0.1:9000"), ("AWS_REGION", "eu-west-1")]
    ///     .map(|(k, v)| (k.to_string(), v.to_string()));
    /// let store = weir_blob::BlobStore::from_url_with_env("s3://payloads/team-a", env).unwrap();
    /// assert_eq!(store.url(), "s3://payloads/team-a");
    /// ```
    pub fn from_url_with_env(
        url: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<BlobStore> {
        if let Some(rest) = url.strip_prefix("s3://") {
            let bucket = s3::Bucket::parse(url, rest, env)?;
            return Ok(BlobStore {
                store: bucket.store(url)?,
                url: url.to_string(),
                bucket: Some(Arc::new(bucket)),
            });
        }
        let bad = |reason: &str| Error::BadUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(bad("file:// URLs need an absolute path"));
            }
            return BlobStore::local(std::path::Path::new(path));
        }
        if url.starts_with("memory://") {
            return Ok(BlobStore {
                store: Arc::new(object_store::memory::InMemory::new()),
                url: url.to_string(),
                bucket: None,
            });
        }
        Err(bad("supported schemes are file://, memory:// and s3://"))
    }

    /// Checks that the store can be used: for `s3://`, lists at most one key under the prefix
    /// ([`Error::Unavailable`] names the bucket and the server when that fails). Local and
    /// in-memory stores need no check.
    pub async fn check(&self) -> Result<()> {
        match &self.bucket {
            Some(bucket) => bucket.check(&self.url).await,
            None => Ok(()),
        }
    }

    /// [`BlobStore::check`] for a caller that is not async, or is on a runtime it may not
    /// block: an `s3://` store is checked on a thread and runtime of its own.
    pub fn check_blocking(&self) -> Result<()> {
        let Some(bucket) = &self.bucket else {
            return Ok(());
        };
        let check = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::BadUrl {
                    url: self.url.clone(),
                    reason: format!("cannot start a runtime to check it: {e}"),
                })?
                .block_on(bucket.check(&self.url))
        };
        std::thread::scope(|scope| scope.spawn(check).join())
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }

    /// The store's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The `object_store` behind it (keys relative to the store's root or prefix).
    pub(crate) fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    fn path(key: &str) -> Result<Path> {
        let bad = |reason: &str| Error::BadKey {
            key: key.to_string(),
            reason: reason.to_string(),
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
        Path::parse(key).map_err(|e| bad(&e.to_string()))
    }

    /// Writes `bytes` under `key` atomically.
    pub async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<()> {
        let path = Self::path(key)?;
        // Fault injection (feature `failpoints`): die, or fail as the backend would, before
        // and after the object is written.
        #[cfg(feature = "failpoints")]
        fail::fail_point!("blob.put.before", |_| Err(
            self.injected(key, "blob.put.before")
        ));
        let written = if self.bucket.is_some() && bytes.len() > MULTIPART_THRESHOLD {
            self.put_multipart(&path, Bytes::from(bytes)).await
        } else {
            self.store
                .put(&path, PutPayload::from(bytes))
                .await
                .map(drop)
        };
        written.map_err(|source| Error::Backend {
            key: key.to_string(),
            store: self.url.clone(),
            source,
        })?;
        #[cfg(feature = "failpoints")]
        fail::fail_point!("blob.put.after", |_| Err(
            self.injected(key, "blob.put.after")
        ));
        Ok(())
    }

    /// Uploads `bytes` in parts of [`MULTIPART_PART_SIZE`], a few at a time; the object appears
    /// only when the upload completes, and a failed upload is aborted (its parts deleted).
    async fn put_multipart(&self, path: &Path, bytes: Bytes) -> object_store::Result<()> {
        let upload = self.store.put_multipart(path).await?;
        let mut write = WriteMultipart::new_with_chunk_size(upload, MULTIPART_PART_SIZE);
        for start in (0..bytes.len()).step_by(MULTIPART_PART_SIZE) {
            if let Err(e) = write.wait_for_capacity(PARTS_IN_FLIGHT).await {
                // The upload's own error is the one to report.
                let _ = write.abort().await;
                return Err(e);
            }
            write.put(bytes.slice(start..bytes.len().min(start + MULTIPART_PART_SIZE)));
        }
        write.finish().await.map(drop)
    }

    /// The error an injected failure gives: a backend error naming the key and the failpoint.
    #[cfg(feature = "failpoints")]
    fn injected(&self, key: &str, point: &str) -> Error {
        eprintln!("weir: failpoint {point}: injected error");
        Error::Backend {
            key: key.to_string(),
            store: self.url.clone(),
            source: object_store::Error::Generic {
                store: "failpoint",
                source: format!("failpoint {point}: injected error").into(),
            },
        }
    }

    /// The size of the object under `key` ([`Error::Missing`] when there is none): how a
    /// control plane checks a reference a worker made before it records it.
    pub async fn size(&self, key: &str) -> Result<u64> {
        let path = Self::path(key)?;
        match self.store.head(&path).await {
            Ok(meta) => Ok(meta.size),
            Err(object_store::Error::NotFound { .. }) => Err(Error::Missing {
                key: key.to_string(),
                store: self.url.clone(),
            }),
            Err(source) => Err(Error::Backend {
                key: key.to_string(),
                store: self.url.clone(),
                source,
            }),
        }
    }

    /// Whether `key` is a key this store accepts (relative, no empty, `.` or `..` segment):
    /// [`Error::BadKey`] says why not.
    pub fn check_key(key: &str) -> Result<()> {
        Self::path(key).map(drop)
    }

    /// Whether workers on other machines can reach this store with a URL and credentials of
    /// their own: an `s3://` store. A `file://` directory is on the machine that opened it
    /// (another machine may have another directory under the same path), and `memory://` is
    /// in its process.
    pub fn is_shared(&self) -> bool {
        self.bucket.is_some()
    }

    /// Reads the value under `key`.
    pub async fn get(&self, key: &str) -> Result<Vec<u8>> {
        let path = Self::path(key)?;
        let map = |source: object_store::Error| match source {
            object_store::Error::NotFound { .. } => Error::Missing {
                key: key.to_string(),
                store: self.url.clone(),
            },
            source => Error::Backend {
                key: key.to_string(),
                store: self.url.clone(),
                source,
            },
        };
        let got = self.store.get(&path).await.map_err(map)?;
        Ok(got.bytes().await.map_err(map)?.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trip_missing_and_escaping_keys() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::local(&dir.path().join("blobs")).unwrap();
        store.put("run/abc/1/outputs", vec![1, 2, 3]).await.unwrap();
        assert_eq!(store.get("run/abc/1/outputs").await.unwrap(), vec![1, 2, 3]);
        assert!(dir.path().join("blobs/run/abc/1/outputs").exists());
        assert!(matches!(
            store.get("run/abc/2/outputs").await,
            Err(Error::Missing { .. })
        ));
        for key in ["../x", "a/../../x", "/etc/passwd", "a//b", ""] {
            assert!(
                matches!(store.put(key, vec![]).await, Err(Error::BadKey { .. })),
                "{key}"
            );
        }
        let mem = BlobStore::from_url("memory://").unwrap();
        mem.put("k", vec![7]).await.unwrap();
        assert_eq!(mem.get("k").await.unwrap(), vec![7]);
        assert!(
            BlobStore::from_url("ftp://x")
                .unwrap_err()
                .to_string()
                .contains("supported schemes")
        );
        assert!(BlobStore::from_url("file://rel").is_err());
        assert_eq!(store.size("run/abc/1/outputs").await.unwrap(), 3);
        assert!(matches!(
            store.size("run/abc/9/outputs").await,
            Err(Error::Missing { .. })
        ));
        assert!(matches!(
            store.size("run/../x").await,
            Err(Error::BadKey { .. })
        ));
        assert!(BlobStore::check_key("r/a/inputs").is_ok());
        assert!(BlobStore::check_key("r/../a/inputs").is_err());
        assert!(!store.is_shared() && !mem.is_shared());
    }
}
