//! OpenTelemetry tracing (feature `otel`), as Kitex's obs-opentelemetry gives it: the
//! [`OpenTelemetry`] middleware opens a span for every sampled call on a server or a
//! client, through the `tracing` crate, and [`Exporter`] bridges those spans to
//! OpenTelemetry and exports them over OTLP/HTTP (protobuf, `POST /v1/traces`).
//!
//! ```no_run
//! use netpoll_rpc::otel::{Exporter, OpenTelemetry};
//! use netpoll_rpc::server::Server;
//!
//! // Once per process: spans go to an OTLP collector, logs to stderr.
//! let _telemetry = Exporter::new("http://127.0.0.1:4318")
//!     .service_name("hello-service")
//!     .install()
//!     .expect("exporter");
//! let builder = Server::builder().middleware(OpenTelemetry::default());
//! # let _ = builder;
//! ```
//!
//! - **Trace context.** A server span's parent is the caller's span, read from the
//!   TTHeader string headers `traceparent` and `tracestate` (or Kitex's
//!   `RPC_TRANSIT_traceparent`). A client span is a child of the span the client is made
//!   within (`Client::within` a call being served, `Client::with_trace`, or else the
//!   current `tracing` span if OpenTelemetry knows it), and its id is sent on as the
//!   request's `traceparent` (and `RPC_TRANSIT_traceparent`, for Kitex servers).
//! - **One decision per trace.** A server that starts a trace keeps its decision for the
//!   calls made within the call, so that a trace is followed end to end or not at all.
//! - **Sampling** ([`Sampler`]) is parent-based by default: a call whose caller sampled
//!   its span is followed, one whose caller did not is not, and a new trace is followed
//!   with a set probability. An unsampled call gets no span and costs no allocation on a
//!   server; a client passes the decision on (`traceparent` with flags `00`).
//! - **Spans** follow OpenTelemetry's RPC semantic conventions: named
//!   `{service}/{method}`, kind server or client, with `rpc.system` (`apache_thrift` or
//!   `kitex_protobuf`, as the metrics say), `rpc.service`, `rpc.method`, the peer's
//!   address, and on failure status `ERROR` with `error.type` (the
//!   [`ErrorKind`](crate::ErrorKind) name).
//! - **Export** runs on the batch processor's own thread, over a blocking HTTP/1.1 client
//!   of this crate: no async runtime, no event-loop thread ever waits for the collector.
//!   The queue is bounded (spans beyond it are dropped and counted by the SDK).
//!   `http://` collectors, or `https://` ones with [`Exporter::tls`] (feature `tls`).
//! - **Logs.** A server span is entered while its handler runs: what the handler logs
//!   through `tracing` is inside it (with its `trace_id`, and as an event of the exported
//!   span).
//! - **Not yet:** a retried call has one client span (not one per try); a server span
//!   starts when the middleware runs (after the request is decoded), not when its bytes
//!   arrived; work a handler does after deferring its reply is outside the span.

use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::Layer;

use crate::trace::TraceContext;
use crate::wire::Payload;
use crate::{CallInfo, Metadata, Middleware, Outcome, Side, Status};

/// Which calls get a span.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampler {
    /// Follow the caller: a call whose caller sampled its span is sampled, one whose
    /// caller did not is not; a call that starts a trace is sampled with this probability
    /// (0.0 to 1.0).
    ParentBased(f64),
    /// Every call, whatever the caller decided.
    Always,
    /// No call.
    Never,
}

impl Default for Sampler {
    /// Parent-based, sampling every new trace.
    fn default() -> Self {
        Sampler::ParentBased(1.0)
    }
}

/// Whether a call that starts a trace is sampled, `ratio` (0.0 to 1.0) of the time, on a
/// random draw (`TraceIdRatioBased` decides on the trace id alike: its low bits are
/// random too). At 0 and 1 nothing is drawn.
fn ratio_sampled(ratio: f64, draw: impl FnOnce() -> u64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    if ratio.is_nan() || ratio <= 0.0 {
        return false;
    }
    // Compare on 63 bits, as the specification's reference samplers do.
    let bound = (ratio * (1u64 << 63) as f64) as u64;
    (draw() >> 1) < bound
}

