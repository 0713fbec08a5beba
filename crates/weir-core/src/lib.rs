//! The pure core of weir: everything that can be decided without IO.
//!
//! - [`ids`]: action identities and the deterministic action-id derivation of SPEC §4.1 (run
//!   ids are the state store's `RunId`).
//! - [`codec`]: the canonical MessagePack encoding (SPEC §5.1) used for storage and hashing.
//! - [`spec`]: task environments and per-task policies (retries, timeouts, cache, reuse).
//! - [`lifecycle`]: the one transition table for actions, and the record of transitions taken.
//! - [`payload`]: a stored value, inline or in the object store.
//! - [`error`]: error kinds and the serializable failure record of an action.
//! - [`clock`]: the wall clock stored times use.

pub mod cache;
pub mod clock;
pub mod codec;
pub mod error;
pub mod ids;
pub mod lifecycle;
pub mod payload;
pub mod phases;
pub mod refs;
pub mod spec;
pub mod transcode;

pub use error::{ErrorKind, Failure};
pub use ids::{ActionId, CallKey};
pub use lifecycle::{ActionEvent, ActionStatus};
pub use payload::Payload;
