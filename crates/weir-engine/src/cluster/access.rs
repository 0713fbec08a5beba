//! Who may do what on a control plane (SPEC §12.3).
//!
//! Two kinds of bearer token:
//!
//! - the **cluster token** (`serve --token-file`): an admin of every project. It is what
//!   `serve` was started with, the same on every replica.
//! - **access tokens** (`weir token create --project P [--domain D] --role R`): printed once,
//!   only their blake3 hash is stored (table `tokens`). A `client` token starts, lists,
//!   follows, aborts and reads the runs of its project (and domain, when it names one) and
//!   lists its project's cache entries; a `worker` token registers workers that lease only its
//!   project's actions; an `admin` token does both. Runs of a token bound to a project look up
//!   the cache only within their project and domain (whatever scope the run asked for), so
//!   they never see another project's entries.
//!
//! What needs the cluster token: `/metrics` (it names every project's queues), clearing the
//! cache (entries of every project) and the web UI (it shows every project's runs; a UI per
//! project is not yet). A request without a known token is refused with 401, a known token
//! asking for what its role or project does not allow with 403.
//!
//! A replica remembers what a token resolved to for [`REMEMBER`], so a revoked token stops
//! working on every replica within that time, without a database read per request.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use parking_lot::Mutex;
use weir_store::{DEFAULT_DOMAIN, DEFAULT_PROJECT, RunRecord, Store, TokenRecord};

use super::runs::Refusal;

/// How long a replica trusts what a token resolved to.
pub const REMEMBER: Duration = Duration::from_secs(2);

/// Tokens remembered at most (the table is emptied when full: unknown tokens cannot grow it).
const REMEMBERED: usize = 10_000;

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Runs and cache entries of its project.
    Client,
    /// Workers of its project.
    Worker,
    /// Both.
    Admin,
}

impl Role {
    /// The role named `s` (`client`, `worker`, `admin`).
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "client" => Some(Role::Client),
            "worker" => Some(Role::Worker),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Worker => "worker",
            Role::Admin => "admin",
        }
    }
}

/// Who presented a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// What it may do.
    pub role: Role,
    /// The project it is bound to; `None`: every project (the cluster token).
    pub project: Option<String>,
    /// The domain it is bound to, if any.
    pub domain: Option<String>,
}

fn forbidden(message: String) -> Refusal {
    (StatusCode::FORBIDDEN, message)
}

impl Principal {
    /// The holder of the cluster token.
    pub fn cluster() -> Principal {
        Principal {
            role: Role::Admin,
            project: None,
            domain: None,
        }
    }

    fn describe(&self) -> String {
        match (&self.project, &self.domain) {
            (None, _) => "the cluster token".into(),
            (Some(p), None) => format!("a {} token of project {p}", self.role.as_str()),
            (Some(p), Some(d)) => {
                format!("a {} token of project {p}, domain {d}", self.role.as_str())
            }
        }
    }

    /// Refuses (403) unless this principal may act as a client: start, follow, read runs.
    pub(crate) fn as_client(&self, doing: &str) -> Result<(), Refusal> {
        match self.role {
            Role::Client | Role::Admin => Ok(()),
            Role::Worker => Err(forbidden(format!(
                "{doing} needs a client or admin token; this is {}",
                self.describe()
            ))),
        }
    }

    /// Refuses (403) unless this principal may register workers.
    pub(crate) fn as_worker(&self) -> Result<(), Refusal> {
        match self.role {
            Role::Worker | Role::Admin => Ok(()),
            Role::Client => Err(forbidden(format!(
                "registering a worker needs a worker or admin token; this is {}",
                self.describe()
            ))),
        }
    }

    /// Refuses (403) unless this is the cluster token.
    pub(crate) fn as_cluster(&self, doing: &str) -> Result<(), Refusal> {
        match self.project {
            None => Ok(()),
            Some(_) => Err(forbidden(format!(
                "{doing} needs the cluster token (it concerns every project); this is {}",
                self.describe()
            ))),
        }
    }

