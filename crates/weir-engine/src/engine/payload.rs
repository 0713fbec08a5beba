//! Payloads through the one payload service ([`weir_blob::Payloads`]): inline up to the
//! inline-store threshold, offloaded to the object store above it (SPEC §5.3).

use std::sync::Arc;

use weir_blob::PayloadKey;
use weir_store::Payload;

use super::{Engine, system};
use crate::Result;

impl Engine {
    /// Reads a stored payload (inline or from the object store).
    pub(crate) async fn load_payload(&self, payload: &Payload) -> Result<Arc<[u8]>> {
        self.inner.payloads.load(payload).await.map_err(system)
    }

    /// Reads a recorded payload for recovery: `None` when its object is missing or corrupt
    /// (what wrote it must run again), an error when the store cannot be read at all.
    pub(crate) async fn load_recorded(&self, payload: &Payload) -> Result<Option<Arc<[u8]>>> {
        match self.inner.payloads.load(payload).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.is_lost() => {
                tracing::warn!(error = %e, "a recorded output is lost: running its action again");
                Ok(None)
            }
            Err(e) => Err(system(e)),
        }
    }

    /// Keeps `bytes` inline or writes them to the object store under `key`. (The object-store
    /// write is boxed, and only built for an offloaded value: an action's future stays small,
    /// which is most of a fan-out's memory.)
    pub(super) async fn store_payload(&self, key: PayloadKey<'_>, bytes: &[u8]) -> Result<Payload> {
        let payload = self.inner.payloads.prepare(key, bytes);
        if let Payload::Offloaded { .. } = payload {
            Box::pin(self.inner.payloads.write(&payload, bytes))
                .await
                .map_err(system)?;
        }
        Ok(payload)
    }
}
