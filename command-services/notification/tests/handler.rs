//! The handler against a real PostgreSQL (a fresh database per test, dropped afterwards) with
//! a recording mailer instead of SMTP. Needs PostgreSQL, hence ignored by default:
//! `cargo test -p notification-service -- --ignored` (server from `SHOP_TEST_POSTGRES`,
//! default the local stack's `postgres://shop:shop@127.0.0.1:5432`).

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use messaging::consumer::{Delivery, Envelope, Handler, HandlerError};
use notification_service::handler::Notifier;
use notification_service::mailer::{Letter, Mailer, SendError};
use notification_service::{app, store};
use schemas::Message;
use schemas::records::*;
use sqlx::PgPool;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tower::ServiceExt;

#[derive(Default)]
struct RecordingMailer {
    /// (recipient, subject, body) of each accepted e-mail.
    accepted: Mutex<Vec<(String, String, String)>>,
    down: AtomicBool,
}

#[async_trait]
impl Mailer for RecordingMailer {
    async fn send(&self, letter: &Letter<'_>) -> Result<(), SendError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(SendError::Unavailable("connection refused".into()));
        }
        let entry = (letter.to_email.to_owned(), letter.mail.subject.clone(), letter.mail.body.clone());
        self.accepted.lock().unwrap().push(entry);
        Ok(())
    }
}

impl RecordingMailer {
    fn count(&self) -> usize {
        self.accepted.lock().unwrap().len()
    }
}

struct Harness {
    notifier: Notifier,
    mailer: Arc<RecordingMailer>,
    pool: PgPool,
    server: String,
    database: String,
}

impl Harness {
    async fn start() -> Self {
        let server =
            std::env::var("SHOP_TEST_POSTGRES").unwrap_or_else(|_| "postgres://shop:shop@127.0.0.1:5432".into());
        let database = format!("shop_notification_test_{}", uuid::Uuid::new_v4().simple());
        let pool = eventstore::db::connect(&format!("{server}/{database}"), 4).await.expect("PostgreSQL reachable");
        store::migrate(&pool).await.unwrap();
        let mailer = Arc::new(RecordingMailer::default());
        let notifier = Notifier::new(pool.clone(), mailer.clone(), "instance-1");
        Self { notifier, mailer, pool, server, database }
    }

    async fn handle(&self, message_id: &str, message: impl Into<Message>) -> Result<(), HandlerError> {
        let envelope = Envelope::unsent(message.into(), message_id);
        self.notifier.handle(&envelope).await
    }

    async fn stop(self) {
        self.pool.close().await;
        let admin = eventstore::db::connect(&format!("{}/postgres", self.server), 1).await.unwrap();
        let drop = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.database);
        sqlx::raw_sql(&drop).execute(&admin).await.unwrap();
    }
}

fn alice() -> CustomerRegistered {
    CustomerRegistered {
        customer_id: "c1".into(),
        name: "Alice".into(),
        email: "alice@example.com".into(),
        owner: None,
    }
}

fn placed() -> OrderPlaced {
    OrderPlaced {
        order_id: "o1".into(),
        customer_id: "c1".into(),
        lines: vec![OrderLine { product_id: "p1".into(), quantity: 2, unit_price_cents: 1250 }],
        total_cents: 2500,
        currency: "EUR".into(),
        owner: None,
    }
}

#[tokio::test]
#[ignore = "needs PostgreSQL"]
async fn one_email_per_event_even_when_redelivered() {
    let h = Harness::start().await;
    h.handle("m1", alice()).await.unwrap();
    h.handle("m2", placed()).await.unwrap();
    h.handle("m3", OrderConfirmed { order_id: "o1".into() }).await.unwrap();
    h.handle("m3", OrderConfirmed { order_id: "o1".into() }).await.unwrap();
    h.handle("m1", alice()).await.unwrap();
    let accepted = h.mailer.accepted.lock().unwrap().clone();
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0].0, "alice@example.com");
    assert!(accepted[0].2.contains("25.00 EUR"), "{}", accepted[0].2);
    h.stop().await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL"]