    /// Whether the runs of `project`/`domain` are this principal's.
    pub fn sees(&self, project: &str, domain: &str) -> bool {
        self.project.as_deref().is_none_or(|p| p == project)
            && self.domain.as_deref().is_none_or(|d| d == domain)
    }

    /// Refuses (403) a run of another project or domain.
    pub(crate) fn check_run(&self, run: &RunRecord) -> Result<(), Refusal> {
        let (project, domain) = project_domain(&run.context);
        if self.sees(project, domain) {
            return Ok(());
        }
        Err(forbidden(format!(
            "run {} belongs to project {project}, domain {domain}; this is {}",
            run.name,
            self.describe()
        )))
    }

    /// The project a worker registered with this token serves.
    pub(crate) fn worker_project(&self) -> &str {
        self.project.as_deref().unwrap_or(DEFAULT_PROJECT)
    }

    /// Fills in the project and domain of a run context this principal submits (its own when
    /// the context names none) and refuses others; a run of a token bound to a project looks
    /// up the cache only within its project and domain.
    pub(crate) fn place_run(&self, context: &mut crate::RunContext) -> Result<(), Refusal> {
        if context.project.is_none() {
            context.project = self.project.clone();
        }
        if context.domain.is_none() {
            context.domain = self.domain.clone();
        }
        let project = context.project.as_deref().unwrap_or(DEFAULT_PROJECT);
        let domain = context.domain.as_deref().unwrap_or(DEFAULT_DOMAIN);
        if !self.sees(project, domain) {
            return Err(forbidden(format!(
                "cannot start a run in project {project}, domain {domain} with {}",
                self.describe()
            )));
        }
        if self.project.is_some() {
            context.cache_lookup_scope = crate::CacheLookupScope::ProjectDomain;
        }
        Ok(())
    }
}

/// The project and domain a run's recorded context names (the defaults when it names none).
pub(crate) fn project_domain(context: &serde_json::Value) -> (&str, &str) {
    (
        context["project"].as_str().unwrap_or(DEFAULT_PROJECT),
        context["domain"].as_str().unwrap_or(DEFAULT_DOMAIN),
    )
}

/// A new access token: `weir_` and 32 random bytes in hex.
pub fn new_token() -> Result<String, String> {
    crate::worker::admission_secret().map(|t| format!("weir_{t}"))
}

/// What the store keeps of a token.
pub fn token_hash(token: &str) -> String {
    blake3::hash(token.as_bytes()).to_hex().to_string()
}

/// Checks a project or domain name: 1–63 letters, digits, `_` or `-`, not starting with `-`.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "bad {what} name {name:?}: use 1 to 63 letters, digits, '_' or '-', not starting with '-'"
        ))
    }
}

/// Makes an access token and records its hash; returns the token (shown once) and its record.
pub async fn create_token(
    store: &dyn Store,
    project: &str,
    domain: Option<&str>,
    role: Role,
) -> Result<(String, TokenRecord), String> {
    check_name("project", project)?;
    if let Some(d) = domain {
        check_name("domain", d)?;
    }
    let token = new_token()?;
    let record = TokenRecord {
        hash: token_hash(&token),
        project: project.to_string(),
        domain: domain.map(str::to_string),
        role: role.as_str().to_string(),
        created_at: weir_core::clock::now_us(),
    };
    store
        .create_token(&record)
        .await
        .map_err(|e| e.to_string())?;
    Ok((token, record))
}

/// Resolves bearer tokens to principals for one replica.
pub(crate) struct Access {
    cluster: blake3::Hash,
    store: Arc<dyn Store>,
    remembered: Mutex<HashMap<blake3::Hash, (Instant, Option<Principal>)>>,
}

