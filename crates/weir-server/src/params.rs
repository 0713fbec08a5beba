//! Query-string and path parameters, checked with messages that say what was wrong.

use std::collections::HashMap;

use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use weir_core::{ActionId, ActionStatus};
use weir_store::{Page, RunStatus};

use crate::MAX_PAGE;
use crate::app::ApiError;

/// Default page size.
pub(crate) const DEFAULT_LIMIT: u32 = 100;

/// The query string of a request, with the names a route accepts.
pub(crate) struct Params {
    values: HashMap<String, String>,
}

impl Params {
    /// Checks that only `known` names are present.
    pub(crate) fn new(
        query: Result<Query<HashMap<String, String>>, QueryRejection>,
        known: &[&str],
    ) -> Result<Params, ApiError> {
        let Query(values) =
            query.map_err(|e| ApiError::bad_request(format!("malformed query string: {e}")))?;
        if let Some(unknown) = values.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(ApiError::bad_request(format!(
                "unknown parameter {unknown:?}; this endpoint takes {}",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )));
        }
        Ok(Params { values })
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .map(|s| s.as_str())
            .filter(|s| !s.is_empty())
    }

    /// An unsigned integer in `min..=max`, or `default`.
    pub(crate) fn number(
        &self,
        name: &str,
        default: u64,
        min: u64,
        max: u64,
    ) -> Result<u64, ApiError> {
        let Some(raw) = self.get(name) else {
            return Ok(default);
        };
        match raw.parse::<u64>() {
            Ok(v) if (min..=max).contains(&v) => Ok(v),
            _ => Err(ApiError::bad_request(format!(
                "{name}={raw:?} is not a whole number from {min} to {max}"
            ))),
        }
    }

    /// `offset` and `limit` (1..=[`MAX_PAGE`], default [`DEFAULT_LIMIT`]).
    pub(crate) fn page(&self) -> Result<Page, ApiError> {
        Ok(Page {
            offset: self.number("offset", 0, 0, i64::MAX as u64)?,
            limit: self.number("limit", DEFAULT_LIMIT as u64, 1, MAX_PAGE as u64)? as u32,
        })
    }

    /// A free-text filter of at most 200 characters.
    pub(crate) fn text(&self, name: &str) -> Result<Option<String>, ApiError> {
        match self.get(name) {
            Some(s) if s.chars().count() > 200 => Err(ApiError::bad_request(format!(
                "{name} is longer than 200 characters"
            ))),
            other => Ok(other.map(str::to_string)),
        }
    }

    /// `status` as a run status.
    pub(crate) fn run_status(&self) -> Result<Option<RunStatus>, ApiError> {
        self.get("status")
            .map(|s| {
                RunStatus::parse(s).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "status={s:?} is not a run status; use running, succeeded, failed or aborted"
                    ))
                })
            })
            .transpose()
    }

    /// `status` as an action status.
    pub(crate) fn action_status(&self) -> Result<Option<ActionStatus>, ApiError> {
        self.get("status")
            .map(|s| {
                ActionStatus::parse(s).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "status={s:?} is not an action status; use {}",
                        ActionStatus::ALL.map(|s| s.as_str()).join(", ")
                    ))
                })
            })
            .transpose()
    }
}

/// An action id from a path (`a0` or 16 hex digits).
pub(crate) fn action_id(raw: &str) -> Result<ActionId, ApiError> {
    ActionId::parse(raw).ok_or_else(|| {
        ApiError::bad_request(format!(
            "{raw:?} is not an action id; ids are \"a0\" (the root) or 16 hex digits"
        ))
    })
}
