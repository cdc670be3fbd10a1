//! `GET /metrics` on the gateway and every service: Prometheus text with the HTTP request
//! histogram by route template once some traffic went through.

use crate::harness::*;
use reqwest::StatusCode;
use std::time::{Duration, Instant};

/// Each component and its own `/metrics` address (the gateway's is its public one).
fn components() -> Vec<(&'static str, String)> {
    let services = SERVICES.iter().map(|(name, _)| (*name, service_url(name)));
    std::iter::once(("gateway", gateway())).chain(services).collect()
}

#[tokio::test]
#[ignore = "needs the running stack: ./stack test"]
async fn every_component_exposes_prometheus_metrics() {
    // Traffic: an order touches the gateway, customer, product and order services over HTTP.
    let customer = new_customer().await;
    let product = new_product(100, 5).await;
    let order = place_order(&customer, &[(&product, 1)]).await;
    final_order(&order).await;

    for (name, base) in components() {
        // Every component's /health is asked at least once, so each has a histogram to show.
        let health = http().get(format!("{base}/health")).send().await.expect("health");
        assert!(health.status().is_success() || health.status() == StatusCode::SERVICE_UNAVAILABLE, "{name}");
        let r = http().get(format!("{base}/metrics")).send().await.expect("metrics");
        assert_eq!(r.status(), StatusCode::OK, "{name}");
        let content_type = r.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(content_type.starts_with("text/plain"), "{name}: {content_type}");
        let text = r.text().await.unwrap();
        assert!(text.contains("# TYPE http_request_duration_seconds histogram"), "{name}:\n{text}");
        assert!(
            text.contains(r#"http_request_duration_seconds_bucket{method="GET",route="/health",status="200""#)
                || text.contains(r#"route="/health",status="503""#),
            "{name}:\n{text}"
        );
        assert!(text.contains("# TYPE http_requests_total counter"), "{name}:\n{text}");
    }

    // Route templates, not raw paths: one series whatever the id.
    let gateway_text = http().get(format!("{}/metrics", gateway())).send().await.unwrap().text().await.unwrap();
    assert!(gateway_text.contains(r#"route="/api/orders/{id}""#), "{gateway_text}");
    assert!(!gateway_text.contains(&order), "{gateway_text}");
    let order_text = http().get(format!("{}/metrics", components()[3].1)).send().await.unwrap().text().await.unwrap();
    assert!(order_text.contains(r#"route="/orders",status="202""#), "{order_text}");
    // The order service relays events and consumes saga commands.
    assert!(order_text.contains("outbox_backlog_rows"), "{order_text}");
    assert!(
        order_text.contains(r#"consumer_messages_total{group="order",topic="order.commands",outcome="handled"}"#),
        "{order_text}"
    );
    assert!(order_text.contains(r#"consumer_batches_total{group="order"}"#), "{order_text}");
    // Its Kafka client's requests, from librdkafka's statistics (every 5 s): fetches among them.
    let fetches = |text: &str| {
        text.lines().any(|l| {
            l.starts_with(r#"consumer_kafka_requests_total{group="order",client="#)
                && l.contains(r#"request="Fetch"} "#)
        })
    };
    let order_text = metrics_when(&components()[3].1, Duration::from_millis(7500), fetches).await;
    assert!(fetches(&order_text), "{order_text}");
    // The orchestrator counts sagas by status; the order above is among the confirmed ones.
    let confirmed =
        |text: &str| text.lines().any(|l| l.starts_with(r#"shop_sagas{status="CONFIRMED"} "#) && !l.ends_with(" 0"));
    let saga_text = metrics_when(&components()[6].1, Duration::from_secs(10), confirmed).await;
    assert!(confirmed(&saga_text), "{saga_text}");
    assert!(saga_text.contains(r#"shop_sagas{status="COMPENSATING"}"#), "{saga_text}");
    assert!(saga_text.contains(r#"shop_saga_transitions_total{status="CONFIRMED"}"#), "{saga_text}");
}

/// `base`'s `/metrics` text once `ready` holds for it, or as it is after `limit`.
async fn metrics_when(base: &str, limit: Duration, ready: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        let text = http().get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
        if ready(&text) || start.elapsed() >= limit {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