impl Access {
    pub(crate) fn new(cluster_token: &str, store: Arc<dyn Store>) -> Access {
        Access {
            cluster: blake3::hash(cluster_token.as_bytes()),
            store,
            remembered: Mutex::default(),
        }
    }

    /// Who `token` is; `None` for a token no one made (or one revoked).
    pub(crate) async fn principal(&self, token: &str) -> Result<Option<Principal>, String> {
        let hash = blake3::hash(token.as_bytes());
        // `Hash` compares in constant time.
        if hash == self.cluster {
            return Ok(Some(Principal::cluster()));
        }
        if let Some((at, p)) = self.remembered.lock().get(&hash)
            && at.elapsed() < REMEMBER
        {
            return Ok(p.clone());
        }
        let record = self
            .store
            .token(hash.to_hex().as_str())
            .await
            .map_err(|e| e.to_string())?;
        let principal = record.and_then(|r| {
            Some(Principal {
                role: Role::parse(&r.role)?,
                project: Some(r.project),
                domain: r.domain,
            })
        });
        let mut remembered = self.remembered.lock();
        if remembered.len() >= REMEMBERED {
            remembered.clear();
        }
        remembered.insert(hash, (Instant::now(), principal.clone()));
        Ok(principal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(role: Role, project: Option<&str>, domain: Option<&str>) -> Principal {
        Principal {
            role,
            project: project.map(Into::into),
            domain: domain.map(Into::into),
        }
    }

    #[test]
    fn roles_allow_their_own_routes_only() {
        let client = of(Role::Client, Some("a"), None);
        let worker = of(Role::Worker, Some("a"), None);
        let admin = of(Role::Admin, Some("a"), None);
        assert!(client.as_client("x").is_ok() && client.as_worker().is_err());
        assert!(worker.as_worker().is_ok());
        let (status, message) = worker.as_client("listing runs").unwrap_err();
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(message.contains("a worker token of project a"), "{message}");
        assert!(admin.as_client("x").is_ok() && admin.as_worker().is_ok());
        assert!(admin.as_cluster("metrics").is_err());
        assert!(Principal::cluster().as_cluster("metrics").is_ok());
    }

    #[test]
    fn a_project_token_sees_its_project_and_domain_only() {
        let a = of(Role::Client, Some("a"), None);
        assert!(a.sees("a", "development") && a.sees("a", "prod"));
        assert!(!a.sees("b", "development"));
        let ad = of(Role::Client, Some("a"), Some("prod"));
        assert!(ad.sees("a", "prod") && !ad.sees("a", "development"));
        assert!(Principal::cluster().sees("b", "x"));
    }

    #[test]
    fn runs_are_placed_in_the_tokens_project_and_look_up_its_cache_only() {
        let a = of(Role::Client, Some("a"), Some("prod"));
        let mut ctx = crate::RunContext::new();
        a.place_run(&mut ctx).unwrap();
        assert_eq!(ctx.project.as_deref(), Some("a"));
        assert_eq!(ctx.domain.as_deref(), Some("prod"));
        assert_eq!(
            ctx.cache_lookup_scope,
            crate::CacheLookupScope::ProjectDomain
        );
        let mut other = crate::RunContext::new().project_domain("b", "prod");
        assert_eq!(
            a.place_run(&mut other).unwrap_err().0,
            StatusCode::FORBIDDEN
        );
        // The cluster token places runs where they ask, with the scope they ask for.
        let mut ctx = crate::RunContext::new().project_domain("b", "x");
        Principal::cluster().place_run(&mut ctx).unwrap();
        assert_eq!(ctx.cache_lookup_scope, crate::CacheLookupScope::Global);
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("project", "ml-team_2").is_ok());
        for bad in ["", "-x", "a/b", "a.b", "é", &"x".repeat(64)] {
            let e = check_name("project", bad).unwrap_err();
            assert!(e.contains("bad project name"), "{e}");
        }
    }
}
