//! What the CLI and every user binary do with `tracing`: log lines on stderr, filtered by
//! `WEIR_LOG` (an `EnvFilter`, default `warn`), and — in a binary built with the `otel` feature —
//! spans exported over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set.
//!
//! Exported: the spans at level `info` and above — every action's (`action{run, action, task}` in
//! an embedded engine, `attempt{run, action, attempt, task}` on a worker, fields as attributes)
//! and what tasks open themselves — except those of the HTTP and OpenTelemetry crates (the
//! exporter's own requests would be spans to export). The protocol is
//! `OTEL_EXPORTER_OTLP_PROTOCOL`: `http/protobuf` (the default) or `http/json`; `grpc` is refused
//! with a warning, nothing exported. `service.name` is `OTEL_SERVICE_NAME`, else `weir`. Spans go
//! out in batches from a thread of their own and what is left is flushed when the command ends.
//! An exporter that cannot send says so on stderr (one line per failure) and never stops a run.
//!
//! A binary built without the feature says once on stderr that the variable is ignored.

use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The variables that ask for spans to be exported; the first that is set.
fn requested() -> Option<&'static str> {
    [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .into_iter()
    .find(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()))
}

/// Keeps the exporter until the command ends; dropping it flushes what is left.
pub(crate) struct Guard {
    #[cfg(feature = "otel")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        #[cfg(feature = "otel")]
        if let Some(p) = self.provider.take()
            && let Err(e) = p.shutdown()
        {
            eprintln!("weir: exporting spans over OTLP: {e}");
        }
    }
}

/// Installs the subscriber; keep the guard until the command ends.
pub(crate) fn init() -> Guard {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let lines = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        // Colours only on a terminal: a worker's log file or a pipe gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(filter);
    #[cfg(feature = "otel")]
    {
        let (layer, provider) = match requested().map(|_| otel::layer()) {
            Some(Ok((layer, provider))) => (Some(layer), Some(provider)),
            Some(Err(why)) => {
                eprintln!("weir: spans are not exported: {why}");
                (None, None)
            }
            None => (None, None),
        };
        let _ = tracing_subscriber::registry()
            .with(lines)
            .with(layer)
            .try_init();
        Guard { provider }
    }
    #[cfg(not(feature = "otel"))]
    {
        if let Some(var) = requested() {
            eprintln!(
                "weir: {var} is set, but this binary was built without the `otel` feature of the weir crate: no spans are exported (build it with `--features weir/otel`)"
            );
        }
        let _ = tracing_subscriber::registry().with(lines).try_init();
        Guard {}
    }
}

#[cfg(feature = "otel")]
mod otel {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::{Protocol, WithExportConfig};
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::Layer;
    use tracing_subscriber::registry::LookupSpan;

    /// The exporting layer (filtered) and its provider.
    pub(super) fn layer<S>() -> Result<(Box<dyn Layer<S> + Send + Sync>, SdkTracerProvider), String>
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    {
        let protocol = match std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL").as_deref() {
            Err(_) | Ok("http/protobuf") | Ok("") => Protocol::HttpBinary,
            Ok("http/json") => Protocol::HttpJson,
            Ok(other) => {
                return Err(format!(
                    "OTEL_EXPORTER_OTLP_PROTOCOL={other:?} is not supported (http/protobuf or http/json)"
                ));
            }
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(protocol)
            .build()
            .map_err(|e| format!("the OTLP exporter: {e}"))?;
        let mut resource = Resource::builder();
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name("weir");
        }
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build();
        let tracer = provider.tracer("weir");
        // Not the HTTP client's and exporter's own spans (they would feed back), nor debug ones.
        let filter = tracing_subscriber::EnvFilter::new(
            "info,h2=off,hyper=off,hyper_util=off,reqwest=off,tower=off,opentelemetry=off,opentelemetry_sdk=off,opentelemetry_otlp=off,opentelemetry_http=off",
        );
        let layer = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(filter)
            .boxed();
        Ok((layer, provider))
    }
}
