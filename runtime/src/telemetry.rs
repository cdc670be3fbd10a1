//! Logs and traces.
//!
//! - Logs: `RUST_LOG` filters at start (default `info`); the filter can be replaced while running
//!   ([`set_filter`]): a service applies the central configuration's `log.level` once loaded and
//!   whenever it changes (override: `SHOP_LOG_LEVEL`). `SHOP_LOG_FORMAT=json` for structured logs, one
//!   JSON object a line, with the `trace_id`, `span_id` and `correlation_id` of the request or
//!   message being handled as top-level fields.
//! - Traces: every `tracing` span at an enabled level is an OpenTelemetry span; they are exported
//!   in batches to Zipkin's v2 JSON API (`SHOP_ZIPKIN_URL`, default
//!   `http://127.0.0.1:9411/api/v2/spans`; `off` exports nothing, ids are still propagated).
//!   The service's name is the Zipkin `localEndpoint.serviceName`.
//! - Propagation: W3C Trace Context (`traceparent`) in HTTP headers, in Kafka record headers, and
//!   in the metadata of stored events and outbox rows, so that a message relayed long after its
//!   command still continues the trace that caused it.

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanId, SpanKind, Status, TraceContextExt, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider, SpanData, SpanExporter};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::fmt::format::{Format, Json, JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

/// The W3C header (and metadata key) that carries a span's context. The same name as
/// `schemas::headers::TRACEPARENT` (a `messaging` test checks), written out here so that this
/// crate does not depend on the wire schemas.
pub const TRACEPARENT: &str = "traceparent";
/// Answer header naming the request's trace, so a caller can look it up in Zipkin.
pub const TRACE_ID_HEADER: &str = "x-trace-id";
/// Where spans go unless `SHOP_ZIPKIN_URL` says otherwise.
pub const DEFAULT_ZIPKIN_URL: &str = "http://127.0.0.1:9411/api/v2/spans";

/// Span fields that JSON log lines carry at the top level (innermost span wins).
const LOG_IDS: [&str; 3] = ["trace_id", "span_id", "correlation_id"];

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

const DEFAULT_FILTER: &str = "info,sqlx=warn,rdkafka=warn,mongodb=warn,hyper=warn";

static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Where spans are exported: `SHOP_ZIPKIN_URL`, `None` when set to `off`.
pub fn zipkin_url() -> Option<String> {
    match std::env::var("SHOP_ZIPKIN_URL").ok().map(|v| v.trim().to_owned()) {
        Some(v) if v.eq_ignore_ascii_case("off") || v.eq_ignore_ascii_case("none") => None,
        Some(v) if !v.is_empty() => Some(v),
        _ => Some(DEFAULT_ZIPKIN_URL.to_owned()),
    }
}

/// Install logging and tracing for `service` (once per process; later calls do nothing).
pub fn init(service: &str) {
    init_with(service, zipkin_url());
}

/// Like [`init`], exporting to `zipkin` (`None`: no export).
pub fn init_with(service: &str, zipkin: Option<String>) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let (filter, handle) = reload::Layer::new(filter);
    let json = std::env::var("SHOP_LOG_FORMAT").is_ok_and(|v| v == "json");
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let provider = provider(service, zipkin.as_deref());
    // Spans keep their own fields as tags; where in the code and on which thread is left out.
    let otel = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("shop"))
        .with_location(false)
        .with_threads(false)
        .with_target(false)
        .with_tracked_inactivity(false);
    let text = (!json).then(|| tracing_subscriber::fmt::layer().with_target(true).with_ansi(ansi));
    let json_logs = json.then(|| {
        let inner =
            tracing_subscriber::fmt::format().json().with_target(true).flatten_event(true).with_span_list(false);
        tracing_subscriber::fmt::layer().json().event_format(JsonWithIds { inner })
    });
    let result = tracing_subscriber::registry().with(filter).with(otel).with(text).with(json_logs).try_init();
    if result.is_ok() {
        let _ = PROVIDER.set(provider);
        let _ = FILTER.set(handle);
        tracing::info!(service, zipkin = zipkin.as_deref().unwrap_or("off"), "telemetry initialised");
    }
}

fn provider(service: &str, zipkin: Option<&str>) -> SdkTracerProvider {
    let builder = SdkTracerProvider::builder();
    let Some(url) = zipkin else {
        return builder.build();
    };
    let exporter = ZipkinExporter { url: url.to_owned(), service: service.to_owned(), client: OnceLock::new() };
    let config = BatchConfigBuilder::default()
        .with_scheduled_delay(Duration::from_secs(1))
        .with_max_export_batch_size(256)
        .build();
    builder.with_span_processor(BatchSpanProcessor::builder(exporter).with_batch_config(config).build()).build()
}

