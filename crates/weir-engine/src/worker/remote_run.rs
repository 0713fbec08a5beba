//! What a task running in a worker does through the engine: child calls and trace checkpoints
//! ([`RemoteRun`], the `Remote` backend of the task context; the struct is declared beside the
//! backend in `call.rs`). The child's id is derived and its inputs checked by the caller
//! (`call_child`), exactly as in process.

use std::sync::Arc;

use weir_core::{ActionId, ErrorKind, Failure};

use super::protocol::{ChildCall, PayloadRef, TraceLookup, TraceRecord, from_remote};
use crate::call::{RemoteRun, TaskCtx};
use crate::registry::TaskDef;
use crate::trace::Checkpoint;
use crate::{Error, Result};

impl RemoteRun {
    /// A child call from a task in this worker: the action is created (or attached to, or
    /// recovered) by the engine; the outcome comes back through the results loop. Dropping the
    /// future cancels the call.
    pub(crate) async fn submit_child(
        &self,
        ctx: &TaskCtx,
        id: ActionId,
        def: &'static TaskDef,
        inputs: Vec<u8>,
        group: Option<Arc<str>>,
    ) -> Result<Arc<[u8]>> {
        let (inputs, inputs_ref) = self.write_inputs(id, inputs).await;
        let call = ChildCall {
            call: 0, // assigned by the connection
            run: self.run_id,
            parent: ctx.action,
            id,
            task: def.full_name().to_string(),
            inputs,
            group: group.map(|g| g.to_string()),
            check_store: ctx.check_store,
            inputs_ref,
        };
        match self.client.call_child(call).await {
            Some(Ok(bytes)) => Ok(Arc::from(bytes.into_vec())),
            Some(Err(e)) => Err(from_remote(e)),
            None => Err(Error::with_kind(
                ErrorKind::Cancelled,
                format!("action {id} ({}) was cancelled", def.full_name()),
            )),
        }
    }

    /// A child's inputs as its call carries them: with direct access to the object store and
    /// over its threshold, written there under the child's key `RUN/CHILD/inputs` and sent as
    /// a reference (the same id means the same inputs, so a call sent again writes the same
    /// bytes); else the bytes (also when the write fails: the control plane stores them then).
    async fn write_inputs(&self, id: ActionId, inputs: Vec<u8>) -> (Vec<u8>, Option<PayloadRef>) {
        let key = weir_blob::PayloadKey::Inputs {
            run: &self.run_name,
            action: &id,
        };
        self.write_direct(key, inputs, "inputs").await
    }

    /// `bytes` as a message carries them: written to the object store under `key` and sent as
    /// a reference when this worker has direct access and they are over its threshold, else
    /// (also when the write fails) the bytes themselves.
    async fn write_direct(
        &self,
        key: weir_blob::PayloadKey<'_>,
        bytes: Vec<u8>,
        what: &str,
    ) -> (Vec<u8>, Option<PayloadRef>) {
        let Some(payloads) = self
            .client
            .direct()
            .filter(|p| bytes.len() > p.inline_threshold())
        else {
            return (bytes, None);
        };
        match payloads
            .store(key, &bytes)
            .await
            .map(|p| PayloadRef::of(&p))
        {
            Ok(Some(r)) => (Vec::new(), Some(r)),
            Ok(None) => (bytes, None),
            Err(e) => {
                tracing::warn!(what, error = %e, "not written to the object store; sending the bytes to the control plane");
                (bytes, None)
            }
        }
    }

    /// Looks a trace checkpoint up through the engine.
    pub(crate) async fn lookup_checkpoint(
        &self,
        id: ActionId,
        parent: ActionId,
    ) -> Result<Checkpoint> {
        let msg = TraceLookup {
            worker: self.client.worker().to_string(),
            run: self.run_id,
            id,
            parent,
            direct: self.client.direct().is_some(),
        };
        let found = self
            .client
            .api()
            .trace_lookup(msg)
            .await
            .map_err(|e| Error::with_kind(ErrorKind::System, e))?;
        let Checkpoint::Stored(r) = found else {
            return Ok(found);
        };
        // Read here, hash-checked; an object that cannot be read is as good as none recorded:
        // the trace runs again (as when a control plane cannot read it).
        let read = match self.client.direct() {
            Some(payloads) => payloads
                .load(&r.to_payload())
                .await
                .map_err(|e| e.to_string()),
            None => Err("this worker has no object store".to_string()),
        };
        Ok(match read {
            Ok(bytes) => Checkpoint::Output(bytes.to_vec()),
            Err(why) => {
                tracing::warn!(trace = %id, object = %r.key, error = %why, "recorded trace output unreadable; running the trace again");
                Checkpoint::Nothing
            }
        })
    }

    /// Records a trace checkpoint through the engine (answered after the commit).
    pub(crate) async fn record_checkpoint(
        &self,
        id: ActionId,
        parent: ActionId,
        name: &str,
        inputs: Vec<u8>,
        started_at: i64,
        outcome: std::result::Result<Vec<u8>, Failure>,
    ) -> Result<()> {
        let key = weir_blob::PayloadKey::Inputs {
            run: &self.run_name,
            action: &id,
        };
        let (inputs, inputs_ref) = self.write_direct(key, inputs, "trace inputs").await;
        let (outcome, output_ref) = match outcome {
            Ok(bytes) => {
                let key = weir_blob::PayloadKey::LeaseOutputs {
                    run: &self.run_name,
                    action: &id,
                    attempt: 1,
                    lease: self.lease,
                };
                let (bytes, r) = self.write_direct(key, bytes, "trace output").await;
                (Ok(serde_bytes::ByteBuf::from(bytes)), r)
            }
            Err(f) => (Err(f), None),
        };
        let msg = TraceRecord {
            worker: self.client.worker().to_string(),
            run: self.run_id,
            id,
            parent,
            name: name.to_string(),
            inputs,
            started_at,
            outcome,
            inputs_ref,
            output_ref,
        };
        self.client
            .api()
            .trace_record(msg)
            .await
            .map_err(|e| Error::with_kind(ErrorKind::System, format!("trace {name}: {e}")))
    }
}
