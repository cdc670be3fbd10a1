//! What travels on Kafka: Confluent-framed Avro (magic byte + registry schema id), with the
//! schemas registered under topic + record name. Looks only at this test's own flow (records
//! whose correlation id is its order), so other tests' poison messages do not disturb it.

use crate::harness::*;
use crate::kafka;
use std::collections::BTreeSet;

#[tokio::test]
#[ignore = "needs the running stack: ./stack test"]
async fn kafka_holds_registry_framed_avro_on_command_and_event_topics() {
    let customer = new_customer().await;
    let product = new_product(100, 3).await;
    let starts: Vec<_> = ["order.events", "product.commands", "product.events", "payment.commands"]
        .into_iter()
        .map(|t| (t, kafka::ends(t)))
        .collect();
    let order = place_order(&customer, &[(&product, 1)]).await;
    final_order(&order).await;

    let mut ids = BTreeSet::new();
    for (topic, from) in starts {
        let ours: Vec<_> = kafka::read(topic, &from)
            .await
            .into_iter()
            .filter(|r| r.header("correlation-id").as_deref() == Some(order.as_str()))
            .collect();
        assert!(!ours.is_empty(), "no records of order {order} on {topic}");
        for r in ours {
            let p = r.payload.unwrap_or_default();
            assert!(p.len() > 5 && p[0] == 0, "{topic}: not Confluent framed: {:?}", &p[..p.len().min(8)]);
            ids.insert(u32::from_be_bytes([p[1], p[2], p[3], p[4]]));
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