/// Export the spans that ended so far (blocking work moved off the async workers).
pub async fn flush() {
    if let Some(provider) = PROVIDER.get() {
        let provider = provider.clone();
        let _ = tokio::task::spawn_blocking(move || provider.force_flush()).await;
    }
}

/// Export what is left and stop exporting; call once, on the way out.
pub async fn shutdown() {
    if let Some(provider) = PROVIDER.get() {
        let provider = provider.clone();
        let _ = tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(Duration::from_secs(5))).await;
    }
}

/// Replace the log filter (`tracing` directives, e.g. `debug,sqlx=warn`). Without [`init`]
/// (tests) there is nothing to change and this succeeds.
pub fn set_filter(directives: &str) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(directives).map_err(|e| anyhow::anyhow!("log filter {directives:?}: {e}"))?;
    if let Some(handle) = FILTER.get() {
        handle.reload(filter)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Propagation

struct Carrier<'a>(&'a mut HashMap<String, String>);

impl Injector for Carrier<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct One<'a>(Option<&'a str>);

impl Extractor for One<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        if key == TRACEPARENT { self.0 } else { None }
    }
    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}

/// The `traceparent` of `cx`'s span; `None` when it has no valid span.
pub fn traceparent_of(cx: &Context) -> Option<String> {
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut fields = HashMap::new();
    TraceContextPropagator::new().inject_context(cx, &mut Carrier(&mut fields));
    fields.remove(TRACEPARENT)
}

/// The `traceparent` of the current span, if tracing is on and a span is entered.
pub fn current_traceparent() -> Option<String> {
    traceparent_of(&tracing::Span::current().context())
}

/// The remote context a `traceparent` names (an empty context if it is missing or malformed).
pub fn context_from_traceparent(traceparent: Option<&str>) -> Context {
    TraceContextPropagator::new().extract(&One(traceparent))
}

/// The remote context of an HTTP request's `traceparent` header.
pub fn context_from_headers(headers: &HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&Headers(headers))
}

/// Put the current span's `traceparent` on outgoing HTTP headers (replacing any).
pub fn inject_headers(headers: &mut HeaderMap) {
    if let Some(value) = current_traceparent().and_then(|v| HeaderValue::from_str(&v).ok()) {
        headers.insert(HeaderName::from_static(TRACEPARENT), value);
    }
}

/// Add the current span's `traceparent` to metadata that does not carry one yet.
pub fn stamp(metadata: &mut HashMap<String, String>) {
    if !metadata.contains_key(TRACEPARENT)
        && let Some(tp) = current_traceparent()
    {
        metadata.insert(TRACEPARENT.to_owned(), tp);
    }
}

/// The trace and span id of `span` (after its parent is set), as lowercase hex.
pub fn ids_of(span: &tracing::Span) -> Option<(String, String)> {
    let cx = span.context();
    let otel = cx.span();
    let sc = otel.span_context();
    sc.is_valid().then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
}

/// Make `span` a child of `parent` (a root when `parent` has no span) and record its ids as
/// the `trace_id` / `span_id` fields, which the span must declare (as `Empty`).
pub fn adopt(span: &tracing::Span, parent: Context) {
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
    if let Some((trace_id, span_id)) = ids_of(span) {
        span.record("trace_id", trace_id);
        span.record("span_id", span_id);
    }
}

/// Record the business correlation id (order id, ...) on the current span, when it declares one.
pub fn record_correlation(id: &str) {
    tracing::Span::current().record("correlation_id", id);
}

// ---------------------------------------------------------------------------------------------
// JSON logs with the ids of the enclosing spans

struct JsonWithIds {
    inner: Format<Json>,
}

