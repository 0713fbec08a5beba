//! Object storage for weir payloads, on the `object_store` crate (SPEC §5.3).
//!
//! Values too large to keep in a state-store row are written here under
//! `<run>/<action>/<attempt>/{inputs,outputs,error}`. [`BlobStore::from_url`] accepts `file://`
//! (the embedded default) and `memory://`; cloud schemes come with cluster mode.
//!
//! Writes are atomic: the local backend writes a temporary file and renames it into place, and
//! object stores publish an object only when its upload completes, so a crash never leaves a
//! partial value that reads as valid. Keys are validated so that none can escape the store's
//! root (`..`, empty segments and absolute paths are refused).

mod payloads;

use std::sync::Arc;

use object_store::path::Path;

use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
pub use payloads::{BLOB_URL_SETTING, PayloadKey, Payloads};

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

/// A handle on an object store, cheap to clone.
#[derive(Clone)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    url: String,
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
        })
    }

    /// A store from a URL: `file:///abs/dir` or `memory://`.
    pub fn from_url(url: &str) -> Result<BlobStore> {
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
            });
        }
        Err(bad("supported schemes are file:// and memory://"))
    }

    /// The store's URL.
    pub fn url(&self) -> &str {
        &self.url
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
        self.store
            .put(&path, PutPayload::from(bytes))
            .await
            .map_err(|source| Error::Backend {
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
    }
}
