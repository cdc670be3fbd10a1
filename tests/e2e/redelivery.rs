//! At-least-once delivery: every message of a confirmed and a rejected order flow, delivered
//! twice more (and in another order across keys), changes no read model, balance, saga or
//! e-mail.

use crate::harness::*;
use crate::kafka::{self, Offsets, Rec};
use schemas::headers as h;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const TOPICS: [&str; 7] = [
    "customer.events",
    "product.events",
    "order.events",
    "payment.events",
    "product.commands",
    "payment.commands",
    "order.commands",
];

fn payment_service() -> String {
    service_url("payment")
}

async fn get_url(url: &str) -> Value {
    let r = service_http().get(url).send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert!(r.status().is_success(), "GET {url}: {}", r.status());
    r.json().await.unwrap_or(Value::Null)
}

/// The e-mails sent to `email`, as (subject, Message-ID) pairs, plus how many.
async fn mails(email: &str) -> Value {
    let mut list: Vec<(String, String)> =
        mails_to(email).await.into_iter().map(|m| (m.subject, m.message_id)).collect();
    list.sort();
    json!({ "total": list.len(), "messages": list })
}

struct Flow {
    customer: String,
    email: String,
    products: Vec<String>,
    orders: Vec<String>,
}

impl Flow {
    /// Everything a redelivery could disturb, by name.
    async fn snapshot(&self) -> BTreeMap<String, Value> {
        let mut s = BTreeMap::new();
        s.insert(format!("customer {}", self.customer), get(&format!("/api/customers/{}", self.customer)).await.1);
        s.insert(
            format!("payment account {}", self.customer),
            get_url(&format!("{}/accounts/{}", payment_service(), self.customer)).await,
        );
        for p in &self.products {
            s.insert(format!("product {p}"), get(&format!("/api/products/{p}")).await.1);
        }
        for o in &self.orders {
            s.insert(format!("order {o}"), get(&format!("/api/orders/{o}")).await.1);
            s.insert(format!("saga {o}"), get(&format!("/api/sagas/{o}")).await.1);
        }
        s.insert(format!("e-mails to {}", self.email), mails(&self.email).await);
        s
    }

    /// This flow's records on `topic` since `from`: the orders' traffic by correlation id, and
    /// the customer's and products' own events by key.
    async fn records(&self, topic: &str, from: &Offsets) -> Vec<Rec> {
        let ids: BTreeSet<&str> =
            self.orders.iter().chain(&self.products).chain([&self.customer]).map(String::as_str).collect();
        kafka::read(topic, from)
            .await
            .into_iter()
            .filter(|r| {
                r.header(h::CORRELATION_ID).is_some_and(|c| ids.contains(c.as_str()))
                    || ids.contains(r.key_text().unwrap_or_default().as_str())
            })
            .collect()
    }

    /// Every record of the flow so far, once every service has consumed them all.
    async fn settle(&self, starts: &BTreeMap<&str, Offsets>) -> BTreeMap<&'static str, Vec<Rec>> {
        let mut all = BTreeMap::new();
        for topic in TOPICS {
            let records = self.records(topic, &starts[topic]).await;
            kafka::wait_consumed(topic, &next_offsets(&records), SETTLE).await;
            all.insert(topic, records);
        }
        all
    }
}

/// The next offset after `records`, per partition.
fn next_offsets(records: &[Rec]) -> Offsets {
    let mut out = Offsets::new();
    for r in records {
        let next = out.entry(r.partition).or_insert(0);
        *next = (*next).max(r.offset + 1);
    }
    out
}

/// Reverse the order of keys, keep each key's own records in order: what Kafka allows.
fn reordered(records: &[Rec]) -> Vec<&Rec> {
    let mut keys: Vec<Option<&[u8]>> = Vec::new();
    for r in records {
        if !keys.contains(&r.key.as_deref()) {
            keys.push(r.key.as_deref());
        }
    }
    keys.iter().rev().flat_map(|k| records.iter().filter(move |r| r.key.as_deref() == *k)).collect()
}