impl<S, N> FormatEvent<S, N> for JsonWithIds
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut line = String::new();
        self.inner.format_event(ctx, Writer::new(&mut line), event)?;
        let mut ids = Map::new();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                let Some(fields) = extensions.get::<FormattedFields<JsonFields>>() else { continue };
                if let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(&fields.fields) {
                    for key in LOG_IDS {
                        if let Some(v) = fields.get(key) {
                            ids.insert(key.to_owned(), v.clone());
                        }
                    }
                }
            }
        }
        if ids.is_empty() {
            return writer.write_str(&line);
        }
        match serde_json::from_str::<Value>(line.trim_end()) {
            Ok(Value::Object(mut object)) => {
                for (key, value) in ids {
                    object.entry(key).or_insert(value);
                }
                writeln!(writer, "{}", Value::Object(object))
            }
            _ => writer.write_str(&line),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Zipkin v2 JSON exporter

/// Posts spans to Zipkin's `/api/v2/spans` as v2 JSON, with the service as the local endpoint.
/// Runs on the batch processor's own thread, hence a blocking client (made there, on first use).
#[derive(Debug)]
struct ZipkinExporter {
    url: String,
    service: String,
    client: OnceLock<reqwest::blocking::Client>,
}

impl ZipkinExporter {
    fn post(&self, batch: &[SpanData]) -> OTelSdkResult {
        let spans: Vec<Value> = batch.iter().map(|s| zipkin_span(&self.service, s)).collect();
        let client = self.client.get_or_init(|| {
            reqwest::blocking::Client::builder().no_proxy().timeout(Duration::from_secs(5)).build().unwrap_or_default()
        });
        let response = client
            .post(&self.url)
            .json(&spans)
            .send()
            .map_err(|e| OTelSdkError::InternalFailure(format!("posting spans to {}: {e}", self.url)))?;
        if !response.status().is_success() {
            return Err(OTelSdkError::InternalFailure(format!("{} answered {}", self.url, response.status())));
        }
        Ok(())
    }
}

impl SpanExporter for ZipkinExporter {
    fn export(&self, batch: Vec<SpanData>) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        std::future::ready(self.post(&batch))
    }
}

fn micros(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or_default()
}

