//! Trace propagation against the real broker, registry and Zipkin.
//!
//! - Kafka: a span sends a record with the producer helper, the shared consumer loop handles it
//!   in a consumer span that is the sender's child, and Zipkin's API returns both (and the
//!   handler's own span) in one trace. Topics and the consumer group are this test's own.
//! - HTTP: an edge server starts a trace (ignoring a client's `traceparent`), names it in
//!   `X-Trace-Id`, and its outgoing call carries it to the next server, whose span is the call's
//!   child.

use async_trait::async_trait;
use messaging::consumer::{self, ConsumerConfig, Envelope, Handler, HandlerError};
use messaging::kafka;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::message::OwnedHeaders;
use runtime::{Settings, telemetry};
use schemas::records::StockAdded;
use schemas::{Codec, Message, Topic};
use serde_json::Value;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::Instrument;
use tracing::field::Empty;

/// What the handler saw: the envelope's `traceparent` and the one current inside the handler.
struct Seen {
    incoming: Option<String>,
    inside: Option<String>,
}

struct Probe(mpsc::UnboundedSender<Seen>);

#[async_trait]
impl Handler for Probe {
    async fn handle(&self, envelope: &Envelope) -> Result<(), HandlerError> {
        let span = tracing::info_span!("probe handles");
        let inside = async {
            tracing::info!("probe handled");
            telemetry::current_traceparent()
        }
        .instrument(span)
        .await;
        let _ = self.0.send(Seen { incoming: envelope.traceparent.clone(), inside });
        Ok(())
    }
}

fn zipkin_base() -> String {
    let spans = telemetry::zipkin_url().unwrap_or_else(|| telemetry::DEFAULT_ZIPKIN_URL.to_owned());
    spans.trim_end_matches("/spans").to_owned()
}

/// The spans of `trace_id` once Zipkin has at least `n` of them.
async fn trace(trace_id: &str, n: usize) -> Vec<Value> {
    let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(5)).build().unwrap();
    let url = format!("{}/trace/{trace_id}", zipkin_base());
    let start = Instant::now();
    let mut last = Vec::new();
    while start.elapsed() < Duration::from_secs(30) {
        telemetry::flush().await;
        if let Ok(r) = http.get(&url).send().await
            && r.status().is_success()
        {
            last = r.json().await.unwrap_or_default();
            if last.len() >= n {
                return last;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("Zipkin has {} span(s) of trace {trace_id}, wanted {n}: {last:?}", last.len());
}

/// The span called `name` (Zipkin keeps span names in lower case).
fn named<'a>(spans: &'a [Value], name: &str) -> &'a Value {
    let name = name.to_lowercase();
    spans.iter().find(|s| s["name"] == name.as_str()).unwrap_or_else(|| panic!("no span {name:?} in {spans:?}"))
}

