//! The one place payloads are written and read: the engine, `get io` and the UI all go
//! through [`Payloads`], so a state whose payloads live in another object store (recorded in
//! the state, see [`BLOB_URL_SETTING`]) is read the same way by all of them.

use std::path::Path;
use std::sync::Arc;

use weir_core::Payload;

use crate::{BlobStore, Error, Result};

/// The state-store setting that records the object store of a state whose payloads are not in
/// the default `<state_dir>/blobs`.
pub const BLOB_URL_SETTING: &str = "blob_url";

/// Where a payload goes: `<run>/<action>/inputs`, `<run>/<action>/<attempt>/outputs`.
#[derive(Clone, Copy)]
pub enum PayloadKey<'a> {
    /// An action's inputs.
    Inputs {
        /// Run name.
        run: &'a str,
        /// Action id (display form).
        action: &'a (dyn std::fmt::Display + Sync),
    },
    /// An attempt's output.
    Outputs {
        /// Run name.
        run: &'a str,
        /// Action id (display form).
        action: &'a (dyn std::fmt::Display + Sync),
        /// Attempt number.
        attempt: u32,
    },
    /// An attempt's output as the worker holding lease `lease` writes it itself (a control
    /// plane's worker with direct access to the object store): under the attempt's prefix,
    /// one key per lease, so that a fenced-off worker of the same attempt number (its lease
    /// expired and the attempt was leased again) never replaces the object a current worker's
    /// accepted completion refers to.
    LeaseOutputs {
        /// Run name.
        run: &'a str,
        /// Action id (display form).
        action: &'a (dyn std::fmt::Display + Sync),
        /// Attempt number.
        attempt: u32,
        /// Lease id (the fencing token's other half).
        lease: u64,
    },
}

impl std::fmt::Debug for PayloadKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.key())
    }
}

impl PayloadKey<'_> {
    /// The object key.
    pub fn key(&self) -> String {
        match self {
            PayloadKey::Inputs { run, action } => format!("{run}/{action}/inputs"),
            PayloadKey::Outputs {
                run,
                action,
                attempt,
            } => format!("{run}/{action}/{attempt}/outputs"),
            PayloadKey::LeaseOutputs {
                run,
                action,
                attempt,
                lease,
            } => format!("{run}/{action}/{attempt}/{lease}/outputs"),
        }
    }
}

/// Inline values up to a threshold, the object store above it.
#[derive(Clone, Debug)]
pub struct Payloads {
    /// `Err(url)`: a reader's object store that does not exist (only inline payloads load).
    blobs: std::result::Result<BlobStore, String>,
    inline_threshold: usize,
}

impl Payloads {
    /// Payloads over `inline_threshold` bytes go to `blobs`.
    pub fn new(blobs: BlobStore, inline_threshold: usize) -> Payloads {
        Payloads {
            blobs: Ok(blobs),
            inline_threshold,
        }
    }

    /// The payloads of a state directory, for reading: the object store recorded in the state
    /// (`recorded_url`), or `<state_dir>/blobs`. Nothing is created.
    pub fn of_state(state_dir: &Path, recorded_url: Option<&str>) -> Result<Payloads> {
        let dir = state_dir.join("blobs");
        let blobs = match recorded_url {
            Some(url) => Ok(BlobStore::from_url(url)?),
            None if dir.is_dir() => Ok(BlobStore::local(&dir)?),
            None => Err(format!("file://{}", dir.display())),
        };
        Ok(Payloads {
            blobs,
            inline_threshold: 0,
        })
    }

    /// Values over this many bytes go to the object store.
    pub fn inline_threshold(&self) -> usize {
        self.inline_threshold
    }

    /// The object store.
    pub fn blobs(&self) -> Result<&BlobStore> {
        self.blobs.as_ref().map_err(|url| Error::Missing {
            key: String::new(),
            store: url.clone(),
        })
    }

    /// Keeps `bytes` inline, or writes them under `key` and returns the reference.
    pub async fn store(&self, key: PayloadKey<'_>, bytes: &[u8]) -> Result<Payload> {
        let payload = self.prepare(key, bytes);
        self.write(&payload, bytes).await?;
        Ok(payload)
    }

    /// What [`Payloads::store`] will return, without writing anything yet (so that a caller
    /// can claim a name first and write after).
    pub fn prepare(&self, key: PayloadKey<'_>, bytes: &[u8]) -> Payload {
        if bytes.len() <= self.inline_threshold {
            return Payload::Inline(bytes.to_vec());
        }
        Payload::Offloaded {
            path: key.key(),
            size: bytes.len() as u64,
            hash: Some(weir_core::payload::content_hash(bytes)),
        }
    }