/// One span in Zipkin's v2 model.
pub fn zipkin_span(service: &str, span: &SpanData) -> Value {
    let start = micros(span.start_time);
    let mut tags: Map<String, Value> = span
        .attributes
        .iter()
        .map(|KeyValue { key, value, .. }| (key.to_string(), Value::String(value.to_string())))
        .collect();
    if let Status::Error { description } = &span.status {
        tags.insert("error".into(), Value::String(description.to_string()));
    }
    let annotations: Vec<Value> =
        span.events.iter().map(|e| json!({ "timestamp": micros(e.timestamp), "value": e.name.as_ref() })).collect();
    let mut out = json!({
        "traceId": span.span_context.trace_id().to_string(),
        "id": span.span_context.span_id().to_string(),
        "name": span.name.as_ref(),
        "timestamp": start,
        "duration": micros(span.end_time).saturating_sub(start).max(1),
        "localEndpoint": { "serviceName": service },
        "tags": tags,
    });
    if span.parent_span_id != SpanId::INVALID {
        out["parentId"] = Value::String(span.parent_span_id.to_string());
    }
    let kind = match span.span_kind {
        SpanKind::Client => Some("CLIENT"),
        SpanKind::Server => Some("SERVER"),
        SpanKind::Producer => Some("PRODUCER"),
        SpanKind::Consumer => Some("CONSUMER"),
        SpanKind::Internal => None,
    };
    if let Some(kind) = kind {
        out["kind"] = Value::String(kind.to_owned());
    }
    if !annotations.is_empty() {
        out["annotations"] = Value::Array(annotations);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanContext, TraceFlags, TraceId, TraceState};

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_traceparent_round_trips_through_a_context() {
        let cx = context_from_traceparent(Some(TP));
        let sc = cx.span().span_context().clone();
        assert!(sc.is_valid() && sc.is_remote());
        assert_eq!(sc.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert_eq!(traceparent_of(&cx).as_deref(), Some(TP));
    }

    #[test]
    fn missing_or_malformed_traceparents_give_no_parent() {
        for tp in [None, Some(""), Some("garbage"), Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01")] {
            let cx = context_from_traceparent(tp);
            assert!(!cx.span().span_context().is_valid(), "{tp:?}");
            assert_eq!(traceparent_of(&cx), None);
        }
    }

    #[test]
    fn http_headers_are_read() {
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT, HeaderValue::from_static(TP));
        let cx = context_from_headers(&headers);
        assert_eq!(traceparent_of(&cx).as_deref(), Some(TP));
        assert!(!context_from_headers(&HeaderMap::new()).span().span_context().is_valid());
    }

    #[test]
    fn without_a_span_nothing_is_injected_or_stamped() {
        let mut headers = HeaderMap::new();
        inject_headers(&mut headers);
        assert!(headers.is_empty());
        let mut metadata = HashMap::new();
        stamp(&mut metadata);
        assert!(metadata.is_empty());
    }

    /// Run `f` with an OpenTelemetry layer (no export) as this thread's subscriber.
    fn traced<T>(f: impl FnOnce() -> T) -> T {
        let provider = SdkTracerProvider::builder().build();
        let subscriber =
            tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, f)
    }

    #[test]
    fn inside_a_span_its_context_is_injected_everywhere() {
        traced(|| {
            let span = tracing::info_span!("work", trace_id = tracing::field::Empty, span_id = tracing::field::Empty);
            adopt(&span, context_from_traceparent(Some(TP)));
            let (trace_id, span_id) = ids_of(&span).unwrap();
            assert_eq!(trace_id, "4bf92f3577b34da6a3ce929d0e0e4736", "the remote parent's trace goes on");
            assert_ne!(span_id, "00f067aa0ba902b7", "in a span of its own");
            let _entered = span.enter();
            let expected = format!("00-{trace_id}-{span_id}-01");
            assert_eq!(current_traceparent().as_deref(), Some(expected.as_str()));

            let mut headers = HeaderMap::new();
            inject_headers(&mut headers);
            assert_eq!(headers[TRACEPARENT], expected.as_str());
            let extracted = context_from_headers(&headers);
            assert_eq!(extracted.span().span_context().span_id().to_string(), span_id);

            let mut metadata = HashMap::new();
            stamp(&mut metadata);
            assert_eq!(metadata[TRACEPARENT], expected);
            let mut already = HashMap::from([(TRACEPARENT.to_owned(), TP.to_owned())]);
            stamp(&mut already);
            assert_eq!(already[TRACEPARENT], TP, "an explicit traceparent is kept");
        });
    }

    #[test]
    fn json_log_lines_carry_the_ids_of_their_spans() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let inner = tracing_subscriber::fmt::format().json().flatten_event(true).with_span_list(false);
        let logs = tracing_subscriber::fmt::layer()
            .json()
            .event_format(JsonWithIds { inner })
            .with_writer(move || writer.clone());
        tracing::subscriber::with_default(tracing_subscriber::registry().with(logs), || {
            tracing::info!("outside");
            let outer = tracing::info_span!("request", trace_id = "t1", span_id = "s1", correlation_id = "o1");
            let _outer = outer.enter();
            let inner = tracing::info_span!("step", span_id = "s2");
            let _inner = inner.enter();
            tracing::info!(answer = 42, "inside");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].get("trace_id").is_none(), "{text}");
        assert_eq!(lines[1]["message"], "inside");
        assert_eq!(lines[1]["answer"], 42);
        assert_eq!(lines[1]["trace_id"], "t1");
        assert_eq!(lines[1]["span_id"], "s2", "the innermost span's");
        assert_eq!(lines[1]["correlation_id"], "o1");
    }

    #[test]
    fn spans_become_zipkin_v2_json() {
        let trace_id = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        let span_id = SpanId::from_hex("00f067aa0ba902b7").unwrap();
        let start = SystemTime::UNIX_EPOCH + Duration::from_micros(1_700_000_000_000_000);
        let data = SpanData {
            span_context: SpanContext::new(trace_id, span_id, TraceFlags::SAMPLED, false, TraceState::default()),
            parent_span_id: SpanId::from_hex("1111111111111111").unwrap(),
            parent_span_is_remote: true,
            span_kind: SpanKind::Consumer,
            name: "consume order.events".into(),
            start_time: start,
            end_time: start + Duration::from_micros(1500),
            attributes: vec![KeyValue::new("messaging.destination.name", "order.events")],
            dropped_attributes_count: 0,
            events: Default::default(),
            links: Default::default(),
            status: Status::error("boom"),
            instrumentation_scope: Default::default(),
        };
        let span = zipkin_span("notification", &data);
        assert_eq!(span["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(span["id"], "00f067aa0ba902b7");
        assert_eq!(span["parentId"], "1111111111111111");
        assert_eq!(span["kind"], "CONSUMER");
        assert_eq!(span["timestamp"], 1_700_000_000_000_000u64);
        assert_eq!(span["duration"], 1500);
        assert_eq!(span["localEndpoint"]["serviceName"], "notification");
        assert_eq!(span["tags"]["messaging.destination.name"], "order.events");
        assert_eq!(span["tags"]["error"], "boom");
    }
}