async fn an_email_waits_for_its_contact_and_order() {
    let h = Harness::start().await;
    let rejected = OrderRejected { order_id: "o1".into(), reason: "out of stock".into(), code: None };
    assert!(matches!(h.handle("m3", rejected.clone()).await, Err(HandlerError::Transient(_))));
    h.handle("m2", placed()).await.unwrap();
    assert!(matches!(h.handle("m3", rejected.clone()).await, Err(HandlerError::Transient(_))));
    let paid = PaymentConfirmed {
        customer_id: "c1".into(),
        order_id: "o1".into(),
        amount_cents: 2500,
        currency: "EUR".into(),
    };
    assert!(matches!(h.handle("m4", paid.clone()).await, Err(HandlerError::Transient(_))));
    assert_eq!(h.mailer.count(), 0);
    h.handle("m1", alice()).await.unwrap();
    h.handle("m3", rejected).await.unwrap();
    h.handle("m4", paid).await.unwrap();
    assert_eq!(h.mailer.count(), 2);
    assert!(h.mailer.accepted.lock().unwrap()[0].2.contains("Reason: out of stock"));
    h.stop().await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL"]
async fn an_smtp_outage_is_retried_and_records_nothing() {
    let h = Harness::start().await;
    h.handle("m1", alice()).await.unwrap();
    h.handle("m2", placed()).await.unwrap();
    h.mailer.down.store(true, Ordering::SeqCst);
    let confirmed = OrderConfirmed { order_id: "o1".into() };
    assert!(matches!(h.handle("m3", confirmed.clone()).await, Err(HandlerError::Transient(_))));
    assert!(store::sent_for_order(&h.pool, "o1").await.unwrap().is_empty());
    h.mailer.down.store(false, Ordering::SeqCst);
    h.handle("m3", confirmed).await.unwrap();
    assert_eq!(h.mailer.count(), 1);
    h.stop().await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL"]
async fn the_sent_log_of_an_order_is_listed() {
    let h = Harness::start().await;
    h.handle("m1", alice()).await.unwrap();
    h.handle("m2", placed()).await.unwrap();
    h.handle("m3", OrderConfirmed { order_id: "o1".into() }).await.unwrap();
    let request = Request::get("/notifications?order_id=o1").body(Body::empty()).unwrap();
    let response = app(h.pool.clone()).oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = axum::body::to_bytes(response.into_body(), 64 * 1024).await.unwrap();
    let list: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["event_type"], "OrderConfirmed");
    assert_eq!(list[0]["recipient"], "alice@example.com");
    assert_eq!(list[0]["message_id"], "m3");
    assert!(list[0]["subject"].as_str().unwrap().contains("o1"));
    assert!(list[0]["sent_at"].is_string());
    h.stop().await;
}

/// A mailer that holds each e-mail until it is let go, then accepts it.
struct GatedMailer {
    gate: tokio::sync::Semaphore,
    accepted: Mutex<Vec<String>>,
}

impl Default for GatedMailer {
    fn default() -> Self {
        Self { gate: tokio::sync::Semaphore::new(0), accepted: Mutex::default() }
    }
}

#[async_trait]
impl Mailer for GatedMailer {
    async fn send(&self, letter: &Letter<'_>) -> Result<(), SendError> {
        self.gate.acquire().await.expect("gate").forget();
        self.accepted.lock().unwrap().push(letter.event_id.to_owned());
        Ok(())
    }
}

#[tokio::test]
#[ignore = "needs PostgreSQL"]
async fn two_instances_given_the_same_event_send_one_email() {
    let h = Harness::start().await;
    h.handle("m1", alice()).await.unwrap();
    h.handle("m2", placed()).await.unwrap();
    let mailer = Arc::new(GatedMailer::default());
    let first = Arc::new(Notifier::new(h.pool.clone(), mailer.clone(), "instance-a"));
    let second = Notifier::new(h.pool.clone(), mailer.clone(), "instance-b");
    let confirmed = Envelope::unsent(OrderConfirmed { order_id: "o1".into() }.into(), "m3");

    // The first instance is sending (held at the SMTP server) when a rebalance hands the same
    // event to the second: it waits, sending nothing.
    let sending = tokio::spawn({
        let (first, confirmed) = (first.clone(), confirmed.clone());
        async move { first.handle(&confirmed).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let waited = second.handle(&confirmed).await;
    assert!(matches!(waited, Err(HandlerError::Transient(_))), "{waited:?}");
    mailer.gate.add_permits(10);
    sending.await.unwrap().unwrap();
    // Retried once the first recorded it: nothing more to send.
    second.handle(&confirmed).await.unwrap();
    assert_eq!(*mailer.accepted.lock().unwrap(), vec!["m3".to_owned()]);
    h.stop().await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL"]
async fn a_claim_is_taken_over_only_when_its_lease_ran_out() {
    let h = Harness::start().await;
    h.handle("m1", alice()).await.unwrap();
    h.handle("m2", placed()).await.unwrap();
    // An instance that claimed m3 a moment ago is sending it: this one waits.
    sqlx::query("INSERT INTO sending (message_id, claimed_by) VALUES ('m3', 'gone')").execute(&h.pool).await.unwrap();
    let waited = h.handle("m3", OrderConfirmed { order_id: "o1".into() }).await;
    assert!(matches!(waited, Err(HandlerError::Transient(_))), "{waited:?}");
    assert_eq!(h.mailer.count(), 0);
    // Its claim outlived the lease: it died before recording; this one sends and records it.
    let lease = notification_service::handler::CLAIM_LEASE.as_secs_f64() + 1.0;
    sqlx::query("UPDATE sending SET claimed_at = now() - make_interval(secs => $1) WHERE message_id = 'm3'")
        .bind(lease)
        .execute(&h.pool)
        .await
        .unwrap();
    h.handle("m3", OrderConfirmed { order_id: "o1".into() }).await.unwrap();
    assert_eq!(h.mailer.count(), 1);
    let claims: i64 = sqlx::query_scalar("SELECT count(*) FROM sending").fetch_one(&h.pool).await.unwrap();
    assert_eq!(claims, 0, "the claim is dropped with the record");
    assert!(store::already_sent(&h.pool, &["m3"]).await.unwrap().contains("m3"));
    h.stop().await;
}

fn batch(messages: Vec<(&str, Message)>) -> Vec<Delivery> {
    messages
        .into_iter()
        .map(|(id, message)| Delivery { envelope: Envelope::unsent(message, id), span: tracing::Span::none() })
        .collect()
}

#[tokio::test]
#[ignore = "needs PostgreSQL"]
async fn a_batch_sends_each_email_once_and_reports_what_it_could_not() {
    let h = Harness::start().await;
    let unknown_order = OrderConfirmed { order_id: "o2".into() };
    let paid = PaymentConfirmed {
        customer_id: "c1".into(),
        order_id: "o1".into(),
        amount_cents: 2500,
        currency: "EUR".into(),
    };
    let deliveries = batch(vec![
        ("m1", alice().into()),
        ("m2", placed().into()),
        ("m3", OrderConfirmed { order_id: "o1".into() }.into()),
        ("m3", OrderConfirmed { order_id: "o1".into() }.into()),
        ("m4", paid.into()),
        ("m5", unknown_order.clone().into()),
    ]);
    // The facts it brings are learned and its e-mails go out; o2 is not known yet.
    let first = h.notifier.handle_batch(&deliveries).await;
    assert!(matches!(first, Err(HandlerError::Transient(_))), "{first:?}");
    assert_eq!(h.mailer.count(), 2, "m3 once (delivered twice in the batch) and m4");
    let sent = store::already_sent(&h.pool, &["m3", "m4", "m5"]).await.unwrap();
    assert_eq!(sent, ["m3".to_owned(), "m4".to_owned()].into_iter().collect());
    // The consumer hands the batch over again (or each message): nothing is sent twice.
    assert!(h.notifier.handle_batch(&deliveries).await.is_err());
    for d in &deliveries[..5] {
        h.notifier.handle(&d.envelope).await.unwrap();
    }
    assert_eq!(h.mailer.count(), 2);
    // Once o2 is known, its e-mail goes out, to the customer who placed it.
    let other = OrderPlaced { order_id: "o2".into(), ..placed() };
    h.notifier.handle_batch(&batch(vec![("m6", other.into()), ("m5", unknown_order.into())])).await.unwrap();
    assert_eq!(h.mailer.count(), 3);
    let claims: i64 = sqlx::query_scalar("SELECT count(*) FROM sending").fetch_one(&h.pool).await.unwrap();
    assert_eq!(claims, 0, "every claim is dropped with its record");
    h.stop().await;
}