    /// Writes the object of a prepared payload (nothing for an inline one).
    pub async fn write(&self, payload: &Payload, bytes: &[u8]) -> Result<()> {
        match payload {
            Payload::Inline(_) => Ok(()),
            Payload::Offloaded { path, .. } => self.blobs()?.put(path, bytes.to_vec()).await,
        }
    }

    /// The bytes of a payload. An offloaded one is checked against its reference (size and
    /// content hash): [`Error::Corrupt`] when they differ, [`Error::Missing`] when it is gone.
    pub async fn load(&self, payload: &Payload) -> Result<Arc<[u8]>> {
        match payload {
            Payload::Inline(b) => Ok(Arc::from(b.as_slice())),
            Payload::Offloaded { path, size, hash } => match &self.blobs {
                Ok(blobs) => {
                    let bytes = blobs.get(path).await?;
                    let found_hash = hash
                        .as_ref()
                        .map(|_| weir_core::payload::content_hash(&bytes));
                    if bytes.len() as u64 != *size || found_hash != *hash {
                        let describe = |size: u64, hash: &Option<String>| match hash {
                            Some(h) => format!("{size} bytes with blake3 {h}"),
                            None => format!("{size} bytes"),
                        };
                        return Err(Error::Corrupt {
                            key: path.clone(),
                            store: blobs.url().to_string(),
                            expected: describe(*size, hash),
                            found: describe(bytes.len() as u64, &found_hash),
                        });
                    }
                    Ok(Arc::from(bytes))
                }
                Err(url) => Err(Error::Missing {
                    key: path.clone(),
                    store: url.clone(),
                }),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn small_values_stay_inline_large_ones_are_offloaded_under_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let payloads = Payloads::new(BlobStore::local(&dir.path().join("blobs")).unwrap(), 4);
        let small = payloads
            .store(
                PayloadKey::Inputs {
                    run: "r",
                    action: &"a1",
                },
                &[1, 2],
            )
            .await
            .unwrap();
        assert_eq!(small, Payload::Inline(vec![1, 2]));
        let key = PayloadKey::Outputs {
            run: "r",
            action: &"a1",
            attempt: 2,
        };
        let big = payloads.store(key, &[9; 10]).await.unwrap();
        assert_eq!(
            big,
            Payload::Offloaded {
                path: "r/a1/2/outputs".into(),
                size: 10,
                hash: Some(weir_core::payload::content_hash(&[9; 10])),
            }
        );
        assert!(dir.path().join("blobs/r/a1/2/outputs").exists());
        // A reader of the state directory finds both, without creating anything.
        let reader = Payloads::of_state(dir.path(), None).unwrap();
        assert_eq!(&*reader.load(&big).await.unwrap(), &[9; 10]);
        assert_eq!(&*reader.load(&small).await.unwrap(), &[1, 2]);
        let elsewhere = tempfile::tempdir().unwrap();
        let empty = Payloads::of_state(elsewhere.path(), None).unwrap();
        assert_eq!(&*empty.load(&small).await.unwrap(), &[1, 2]);
        let missing = empty.load(&big).await.unwrap_err().to_string();
        assert!(missing.contains("r/a1/2/outputs"), "{missing}");
        assert!(!elsewhere.path().join("blobs").exists());
        let recorded = format!("file://{}", dir.path().join("blobs").display());
        let by_url = Payloads::of_state(elsewhere.path(), Some(&recorded)).unwrap();
        assert_eq!(&*by_url.load(&big).await.unwrap(), &[9; 10]);
    }

    #[tokio::test]
    async fn a_changed_or_deleted_object_is_refused_naming_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let payloads = Payloads::new(BlobStore::local(&dir.path().join("blobs")).unwrap(), 0);
        let key = PayloadKey::Inputs {
            run: "r",
            action: &"a1",
        };
        let p = payloads.store(key, &[1, 2, 3, 4]).await.unwrap();
        let file = dir.path().join("blobs/r/a1/inputs");
        // One flipped bit, same size: the hash tells.
        std::fs::write(&file, [1, 2, 3, 5]).unwrap();
        let e = payloads.load(&p).await.unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }) && e.is_lost(), "{e}");
        assert!(e.to_string().contains("r/a1/inputs"), "{e}");
        // Truncated.
        std::fs::write(&file, [1, 2]).unwrap();
        assert!(matches!(
            payloads.load(&p).await,
            Err(Error::Corrupt { .. })
        ));
        // Gone.
        std::fs::remove_file(&file).unwrap();
        let e = payloads.load(&p).await.unwrap_err();
        assert!(matches!(e, Error::Missing { .. }) && e.is_lost(), "{e}");
        // Restored: read again.
        std::fs::write(&file, [1, 2, 3, 4]).unwrap();
        assert_eq!(&*payloads.load(&p).await.unwrap(), &[1, 2, 3, 4]);
    }
}
