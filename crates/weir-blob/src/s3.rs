//! `s3://BUCKET[/PREFIX]` stores: Amazon S3 or an S3-compatible server, through object_store's
//! AWS backend. Region, credentials and endpoint come from `AWS_*` variables as
//! [`AmazonS3Builder::from_env`] reads them; payload keys live under the prefix.

use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStore;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::list::{PaginatedListOptions, PaginatedListStore};
use object_store::path::Path;
use object_store::prefix::PrefixStore;

use crate::{Error, Result};

/// The variable that names an S3-compatible server instead of AWS (e.g. `http://127.0.0.1:9000`;
/// `AWS_ENDPOINT_URL_S3` too).
const ENDPOINT_VAR: &str = "AWS_ENDPOINT_URL";

/// How long the check made when a store is opened keeps retrying an endpoint that does not
/// answer (payload reads and writes keep object_store's default, 3 minutes).
const PROBE_RETRY_TIMEOUT: Duration = Duration::from_secs(10);

/// A bucket and prefix with the settings to reach them.
pub(crate) struct Bucket {
    /// The settings read from the environment, with the bucket's name.
    builder: AmazonS3Builder,
    name: String,
    /// `None`: the bucket's root.
    prefix: Option<Path>,
    /// The server, for error messages: the endpoint override or AWS's regional endpoint.
    endpoint: String,
}

impl Bucket {
    /// Parses `s3://BUCKET[/PREFIX]` (`rest` is what follows `s3://`) and reads the `AWS_*`
    /// variables of `env`. An endpoint given as `http://` is allowed to be plain HTTP unless
    /// `AWS_ALLOW_HTTP` says otherwise.
    pub(crate) fn parse(
        url: &str,
        rest: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Bucket> {
        let bad = |reason: String| Error::BadUrl {
            url: url.to_string(),
            reason,
        };
        let (name, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        {
            return Err(bad(
                "s3:// URLs are s3://BUCKET[/PREFIX], the bucket named with letters, digits, '.', '-' and '_'".into(),
            ));
        }
        let prefix = prefix.strip_suffix('/').unwrap_or(prefix);
        let prefix = if prefix.is_empty() {
            None
        } else {
            if prefix.contains(['?', '#', '\\'])
                || prefix
                    .split('/')
                    .any(|seg| seg.is_empty() || seg == "." || seg == "..")
            {
                return Err(bad(format!(
                    "the prefix {prefix:?} must be plain path segments (no empty, '.' or '..' segment, no '?', '#' or '\\')"
                )));
            }
            Some(Path::parse(prefix).map_err(|e| bad(format!("the prefix {prefix:?}: {e}")))?)
        };
        let mut builder = AmazonS3Builder::new();
        let mut allow_http_set = false;
        for (key, value) in env {
            if !key.starts_with("AWS_") {
                continue;
            }
            allow_http_set |= key == "AWS_ALLOW_HTTP";
            if let Ok(config) = key.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
                builder = builder.with_config(config, value);
            }
        }
        builder = builder.with_bucket_name(name);
        // `AWS_ENDPOINT_URL_S3` wins over `AWS_ENDPOINT_URL`, as in object_store.
        let endpoint = builder
            .get_config_value(&AmazonS3ConfigKey::S3Endpoint)
            .or_else(|| builder.get_config_value(&AmazonS3ConfigKey::Endpoint));
        if !allow_http_set
            && endpoint
                .as_deref()
                .is_some_and(|e| e.starts_with("http://"))
        {
            builder = builder.with_allow_http(true);
        }
        let endpoint = endpoint.unwrap_or_else(|| {
            let region = builder
                .get_config_value(&AmazonS3ConfigKey::Region)
                .unwrap_or_else(|| "us-east-1".into());
            format!(
                "https://s3.{region}.amazonaws.com (AWS; set {ENDPOINT_VAR} for another server)"
            )
        });
        Ok(Bucket {
            builder,
            name: name.to_string(),
            prefix,
            endpoint,
        })
    }

    /// The store payloads are read from and written to: the bucket seen from its prefix.
    pub(crate) fn store(&self, url: &str) -> Result<Arc<dyn ObjectStore>> {
        let s3 = self.builder.clone().build().map_err(|e| Error::BadUrl {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
        Ok(match &self.prefix {
            Some(prefix) => Arc::new(PrefixStore::new(s3, prefix.clone())),
            None => Arc::new(s3),
        })
    }

    /// Lists at most one key under the prefix: fails when the bucket does not exist, the
    /// endpoint does not answer or the credentials may not list it. A client of its own, so
    /// that it can run on a runtime of its own (see `BlobStore::check_blocking`).
    pub(crate) async fn check(&self, url: &str) -> Result<()> {
        let retry = object_store::RetryConfig {
            retry_timeout: PROBE_RETRY_TIMEOUT,
            ..Default::default()
        };
        let probe = self
            .builder
            .clone()
            .with_retry(retry)
            .build()
            .map_err(|e| Error::BadUrl {
                url: url.to_string(),
                reason: e.to_string(),
            })?;
        let prefix = self.prefix.as_ref().map(|p| format!("{p}/"));
        let options = PaginatedListOptions {
            max_keys: Some(1),
            ..Default::default()
        };
        match probe.list_paginated(prefix.as_deref(), options).await {
            Ok(_) => Ok(()),
            Err(source) => Err(Error::Unavailable {
                store: url.to_string(),
                bucket: self.name.clone(),
                endpoint: self.endpoint.clone(),
                problem: problem(&source.to_string()),
                source: Box::new(source),
            }),
        }
    }
}

/// The gist of a failed list request: S3's error code and message when the server answered
/// with one (object_store's text carries the whole XML body), else the error's first line.
fn problem(error: &str) -> String {
    let element = |name: &str| {
        let start = error.find(&format!("<{name}>"))? + name.len() + 2;
        let len = error[start..].find(&format!("</{name}>"))?;
        Some(error[start..start + len].trim().to_string())
    };
    match (element("Code"), element("Message")) {
        (Some(code), _) if code == "NoSuchBucket" => "does not exist (NoSuchBucket)".into(),
        (Some(code), Some(message)) => format!("cannot be listed: {code}: {message}"),
        (Some(code), None) => format!("cannot be listed: {code}"),
        _ => format!(
            "cannot be listed: {}",
            error.lines().next().unwrap_or_default().trim()
        ),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_failed_list_is_summed_up_by_its_s3_code() {
        let body = "Error performing GET http://h/b?list-type=2 - 403 Forbidden: <?xml?>\n<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>";
        assert_eq!(
            super::problem(body),
            "cannot be listed: AccessDenied: Access Denied"
        );
        assert_eq!(
            super::problem("<Error><Code>NoSuchBucket</Code></Error>"),
            "does not exist (NoSuchBucket)"
        );
        assert_eq!(
            super::problem("error sending request\nconnection refused"),
            "cannot be listed: error sending request"
        );
    }
}