/// The tracing middleware: a span per sampled call, on a server or a client. Install it
/// with `ServerBuilder::middleware` and `ClientBuilder::middleware`, and an [`Exporter`]
/// (or any `tracing` subscriber with a `tracing-opentelemetry` layer) once per process.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenTelemetry {
    sampler: Sampler,
}

impl OpenTelemetry {
    /// A tracing middleware sampling with `sampler`.
    pub fn with_sampler(sampler: Sampler) -> Self {
        OpenTelemetry { sampler }
    }
}

/// The `rpc.system` attribute of a call (the same value as the metrics' `rpc_system`):
/// `grpc` for gRPC calls.
fn system(p: Payload, t: crate::wire::Transport) -> &'static str {
    match p {
        _ if t == crate::wire::Transport::Custom(crate::server::GRPC_TRANSPORT) => "grpc",
        Payload::Protobuf => "kitex_protobuf",
        _ => "apache_thrift",
    }
}

/// The OpenTelemetry context of a span known by its W3C trace context.
fn remote(parent: &TraceContext) -> opentelemetry::Context {
    let state = parent
        .state
        .as_deref()
        .and_then(|s| TraceState::from_str(s).ok())
        .unwrap_or_default();
    opentelemetry::Context::new().with_remote_span_context(SpanContext::new(
        TraceId::from_bytes(parent.trace_id),
        SpanId::from_bytes(parent.span_id),
        TraceFlags::new(parent.flags),
        true,
        state,
    ))
}

/// The W3C trace context of an OpenTelemetry span, with `state` (the inverse of
/// [`remote`]).
fn from_otel(sc: &SpanContext, state: Option<String>) -> TraceContext {
    TraceContext {
        trace_id: sc.trace_id().to_bytes(),
        span_id: sc.span_id().to_bytes(),
        flags: sc.trace_flags().to_u8(),
        state,
    }
}