#[tokio::test]
#[ignore = "needs the running stack: ./stack test"]
async fn redelivering_every_message_of_a_flow_twice_changes_nothing() {
    let starts: BTreeMap<&str, Offsets> = TOPICS.iter().map(|t| (*t, kafka::ends(t))).collect();

    let customer = new_customer().await;
    let c = eventually(&format!("/api/customers/{customer}"), SETTLE, |c| c["email"].is_string()).await;
    let email = c["email"].as_str().expect("customer e-mail").to_owned();
    let cheap = new_product(1_000, 5).await;
    let dear = new_product(60_000, 10).await;
    let confirmed = place_order(&customer, &[(&cheap, 2)]).await;
    assert_eq!(final_order(&confirmed).await["status"], "CONFIRMED");
    // 2 x 600.00 is over the 1000.00 credit: declined, stock released, rejected.
    let rejected = place_order(&customer, &[(&dear, 2)]).await;
    assert_eq!(final_order(&rejected).await["status"], "REJECTED");
    let flow = Flow { customer, email, products: vec![cheap, dear], orders: vec![confirmed, rejected] };

    // Let every consequence land before taking the picture: stock committed, one e-mail each
    // for the payment, the confirmation and the rejection, every record consumed.
    eventually(&format!("/api/sagas/{}", flow.orders[1]), SETTLE, |s| s["status"] == "REJECTED").await;
    eventually(&format!("/api/products/{}", flow.products[0]), SETTLE, |p| p["sold"] == 2 && p["reserved"] == 0).await;
    let start = Instant::now();
    while mails(&flow.email).await["total"] != 3 {
        assert!(start.elapsed() < SETTLE, "expected 3 e-mails: {}", mails(&flow.email).await);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let original = flow.settle(&starts).await;
    let before = flow.snapshot().await;
    let counts: Vec<(&str, usize)> = original.iter().map(|(t, rs)| (*t, rs.len())).collect();
    assert!(counts.iter().all(|(_, n)| *n > 0), "the flow left no record on some topic: {counts:?}");

    // Every record of the flow, twice more, keys in reverse order.
    let producer = kafka::producer();
    let mut copies = BTreeSet::new();
    for (topic, records) in &original {
        for _ in 0..2 {
            for r in reordered(records) {
                let payload = r.payload.as_deref().unwrap_or_default();
                let at =
                    kafka::produce(&producer, topic, Some(r.partition), r.key.as_deref(), payload, &r.headers).await;
                copies.insert((*topic, at));
            }
        }
    }

    // Consumed, and no service said anything new about the flow in answer to a duplicate.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let now = flow.settle(&starts).await;
    let new: Vec<String> = now
        .iter()
        .flat_map(|(topic, rs)| rs.iter().map(move |r| (*topic, r)))
        .filter(|(topic, r)| {
            !copies.contains(&(*topic, (r.partition, r.offset)))
                && !original[topic].iter().any(|o| (o.partition, o.offset) == (r.partition, r.offset))
        })
        .map(|(topic, r)| {
            format!(
                "{topic}/{}/{} {} caused by {}",
                r.partition,
                r.offset,
                r.header(h::RECORD).unwrap_or_default(),
                r.header(h::CAUSATION_ID).unwrap_or_default()
            )
        })
        .collect();
    assert!(new.is_empty(), "duplicates set off new messages:\n{}", new.join("\n"));

    let start = Instant::now();
    let after = loop {
        let after = flow.snapshot().await;
        // Unchanged now and a little later: a late second effect shows up too.
        if after != before || start.elapsed() > Duration::from_secs(3) {
            break after;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let changed: Vec<String> = before
        .iter()
        .filter(|(k, v)| after.get(*k) != Some(*v))
        .map(|(k, v)| format!("{k}:\n  before {v}\n  after  {}", after.get(k).unwrap_or(&Value::Null)))
        .collect();
    assert!(changed.is_empty(), "redelivery changed state:\n{}", changed.join("\n"));
}
