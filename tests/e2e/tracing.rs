//! One order is one trace: the gateway answers with the trace id, and Zipkin ends up with spans
//! of every service the order went through, over HTTP and over Kafka (through the outboxes).

use crate::harness::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Every service that takes part in a confirmed order.
const SERVICES: [&str; 6] = ["gateway", "order", "product", "payment", "saga-orchestrator", "notification"];

fn services(spans: &[Value]) -> BTreeSet<String> {
    spans.iter().filter_map(|s| s["localEndpoint"]["serviceName"].as_str().map(str::to_owned)).collect()
}

fn has_every_service(spans: &[Value]) -> bool {
    let seen = services(spans);
    SERVICES.iter().all(|s| seen.contains(*s))
}

/// Whether the notification service sent an e-mail inside the trace.
fn mailed(spans: &[Value]) -> bool {
    spans.iter().any(|s| s["name"] == "send e-mail" && s["localEndpoint"]["serviceName"] == "notification")
}

/// Spans whose parent is not among `spans`.
fn orphans(spans: &[Value]) -> Vec<&Value> {
    let ids: BTreeSet<&str> = spans.iter().filter_map(|s| s["id"].as_str()).collect();
    spans.iter().filter(|s| s["parentId"].as_str().is_some_and(|p| !ids.contains(p))).collect()
}

#[tokio::test]
#[ignore = "needs the running stack: ./stack test"]
async fn one_order_is_one_trace_across_every_service() {
    let customer = new_customer().await;
    let product = new_product(500, 10).await;
    let (order, trace_id) = place_order_traced(&customer, &[(&product, 1)]).await;
    assert_eq!(trace_id.len(), 32, "a W3C trace id: {trace_id}");
    // Only Zipkin is asked from here on: the trace itself shows the saga's way to the e-mails.
    // Spans reach Zipkin in batches, each service on its own: wait until the trace is whole. The
    // e-mail comes last, and the notification service may trail by a minute while other tests
    // flood the stack with orders: what is checked here is the trace, not the pace.
    let start = Instant::now();
    let mut spans = trace_spans(&trace_id).await;
    let whole = |spans: &[Value]| has_every_service(spans) && orphans(spans).is_empty() && mailed(spans);
    while start.elapsed() < Duration::from_secs(120) && !whole(&spans) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        spans = trace_spans(&trace_id).await;
    }
    let seen = services(&spans);
    let missing: Vec<_> = SERVICES.iter().filter(|s| !seen.contains(**s)).collect();
    assert!(missing.is_empty(), "trace {trace_id} of order {order} lacks {missing:?}; it has {seen:?}");

    // One tree: a single root (the gateway's server span), every other span's parent is in it.
    let roots: Vec<&Value> = spans.iter().filter(|s| s.get("parentId").is_none()).collect();
    assert_eq!(roots.len(), 1, "one root span: {roots:?}");
    assert_eq!(roots[0]["localEndpoint"]["serviceName"], "gateway");
    assert_eq!(roots[0]["kind"], "SERVER");
    assert!(orphans(&spans).is_empty(), "spans whose parent is not in the trace: {:?}", orphans(&spans));
    // The e-mail went out inside the trace, in a span of the notification service.
    assert!(mailed(&spans), "no e-mail span in {spans:?}");
}
