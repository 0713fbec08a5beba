//! Who may speak the worker protocol (SPEC §12): nobody but the workers the engine admitted.
//!
//! Two kinds of credential:
//!
//! - the **admission secret**: made at random by the engine when its worker API starts, and
//!   handed to each worker it launches *outside its command line* (on the worker's stdin,
//!   which the engine keeps open: see `pool.rs`), so other users of the machine cannot read it
//!   in `ps`. A worker presents it once, at registration ([`WorkerApi::register`]), with its
//!   worker id; the engine admits only ids it launched and not yet retired.
//! - a **worker token**: issued at registration, one per worker, and presented on every other
//!   request. The token names the worker: a request that names another worker is refused
//!   (403), one without a known token is refused (401), before its body is read.
//!
//! Only hashes of both are kept (blake3, compared in constant time), so a memory dump of the
//! table does not give a credential away. Cluster mode keeps the same shape: its admission
//! credential is a worker-role token of the project instead of an engine's secret.
//!
//! [`WorkerApi::register`]: super::WorkerApi::register

use std::collections::HashMap;

use parking_lot::RwLock;

/// A credential as sent: 32 random bytes in lower-case hex.
pub(crate) fn random_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The admission secret and the worker tokens of one engine (or of a cluster).
pub(crate) struct Credentials {
    admission: blake3::Hash,
    tokens: Tokens,
}

enum Tokens {
    /// Hash of each issued token → the worker it names (an engine's own workers).
    Issued(RwLock<HashMap<blake3::Hash, String>>),
    /// Tokens `WORKER.MAC`, the MAC keyed by a key derived from the cluster token: every
    /// replica of a control plane checks them without shared state. They stay valid as long
    /// as the cluster token does (revoking one worker means changing the cluster token).
    Derived([u8; 32]),
}

impl Credentials {
    /// Credentials admitting whoever presents `secret`.
    pub(crate) fn new(secret: &str) -> Credentials {
        Credentials {
            admission: blake3::hash(secret.as_bytes()),
            tokens: Tokens::Issued(RwLock::new(HashMap::new())),
        }
    }

    /// Credentials of a cluster: `token` admits workers and clients, and worker tokens are
    /// derived from it (the same on every replica).
    pub(crate) fn cluster(token: &str) -> Credentials {
        Credentials {
            admission: blake3::hash(token.as_bytes()),
            tokens: Tokens::Derived(blake3::derive_key(
                "weir cluster worker token v1",
                token.as_bytes(),
            )),
        }
    }

    fn mac(key: &[u8; 32], worker: &str) -> blake3::Hash {
        blake3::keyed_hash(key, worker.as_bytes())
    }

    /// Whether `presented` is the admission secret (constant-time comparison).
    pub(crate) fn admits(&self, presented: &str) -> bool {
        blake3::hash(presented.as_bytes()) == self.admission
    }

    /// Issues the token of `worker`, replacing one it had.
    pub(crate) fn issue(&self, worker: &str) -> Result<String, getrandom::Error> {
        let tokens = match &self.tokens {
            Tokens::Issued(tokens) => tokens,
            Tokens::Derived(key) => {
                return Ok(format!("{worker}.{}", Self::mac(key, worker).to_hex()));
            }
        };
        let token = random_token()?;
        let mut tokens = tokens.write();
        tokens.retain(|_, w| w != worker);
        tokens.insert(blake3::hash(token.as_bytes()), worker.to_string());
        Ok(token)
    }

    /// The worker a token names, if it was issued and not revoked.
    pub(crate) fn identify(&self, token: &str) -> Option<String> {
        match &self.tokens {
            Tokens::Issued(tokens) => tokens.read().get(&blake3::hash(token.as_bytes())).cloned(),
            Tokens::Derived(key) => {
                let (worker, mac) = token.rsplit_once('.')?;
                let mac = blake3::Hash::from_hex(mac).ok()?;
                // `Hash` compares in constant time.
                (Self::mac(key, worker) == mac).then(|| worker.to_string())
            }
        }
    }

    /// Revokes the token of `worker` (it retired or was presumed dead). Derived tokens of a
    /// cluster cannot be revoked one by one.
    pub(crate) fn revoke(&self, worker: &str) {
        if let Tokens::Issued(tokens) = &self.tokens {
            tokens.write().retain(|_, w| w != worker);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_admission_secret_admits() {
        let secret = random_token().unwrap();
        let c = Credentials::new(&secret);
        assert!(c.admits(&secret));
        assert!(!c.admits(""));
        assert!(!c.admits(&secret[..63]));
        assert!(!c.admits(&random_token().unwrap()));
    }

    #[test]
    fn cluster_tokens_name_their_worker_and_are_the_same_on_every_replica() {
        let a = Credentials::cluster("cluster secret");
        let b = Credentials::cluster("cluster secret");
        assert!(a.admits("cluster secret") && !a.admits("cluster"));
        let t = a.issue("host-1").unwrap();
        assert_eq!(b.identify(&t).as_deref(), Some("host-1"));
        // Another worker's name with this MAC, a changed MAC, another cluster: refused.
        let mac = t.rsplit_once('.').unwrap().1;
        assert_eq!(b.identify(&format!("host-2.{mac}")), None);
        assert_eq!(b.identify(&format!("host-1.{}", &mac[1..])), None);
        assert_eq!(b.identify("host-1"), None);
        assert_eq!(Credentials::cluster("other").identify(&t), None);
    }

    #[test]
    fn a_token_names_its_worker_until_revoked_or_reissued() {
        let c = Credentials::new("s");
        let t1 = c.issue("w1").unwrap();
        let t2 = c.issue("w2").unwrap();
        assert_ne!(t1, t2);
        assert_eq!(c.identify(&t1).as_deref(), Some("w1"));
        assert_eq!(c.identify(&t2).as_deref(), Some("w2"));
        assert_eq!(c.identify("w1"), None);
        assert_eq!(c.identify(""), None);
        // Registering again replaces the old token.
        let t1b = c.issue("w1").unwrap();
        assert_eq!(c.identify(&t1), None);
        assert_eq!(c.identify(&t1b).as_deref(), Some("w1"));
        c.revoke("w1");
        assert_eq!(c.identify(&t1b), None);
        assert_eq!(c.identify(&t2).as_deref(), Some("w2"));
    }
}
