//! Payloads that workers read and write in the object store themselves, when the control
//! plane offers them its store at registration (`s3://` only: see
//! [`ObjectStoreOffer`](crate::worker::protocol::ObjectStoreOffer)). The control plane then
//! carries references instead of bytes, and checks each reference a worker sends before
//! anything records it: the key must be exactly the one the message may write (the attempt's
//! output under its lease, the child's inputs), well formed, and the object must be there with
//! the size the reference gives. The content hash is checked when the object is read, as for
//! every offloaded payload.

use crate::worker::protocol::PayloadRef;
use crate::worker::{Error, Refusal, refused};

use super::{Inner, system_failure};

impl Inner {
    /// Checks the reference `r` that a message of `request` sends for `what` (e.g. "the
    /// output of action A attempt 1"), which may only name the object `expected`: 400 for a
    /// malformed reference, a missing object or one of another size, or a control plane that
    /// offers no store; 403 for a key other than `expected`; 500 when the store cannot say.
    pub(crate) async fn check_ref(
        &self,
        request: &str,
        what: &str,
        expected: &str,
        r: &PayloadRef,
    ) -> Result<(), Error> {
        let bad = |message: String| Err(refused(request, Refusal::BadRequest, message));
        let key = r.key.as_str();
        let Some(offer) = &self.offer else {
            return bad(format!(
                "{what} refers to object {key:?}, but this control plane offers its workers no object store (its payloads are not in S3): send the bytes"
            ));
        };
        if let Err(e) = weir_blob::BlobStore::check_key(key) {
            return bad(format!("{what}: {e}"));
        }
        if key != expected {
            return Err(refused(
                request,
                Refusal::Forbidden,
                format!(
                    "{what} refers to object {key:?}, outside its prefix: it may only refer to {expected:?}"
                ),
            ));
        }
        if r.hash.len() != 64
            || !r
                .hash
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return bad(format!(
                "{what}: the content hash {:?} of object {key:?} is not a blake3 hash in lower-case hex",
                r.hash
            ));
        }
        let blobs = self
            .payloads
            .blobs()
            .map_err(|e| refused(request, Refusal::Internal, system_failure(e)))?;
        match blobs.size(key).await {
            Ok(size) if size == r.size => Ok(()),
            Ok(size) => bad(format!(
                "{what}: object {key:?} in {} is {size} bytes, but its reference says {} bytes",
                offer.url, r.size
            )),
            Err(e @ weir_blob::Error::Missing { .. }) => bad(format!(
                "{what}: {e}; a worker writes the object before it sends its reference"
            )),
            Err(e) => Err(refused(request, Refusal::Internal, system_failure(e))),
        }
    }

    /// A recorded trace output read here for a worker that gets bytes (counted as carried);
    /// none when it cannot be read (the trace runs again).
    pub(crate) async fn checkpoint_bytes(
        &self,
        out: &weir_core::Payload,
    ) -> crate::trace::Checkpoint {
        match self.payloads.load(out).await {
            Ok(bytes) => {
                self.counters.proxied(bytes.len());
                crate::trace::Checkpoint::Output(bytes.to_vec())
            }
            Err(_) => crate::trace::Checkpoint::Nothing,
        }
    }
}
