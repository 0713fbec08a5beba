//! Run ownership: the engine instance that drives a run, recorded with the epoch of its claim
//! (SPEC §4.2). An owner id is `<host>:<pid>:<nonce>`, so a restarted process with a reused pid
//! is not mistaken for the one that died; a live owner says so every few seconds.

use std::sync::Arc;
use std::time::Duration;

use weir_core::clock::now_us;
use weir_store::WriteOp;

use super::{Engine, WeakEngine};

/// How often a driving engine records that it is alive.
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(2);

/// An owner silent this long is presumed gone (five heartbeats).
pub(crate) const PRESUMED_GONE: Duration = Duration::from_secs(10);

/// This engine instance as an owner of runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct OwnerId {
    pub host: String,
    pub pid: u32,
    pub nonce: String,
}

impl OwnerId {
    /// A new identity for this engine instance.
    pub(crate) fn generate() -> OwnerId {
        let now = now_us();
        let nonce = blake3::hash(format!("{now}{}{:p}", std::process::id(), &now).as_bytes());
        OwnerId {
            host: this_host(),
            pid: std::process::id(),
            nonce: nonce.to_hex()[..8].to_string(),
        }
    }

    /// Parses a recorded owner (`host:pid:nonce`, or `pid N` from schema 1).
    pub(crate) fn parse(s: &str) -> Option<OwnerId> {
        if let Some(pid) = s.strip_prefix("pid ") {
            return Some(OwnerId {
                host: this_host(),
                pid: pid.parse().ok()?,
                nonce: String::new(),
            });
        }
        let mut parts = s.rsplitn(3, ':');
        let nonce = parts.next()?.to_string();
        let pid = parts.next()?.parse().ok()?;
        let host = parts.next()?.to_string();
        Some(OwnerId { host, pid, nonce })
    }
}

impl std::fmt::Display for OwnerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.host, self.pid, self.nonce)
    }
}

fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Whether process `pid` of this host exists.
pub(crate) fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

impl Engine {
    /// Starts recording that this engine is alive (once, when it first drives a run).
    pub(super) fn start_heartbeat(&self) {
        if self
            .inner
            .heartbeat_started
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return;
        }
        let weak = WeakEngine(Arc::downgrade(&self.inner));
        let owner = self.inner.owner.to_string();
        tokio::spawn(async move {
            loop {
                let Some(engine) = weak.upgrade() else { return };
                engine.inner.store.write(WriteOp::OwnerAlive {
                    owner: owner.clone(),
                    at: now_us(),
                });
                drop(engine);
                tokio::time::sleep(HEARTBEAT).await;
            }
        });
    }
}