/// The current `tracing` span's OpenTelemetry context, if it has one.
fn current() -> Option<TraceContext> {
    let span = tracing::Span::current();
    if span.is_none() {
        return None;
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    if !sc.is_valid() {
        return None;
    }
    let state = sc.trace_state().header();
    Some(from_otel(&sc, (!state.is_empty()).then_some(state)))
}

/// A span of the call, disabled when no subscriber wants it.
fn span(call: &CallInfo<'_>) -> tracing::Span {
    let kind = match call.side {
        Side::Server => "server",
        Side::Client => "client",
    };
    let (address, port) = match call.peer {
        Some(a) => (Some(a.ip().to_string()), Some(i64::from(a.port()))),
        None => (None, None),
    };
    tracing::info_span!(
        target: "netpoll_rpc::otel",
        "rpc",
        otel.name = %format_args!("{}/{}", call.service, call.method),
        otel.kind = kind,
        otel.status_code = Empty,
        rpc.system = system(call.payload, call.transport),
        rpc.service = call.service,
        rpc.method = call.method,
        network.transport = "tcp",
        network.peer.address = address,
        network.peer.port = port,
        server.address = Empty,
        server.port = Empty,
        rpc.request.size = Empty,
        rpc.response.size = Empty,
        error.type = Empty,
        trace_id = Empty,
    )
}

impl Middleware for OpenTelemetry {
    /// The call's span, if it is sampled.
    type State = Option<tracing::Span>;

    fn start(&self, call: &CallInfo<'_>, meta: &mut Metadata) -> Result<Self::State, Status> {
        // The caller's span: on a server, from the request (its `tracestate` is copied
        // out only if the call is sampled); on a client, the span it is made within, or
        // else the current `tracing` span, if OpenTelemetry knows it.
        let (parent, state) = match call.side {
            Side::Server => match call.headers.and_then(TraceContext::from_ttheader_lazy) {
                Some((t, state)) => (Some(t), state),
                None => (None, None),
            },
            Side::Client => (call.trace.cloned().or_else(current), None),
        };
        let sampled = match (self.sampler, &parent) {
            (Sampler::Always, _) => true,
            (Sampler::Never, _) => false,
            (Sampler::ParentBased(_), Some(p)) => p.sampled(),
            (Sampler::ParentBased(ratio), None) => ratio_sampled(ratio, crate::balance::random),
        };
        // Without a span of its own, the call passes its decision on: a trace it starts
        // is a new root (on a server, the parent of the calls made within the call); a
        // client passes its parent on, with the decision in its flags (a server's calls
        // made within the call have the caller's span as their parent by themselves).
        let side = call.side;
        let pass_on =
            |meta: &mut Metadata, parent: Option<&TraceContext>, sampled: bool| match parent {
                None => meta.set_trace(TraceContext::new_root(sampled)),
                Some(p) if side == Side::Client => {
                    let mut p = p.clone();
                    p.flags = (p.flags & !1) | sampled as u8;
                    meta.set_trace(p);
                }
                Some(_) => {}
            };
        if !sampled {
            pass_on(meta, parent.as_ref(), false);
            return Ok(None);
        }
        let span = span(call);
        if span.is_disabled() {
            // No subscriber takes spans: pass the decision on all the same.
            pass_on(meta, parent.as_ref(), true);
            return Ok(None);
        }
        let mut parent = parent;
        if let Some(p) = &mut parent {
            if p.state.is_none() {
                p.state = state.and_then(crate::trace::parse_state);
            }
            let _ = span.set_parent(remote(p));
        }
        let cx = span.context();
        let sc = cx.span().span_context().clone();
        if !sc.is_valid() {
            // A subscriber without OpenTelemetry (logs only): the span has no id to send.
            pass_on(meta, parent.as_ref(), true);
            return Ok(Some(span));
        }
        if !sc.is_sampled() {
            // The SDK's own sampler said no (a provider not built by `Exporter`): the span
            // records nothing, so it is not kept.
            pass_on(meta, parent.as_ref(), false);
            return Ok(None);
        }
        let ours = from_otel(&sc, parent.and_then(|p| p.state));
        // Logs of the middleware inside the span name its trace.
        span.record("trace_id", ours.trace_id_hex().as_str());
        meta.set_trace(ours);
        Ok(Some(span))
    }

    fn end(&self, span: Self::State, call: &CallInfo<'_>, outcome: &Outcome) {
        let Some(span) = span else { return };
        if call.side == Side::Client {
            if let Some(a) = call.peer {
                span.record("server.address", a.ip().to_string().as_str());
                span.record("server.port", i64::from(a.port()));
            }
        }
        // (Integers as i64: the bridge exports other integer types as strings.)
        span.record("rpc.request.size", call.request_bytes as i64);
        span.record("rpc.response.size", outcome.response_bytes as i64);
        if let Some(kind) = outcome.error {
            span.record("otel.status_code", "ERROR");
            span.record("error.type", kind.name());
            span.in_scope(|| tracing::debug!(error = %kind, "call failed"));
        }
        // Dropping the span closes it: the bridge ends the OpenTelemetry span and hands
        // it to the exporter.
        drop(span);
    }

    fn is_idle(span: &Self::State) -> bool {
        span.is_none()
    }

    /// The call's span, entered while its handler runs: what the handler logs through
    /// `tracing` is inside it (and becomes an event of the exported span).
    fn enter(&self, span: &Self::State) -> Option<Box<dyn std::any::Any>> {
        Some(Box::new(span.as_ref()?.clone().entered()))
    }
}

/// The error of [`Exporter::install`].
#[derive(Debug)]
pub struct InstallError(String);

impl std::fmt::Display for InstallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InstallError {}

/// Exports the spans of this process to an OTLP/HTTP collector, and logs to stderr: the
/// process's `tracing` subscriber.
#[derive(Debug, Clone)]
pub struct Exporter {
    endpoint: String,
    service_name: String,
    batch_delay: Duration,
    max_queue: usize,
    log_level: LevelFilter,
    timeout: Duration,
    /// TLS to the collector (`https://`).
    #[cfg(feature = "tls")]
    tls: Option<crate::tls::TlsConnector>,
}

impl Exporter {
    /// Exports to the collector at `endpoint` (`http://host:port`, to which
    /// `/v1/traces` is added when it has no path, or the whole URL of the traces
    /// endpoint).
    pub fn new(endpoint: &str) -> Self {
        Exporter {
            endpoint: endpoint.to_owned(),
            service_name: "unknown_service".to_owned(),
            batch_delay: Duration::from_secs(1),
            max_queue: 2048,
            log_level: LevelFilter::INFO,
            timeout: Duration::from_secs(5),
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// Exports over TLS (an `https://` endpoint), verifying the collector's certificate
    /// against the endpoint's host name with `connector` (feature `tls`).
    #[cfg(feature = "tls")]
    pub fn tls(mut self, connector: crate::tls::TlsConnector) -> Self {
        self.tls = Some(connector);
        self
    }

    /// The `service.name` resource attribute of every span.
    pub fn service_name(mut self, name: &str) -> Self {
        self.service_name = name.to_owned();
        self
    }

    /// How long ended spans wait to leave in a batch (1 s by default).
    pub fn batch_delay(mut self, delay: Duration) -> Self {
        self.batch_delay = delay;
        self
    }

    /// How many ended spans may wait for export; more are dropped (2048 by default).
    pub fn max_queue(mut self, spans: usize) -> Self {
        self.max_queue = spans.max(1);
        self
    }

    /// The most verbose level of the logs written to stderr (`INFO` by default).
    pub fn log_level(mut self, level: LevelFilter) -> Self {
        self.log_level = level;
        self
    }

    /// How long one export may take (5 s by default).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// TLS to the collector, for an `https://` endpoint.
    fn http_tls(
        &self,
        scheme: &str,
        rest: &str,
    ) -> Result<Option<crate::http::HttpTls>, InstallError> {
        if scheme == "http" {
            return Ok(None);
        }
        #[cfg(feature = "tls")]
        if let Some(c) = &self.tls {
            let authority = rest.split('/').next().unwrap_or(rest);
            return crate::http::HttpTls::to(c, authority)
                .map(Some)
                .map_err(|e| InstallError(format!("the OTLP endpoint: {e}")));
        }
        let _ = rest;
        Err(InstallError(format!(
            "the OTLP endpoint {:?} is https://: give the exporter a TLS connector (Exporter::tls, feature tls)",
            self.endpoint
        )))
    }

    /// Builds the tracer provider, whose batch processor exports from a thread of its own.
    fn provider(&self) -> Result<SdkTracerProvider, InstallError> {
        let (scheme, rest) = match self.endpoint.split_once("://") {
            Some((s @ ("http" | "https"), rest)) => (s, rest),
            _ => {
                return Err(InstallError(format!(
                    "the OTLP endpoint {:?} is not an http:// or https:// URL",
                    self.endpoint
                )))
            }
        };
        let url = if rest.trim_end_matches('/').contains('/') {
            self.endpoint.clone()
        } else {
            format!("{scheme}://{}/v1/traces", rest.trim_end_matches('/'))
        };
        let tls = self.http_tls(scheme, rest)?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(BlockingHttp {
                timeout: self.timeout,
                tls,
            })
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(url)
            .with_timeout(self.timeout)
            .build()
            .map_err(|e| InstallError(format!("the OTLP exporter: {e}")))?;
        let batch = BatchSpanProcessor::builder(exporter)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_scheduled_delay(self.batch_delay)
                    .with_max_queue_size(self.max_queue)
                    .build(),
            )
            .build();
        Ok(SdkTracerProvider::builder()
            // The middleware decides which calls get a span ([`Sampler`]); the SDK keeps
            // every span it is given.
            .with_sampler(opentelemetry_sdk::trace::Sampler::AlwaysOn)
            .with_span_processor(batch)
            .with_resource(
                Resource::builder()
                    .with_service_name(self.service_name.clone())
                    .build(),
            )
            .build())
    }

    /// Installs the process's `tracing` subscriber: spans (at `INFO` and above) bridged to
    /// OpenTelemetry and exported, logs written to stderr. Keep the returned
    /// [`Telemetry`] until the process ends: dropping it exports what is left.
    pub fn install(self) -> Result<Telemetry, InstallError> {
        let provider = self.provider()?;
        let tracer = provider.tracer("netpoll-rpc");
        // Per-layer filters keep the subscriber's most verbose level at what the layers
        // want, so that `debug!` and `trace!` on the data path stay switched off.
        let spans = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_target(false)
            .with_filter(LevelFilter::INFO);
        let logs = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_filter(self.log_level);
        let subscriber = tracing_subscriber::registry().with(spans).with(logs);
        tracing::subscriber::set_global_default(subscriber)
            .map_err(|e| InstallError(format!("a tracing subscriber is already set: {e}")))?;
        Ok(Telemetry { provider })
    }
}

/// The installed exporter: exports what is left when dropped (waiting for it, up to the
/// export timeout: drop it where blocking is fine, not on an event-loop thread).
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Exports the spans that ended so far, now. It waits for the export: call it (and
    /// drop the `Telemetry`) from a thread of your own, not from an event-loop thread.
    pub fn flush(&self) {
        if let Err(e) = self.provider.force_flush() {
            tracing::warn!(error = %e, "exporting spans failed");
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "stopping the span exporter failed");
        }
    }
}

/// The exporter's HTTP client: this crate's blocking HTTP/1.1 client. The batch processor
/// calls it on its own thread, where blocking is what it expects.
#[derive(Debug)]
struct BlockingHttp {
    timeout: Duration,
    tls: Option<crate::http::HttpTls>,
}

#[async_trait::async_trait]
impl HttpClient for BlockingHttp {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let uri = request.uri();
        let authority = uri.authority().ok_or("the OTLP endpoint has no host")?;
        // A URL without a port means the scheme's.
        let host = match authority.port_u16() {
            Some(_) => authority.as_str().to_owned(),
            None if uri.scheme_str() == Some("https") => format!("{}:443", authority.host()),
            None => format!("{}:80", authority.host()),
        };
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        // Every header the exporter set (content type, encoding, the user's own
        // OTEL_EXPORTER_OTLP_HEADERS) goes along.
        let mut headers = Vec::new();
        for (k, v) in request.headers() {
            if k == http::header::HOST || k == http::header::CONTENT_LENGTH {
                continue; // written by the client itself
            }
            let v = v.to_str().map_err(|_| format!("header {k} is not text"))?;
            headers.push((k.as_str(), v));
        }
        let (status, body) = crate::http::post_bytes(
            &host,
            &path,
            &headers,
            request.body(),
            self.timeout,
            self.tls.as_ref(),
        )?;
        Ok(Response::builder().status(status).body(Bytes::from(body))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ratio_samples_its_share() {
        assert!(ratio_sampled(1.0, || u64::MAX));
        assert!(!ratio_sampled(0.0, || 0));
        assert!(ratio_sampled(0.5, || 0));
        assert!(!ratio_sampled(0.5, || u64::MAX));
        let n = 20_000;
        let hits = (0..n)
            .filter(|_| ratio_sampled(0.25, crate::balance::random))
            .count();
        assert!((4_000..6_000).contains(&hits), "{hits} of {n}");
    }
}
