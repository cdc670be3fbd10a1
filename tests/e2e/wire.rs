//! What travels on Kafka: Confluent-framed Avro (magic byte + registry schema id), with the
//! schemas registered under topic + record name.

use crate::harness::*;
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message as _;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

async fn first_records(topic: &str, n: usize) -> Vec<Vec<u8>> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", unique("e2e-wire"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut out = Vec::new();
    let start = Instant::now();
    while out.len() < n && start.elapsed() < Duration::from_secs(30) {
        if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_secs(5), consumer.recv()).await {
            out.push(m.payload().unwrap_or_default().to_vec());
        }
    }
    out
}

#[tokio::test]
#[ignore = "needs the running stack: ./stack test"]
async fn kafka_holds_registry_framed_avro_on_command_and_event_topics() {
    // Make sure both kinds of topic have traffic.
    let customer = new_customer().await;
    let product = new_product(100, 3).await;
    let order = place_order(&customer, &[(&product, 1)]).await;
    final_order(&order).await;

    let mut ids = BTreeSet::new();
    for topic in ["order.events", "product.commands", "product.events", "payment.commands"] {
        let records = first_records(topic, 1).await;
        assert!(!records.is_empty(), "no records on {topic}");
        for r in records {
            assert!(r.len() > 5 && r[0] == 0, "{topic}: not Confluent framed: {:?}", &r[..r.len().min(8)]);
            ids.insert(u32::from_be_bytes([r[1], r[2], r[3], r[4]]));
        }
    }
    for id in ids {
        let r = http().get(format!("{}/schemas/ids/{id}", registry())).send().await.unwrap();
        assert!(r.status().is_success(), "schema id {id} unknown to the registry");
    }
    let subjects: Vec<String> =
        http().get(format!("{}/subjects", registry())).send().await.unwrap().json().await.unwrap();
    for s in [
        "order.events-shop.order.OrderPlaced",
        "product.commands-shop.product.ReserveStock",
        "payment.events-shop.payment.PaymentAuthorized",
    ] {
        assert!(subjects.iter().any(|x| x == s), "subject {s} not registered: {subjects:?}");
    }
}
