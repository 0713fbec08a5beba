//! Payloads: a value is kept inline in the state store up to the inline-store threshold and
//! offloaded to the object store above it (SPEC §5.3).

use std::sync::Arc;

use weir_store::Payload;

use super::{Engine, system};
use crate::Result;

impl Engine {
    /// Reads a stored payload (inline or from the object store).
    pub async fn load_payload(&self, payload: &Payload) -> Result<Arc<[u8]>> {
        match payload {
            Payload::Inline(b) => Ok(Arc::from(b.as_slice())),
            Payload::Offloaded { path, .. } => {
                let bytes = self.inner.blobs.get(path).await.map_err(system)?;
                Ok(Arc::from(bytes))
            }
        }
    }

    /// Keeps `bytes` inline or writes them to the object store under `key()`.
    pub(super) async fn store_payload(
        &self,
        key: impl FnOnce() -> String,
        bytes: &[u8],
    ) -> Result<Payload> {
        if bytes.len() <= self.inner.options.inline_store_threshold {
            return Ok(Payload::Inline(bytes.to_vec()));
        }
        let key = key();
        self.inner
            .blobs
            .put(&key, bytes.to_vec())
            .await
            .map_err(system)?;
        Ok(Payload::Offloaded {
            path: key,
            size: bytes.len() as u64,
        })
    }
}
