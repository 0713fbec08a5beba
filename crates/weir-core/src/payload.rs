//! Payloads as the state store keeps them: inline canonical bytes, or a reference to an
//! object in the object store (SPEC §5.3).

use serde::{Deserialize, Serialize};

/// A payload as stored: inline bytes, or the object-store path of an offloaded value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Payload {
    /// Canonical MessagePack bytes kept in the row.
    Inline(Vec<u8>),
    /// Path in the object store, relative to the store's root.
    Offloaded {
        /// Object path.
        path: String,
        /// Size in bytes.
        size: u64,
        /// Content hash of the bytes ([`content_hash`]), checked on every read. Absent only
        /// in references written before weir kept one.
        #[serde(default)]
        hash: Option<String>,
    },
}

/// The content hash kept with an offloaded payload's reference: blake3, lower-case hex.
pub fn content_hash(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

impl Payload {
    /// Size of the encoded value in bytes.
    pub fn size(&self) -> u64 {
        match self {
            Payload::Inline(b) => b.len() as u64,
            Payload::Offloaded { size, .. } => *size,
        }
    }
}