/// Telemetry of this test process (one per process), and its service name.
fn init() -> &'static str {
    static SERVICE: OnceLock<String> = OnceLock::new();
    SERVICE.get_or_init(|| {
        let service = format!("tracing-test-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        telemetry::init_with(&service, Some(telemetry::zipkin_url().expect("SHOP_ZIPKIN_URL must not be off")));
        service
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the running stack: ./stack test"]
async fn a_trace_continues_through_kafka_headers_into_the_consumer() {
    let run = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let service = init();
    let settings = Settings::from_env("tracing-test").expect("settings");
    let prefix = format!("test.tracing.{run}.");
    let topic = format!("{prefix}{}", Topic::ProductEvents.name());
    let spec = kafka::TopicSpec { name: topic.clone(), partitions: 1, config: vec![] };
    kafka::create_missing(&settings.kafka_brokers, &[spec]).await.expect("topic");

    let codec = Arc::new(Codec::new(&settings.schema_registry_url).expect("codec"));
    let message: Message = StockAdded { product_id: uuid::Uuid::now_v7().to_string(), quantity: 1 }.into();
    let payload = codec.encode(&message).await.expect("encode");
    let producer = kafka::producer(&settings.kafka_brokers).expect("producer");

    // The sending side: a root span; the helper puts its context in the record's headers.
    let root = tracing::info_span!("test sends", otel.kind = "producer", trace_id = Empty, span_id = Empty);
    telemetry::adopt(&root, opentelemetry::Context::new());
    let (trace_id, root_id) = telemetry::ids_of(&root).expect("tracing is on");
    let sent_traceparent = async {
        kafka::send(&producer, &topic, message.key(), &payload, OwnedHeaders::new()).await.expect("send");
        telemetry::current_traceparent()
    }
    .instrument(root.clone())
    .await
    .expect("a traceparent inside the span");
    assert_eq!(sent_traceparent, format!("00-{trace_id}-{root_id}-01"));
    drop(root);

    // The receiving side: the shared consumer loop.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut config =
        ConsumerConfig::new(&settings.kafka_brokers, format!("tracing-test-{run}"), &[Topic::ProductEvents]);
    config.topic_prefix = prefix.clone();
    let stop = tokio_util::sync::CancellationToken::new();
    let loop_task = tokio::spawn(consumer::run(
        config,
        codec.clone(),
        producer.clone(),
        Arc::new(Probe(tx)),
        stop.clone().cancelled_owned(),
    ));
    let seen = tokio::time::timeout(Duration::from_secs(60), rx.recv()).await.expect("consumed in time").unwrap();
    stop.cancel();
    let _ = loop_task.await;

    assert_eq!(seen.incoming.as_deref(), Some(sent_traceparent.as_str()), "the header arrived as sent");
    let inside = seen.inside.expect("the handler runs in a span");
    assert!(inside.starts_with(&format!("00-{trace_id}-")), "same trace inside the handler: {inside}");
    assert_ne!(inside, sent_traceparent, "the handler's span is a new one");

    // Zipkin: the sender, the consumer span (the sender's child) and the handler's span.
    let spans = trace(&trace_id, 3).await;
    for span in &spans {
        assert_eq!(span["traceId"], trace_id.as_str());
        assert_eq!(span["localEndpoint"]["serviceName"], service, "{span}");
    }
    let sender = named(&spans, "test sends");
    assert_eq!(sender["id"], root_id.as_str());
    assert!(sender.get("parentId").is_none(), "the sender is the root: {sender}");
    let consume = named(&spans, &format!("consume {topic}"));
    assert_eq!(consume["kind"], "CONSUMER");
    assert_eq!(consume["parentId"], root_id.as_str(), "the consumer span is the sender's child");
    assert_eq!(consume["tags"]["messaging.destination.name"], topic.as_str());
    let probe = named(&spans, "probe handles");
    assert_eq!(probe["parentId"], consume["id"], "the handler runs inside the consumer span");

    let admin: AdminClient<DefaultClientContext> =
        messaging::connect::client_config(&settings.kafka_brokers).expect("Kafka address").create().expect("admin");
    let _ = admin.delete_topics(&[topic.as_str()], &AdminOptions::new()).await;
}

fn caller_key() -> runtime::identity::CallerKey {
    runtime::identity::CallerKey::new(runtime::identity::DEFAULT_CALLER_KEY.as_bytes()).unwrap()
}

/// Serve `router` on a free loopback port until `stop`; its base URL.
async fn serve(router: axum::Router, edge: bool, stop: &tokio_util::sync::CancellationToken) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = stop.clone().cancelled_owned();
    tokio::spawn(async move {
        let served = if edge {
            runtime::http::serve_edge(listener, router, stop).await
        } else {
            runtime::http::serve(listener, router, caller_key(), stop).await
        };
        served.expect("serve");
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the running stack: ./stack test"]
async fn an_edge_request_starts_a_trace_that_outgoing_calls_continue() {
    use axum::http::HeaderMap;
    use axum::routing::get;
    use runtime::client::Downstream;
    init();
    let stop = tokio_util::sync::CancellationToken::new();
    // The inner server answers with the traceparent it was called with.
    let inner = axum::Router::new().route(
        "/inner",
        get(|headers: HeaderMap| async move {
            let tp = headers.get("traceparent").and_then(|v| v.to_str().ok()).map(str::to_owned);
            axum::Json(serde_json::json!({ "traceparent": tp }))
        }),
    );
    let inner_url = serve(inner, false, &stop).await;
    let downstream = Downstream::new("inner", &inner_url, Duration::from_secs(5)).calling_as("outer", caller_key());
    let outer = axum::Router::new().route(
        "/outer",
        get(move || {
            let downstream = downstream.clone();
            async move {
                let answer: Option<Value> = downstream.get_json("/inner").await.expect("inner answers");
                axum::Json(answer.unwrap_or_default())
            }
        }),
    );
    let outer_url = serve(outer, true, &stop).await;

    // A client's own traceparent is not continued by the edge.
    let foreign = "00-11111111111111111111111111111111-2222222222222222-01";
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let r = http.get(format!("{outer_url}/outer")).header("traceparent", foreign).send().await.expect("outer");
    assert!(r.status().is_success());
    let trace_id = r.headers()["x-trace-id"].to_str().unwrap().to_owned();
    assert_eq!(trace_id.len(), 32);
    assert_ne!(trace_id, "11111111111111111111111111111111", "the edge starts its own trace");
    let body: Value = r.json().await.unwrap();
    let forwarded = body["traceparent"].as_str().expect("the call carried a traceparent");
    assert!(forwarded.starts_with(&format!("00-{trace_id}-")), "{forwarded}");

    // Inside, a caller's traceparent is continued and named in the answer.
    let r = http.get(format!("{inner_url}/inner")).header("traceparent", foreign).send().await.expect("inner");
    assert_eq!(r.headers()["x-trace-id"], "11111111111111111111111111111111");

    let spans = trace(&trace_id, 3).await;
    stop.cancel();
    let server = named(&spans, "GET /outer");
    assert_eq!(server["kind"], "SERVER");
    assert!(server.get("parentId").is_none(), "the edge span is the root: {server}");
    let call = named(&spans, "GET inner");
    assert_eq!(call["kind"], "CLIENT");
    assert_eq!(call["parentId"], server["id"]);
    let handled = named(&spans, "GET /inner");
    assert_eq!(handled["kind"], "SERVER");
    assert_eq!(handled["parentId"], call["id"], "the inner server span is the call's child");
    assert_eq!(format!("00-{trace_id}-{}-01", handled["parentId"].as_str().unwrap()), forwarded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the running stack: ./stack test"]
async fn events_stored_in_a_span_reach_kafka_with_its_traceparent_through_the_outbox() {
    use domain::product::{Product, ProductCommand, ProductEvent};
    use domain::values::{Currency, Money, Name, ProductId, Sku};
    use eventstore::es::EventStoreOf;
    use messaging::outbox::Metadata;
    use messaging::outbox::{Relay, event_mapper};
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::message::{Headers, Message as _};
    init();
    let settings = Settings::from_env("tracing-test").expect("settings");
    let run = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let (base, _) = settings.database_url.rsplit_once('/').expect("database url ends with /<database>");
    let db_name = format!("test_tracing_{run}");
    let pool = eventstore::db::connect(&format!("{base}/{db_name}"), 4).await.expect("database");
    eventstore::db::migrate_event_store(&pool).await.expect("migrate");
    let prefix = format!("test.tracing.{run}.");
    let topic = format!("{prefix}{}", Topic::ProductEvents.name());
    let spec = kafka::TopicSpec { name: topic.clone(), partitions: 1, config: vec![] };
    kafka::create_missing(&settings.kafka_brokers, &[spec]).await.expect("topic");

    // A command executed in a span: its event is stored with the span's traceparent.
    let store = EventStoreOf::<Product>::new(pool.clone());
    let id = ProductId::new();
    let command = ProductCommand::Create {
        product_id: id,
        sku: Sku::parse(&format!("TRACE-{run}")).unwrap(),
        name: Name::parse("name", "Traced").unwrap(),
        price: Money::non_negative(100, Currency::parse("EUR").unwrap()).unwrap(),
        stock: 1,
    };
    let span = tracing::info_span!("command", trace_id = Empty, span_id = Empty);
    telemetry::adopt(&span, opentelemetry::Context::new());
    let expected = async {
        store.execute(&id.to_string(), command, Metadata::new()).await.expect("execute");
        telemetry::current_traceparent().expect("a span")
    }
    .instrument(span)
    .await;

    // The relay sends it later, outside any span: the header comes from the row.
    let codec = Arc::new(Codec::new(&settings.schema_registry_url).expect("codec"));
    let mapper = event_mapper(|id: &str, e: &ProductEvent| {
        Ok(schemas::convert::product_event(schemas::convert::product_id(id)?, e))
    });
    let relay = Relay::new(pool.clone(), &settings.kafka_brokers, codec, mapper)
        .with_relay_id(format!("outbox-relay-test-tracing-{run}"))
        .with_topic_prefix(&prefix);
    let start = Instant::now();
    while relay.pass().await.expect("relay pass") == 0 {
        assert!(start.elapsed() < Duration::from_secs(60), "the relay sent nothing");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let consumer: StreamConsumer = messaging::connect::client_config(&settings.kafka_brokers)
        .expect("Kafka address")
        .set("group.id", format!("tracing-test-{run}"))
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic.as_str()]).expect("subscribe");
    let record = tokio::time::timeout(Duration::from_secs(60), consumer.recv()).await.expect("a record").unwrap();
    let header = record
        .headers()
        .and_then(|hs| hs.iter().find(|h| h.key == telemetry::TRACEPARENT))
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned());
    assert_eq!(header, Some(expected), "the record carries the traceparent of the span that stored the event");
    drop(record);
    drop(consumer);

    pool.close().await;
    if let Ok(admin) = sqlx::PgPool::connect(&format!("{base}/postgres")).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{db_name}\" WITH (FORCE)")).execute(&admin).await;
    }
    let admin: AdminClient<DefaultClientContext> =
        messaging::connect::client_config(&settings.kafka_brokers).expect("Kafka address").create().expect("admin");
    let _ = admin.delete_topics(&[topic.as_str()], &AdminOptions::new()).await;
}
