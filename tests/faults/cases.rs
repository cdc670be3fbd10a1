//! Every step of the CreateOrder saga x {killed before its commit, killed after its commit but
//! before its reply is sent, reply delivered twice, step timing out}. Each case uses a fresh
//! customer and fresh products and checks, at the end:
//! - the saga and the order are terminal, with the outcome the case calls for;
//! - stock identity: for each product, stock received = available + reserved + sold, nothing
//!   left reserved, and sold = the quantity ordered only if the order was confirmed;
//! - money: credit limit - available = the totals of the customer's confirmed orders (a refund
//!   gives the credit back);
//! - the step's effect happened exactly once (and was undone when the saga gave up on it).

use crate::api::{SETTLE, eventually, new_customer, new_product, place_order, post};
use crate::db;
use crate::harness::service_url;
use crate::kafka::{self, Offsets, Rec};
use crate::stack::{self, Faults};
use schemas::headers as h;
use serde_json::Value;
use std::time::{Duration, Instant};

/// One case at a time, across the tests of this binary: they signal shared processes.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Bound of one step's four cases.
const STEP_LIMIT: Duration = Duration::from_secs(110);

/// A saga step and the service that runs it.
struct Step {
    /// The step's name in the saga definition.
    name: &'static str,
    /// The `./stack` component, which is also the service's name.
    service: &'static str,
    database: &'static str,
    /// The success reply: its domain event type is also its wire record's name.
    reply: &'static str,
    reply_topic: &'static str,
    /// The event of the step's compensation, if it has one.
    undo: Option<&'static str>,
    /// Whether the saga gives up on the step after the configured timeout.
    times_out: bool,
    /// Replies per order: one per order line for the stock, else one.
    per_line: bool,
}

const RESERVE_STOCK: Step = Step {
    name: "reserve_stock",
    service: "product",
    database: "shop_product",
    reply: "StockReserved",
    reply_topic: "product.events",
    undo: Some("StockReleased"),
    times_out: true,
    per_line: true,
};

const AUTHORIZE_PAYMENT: Step = Step {
    name: "authorize_payment",
    service: "payment",
    database: "shop_payment",
    reply: "PaymentAuthorized",
    reply_topic: "payment.events",
    undo: Some("PaymentRefunded"),
    times_out: true,
    per_line: false,
};

const CONFIRM_ORDER: Step = Step {
    name: "confirm_order",
    service: "order",
    database: "shop_order",
    reply: "OrderConfirmed",
    reply_topic: "order.events",
    undo: None,
    times_out: false,
    per_line: false,
};

const COMMAND_TOPICS: [&str; 3] = ["product.commands", "payment.commands", "order.commands"];

fn payment_service() -> String {
    service_url("payment")
}

fn product_service() -> String {
    service_url("product")
}

/// The saga's step timeout on the stack under test (the local stack's setting, see
/// tools/stack/components/service.py).
fn step_timeout() -> Duration {
    let ms = std::env::var("SHOP_SAGA_STEP_TIMEOUT_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(8000);
    Duration::from_millis(ms)
}

/// A fresh customer (with an open payment account) and two fresh products.
struct Shop {
    customer: String,
    /// (product id, stock received, quantity ordered, unit price in cents)
    lines: Vec<(String, i64, i64, i64)>,
}

impl Shop {
    async fn new() -> Shop {
        let customer = new_customer().await;
        // The account opens on CustomerRegistered: wait, so no append of the account's own is
        // pending when a case holds the payment store.
        eventually(&format!("{}/accounts/{customer}", payment_service()), SETTLE, |a| {
            a["credit_limit_cents"].as_i64().is_some_and(|c| c > 10_000)
        })
        .await;
        let a = new_product(1_000, 5).await;
        let b = new_product(2_500, 3).await;
        Shop { customer, lines: vec![(a, 5, 2, 1_000), (b, 3, 1, 2_500)] }
    }

    fn total(&self) -> i64 {
        self.lines.iter().map(|(_, _, q, p)| q * p).sum()
    }

    async fn place(&self) -> String {
        let items: Vec<(&str, i64)> = self.lines.iter().map(|(id, _, q, _)| (id.as_str(), *q)).collect();
        place_order(&self.customer, &items).await
    }

    /// How many replies of `step` one order of this shop gets.
    fn replies(&self, step: &Step) -> i64 {
        if step.per_line { i64::try_from(self.lines.len()).expect("lines") } else { 1 }
    }
}

async fn saga(order: &str) -> Value {
    eventually(&format!("/api/sagas/{order}"), SETTLE, |_| true).await
}

/// Wait until the saga runs `step` (the step's command is on its way).
async fn saga_at(order: &str, step: &Step) {
    eventually(&format!("/api/sagas/{order}"), SETTLE, |s| s["status"] == "RUNNING" && s["step"] == step.name).await;
}

fn timed_out_reason(step: &Step) -> String {
    format!("timed out waiting for {}", step.name)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    Confirmed,
    /// Rejected because the step timed out.
    TimedOut,
    /// Confirmed, or rejected because the step timed out: a killed service comes back after its
    /// consumer group notices it is gone (the group's session timeout), which may outlast the
    /// step timeout. Either way the effect happens once and, if late, is undone.
    ConfirmedUnlessTimedOut,
    /// Rejected because an operator compensated it.
    CompensatedByOperator,
}

/// The saga is over and nothing of it is left in flight.
fn settled(s: &Value) -> bool {
    let lines_done = s["lines"].as_array().is_some_and(|ls| {
        ls.iter().all(|l| ["COMMITTED", "RELEASED", "FAILED"].contains(&l["state"].as_str().unwrap_or("")))
    });
    let payment_done = ["NONE", "DECLINED", "REFUNDED", "CONFIRMED"].contains(&s["payment"].as_str().unwrap_or(""));
    (s["status"] == "CONFIRMED" || s["status"] == "REJECTED") && lines_done && payment_done
}

fn timeline(s: &Value) -> String {
    s["history"]
        .as_array()
        .map(|h| {
            h.iter()
                .map(|e| {
                    format!(
                        "      {} [{}] {}",
                        e["at"].as_str().unwrap_or(""),
                        e["step"].as_str().unwrap_or(""),
                        e["what"].as_str().unwrap_or("")
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

/// Wait for the end of the order's saga and check the outcome and the invariants. Returns the
/// saga.
async fn settle(shop: &Shop, order: &str, step: &Step, expect: Expect) -> Value {
    let s = eventually(&format!("/api/sagas/{order}"), SETTLE, settled).await;
    println!("    saga {order}: {} {}\n{}", s["status"], s["reason"], timeline(&s));
    let confirmed = s["status"] == "CONFIRMED";
    let timed_out = s["status"] == "REJECTED" && s["reason"] == timed_out_reason(step).as_str();
    let by_operator =
        s["status"] == "REJECTED" && s["reason"].as_str().is_some_and(|r| r.starts_with("compensated by "));
    match expect {
        Expect::Confirmed => assert!(confirmed, "expected CONFIRMED: {s}"),
        Expect::TimedOut => assert!(timed_out, "expected REJECTED with {:?}: {s}", timed_out_reason(step)),
        Expect::ConfirmedUnlessTimedOut => assert!(confirmed || timed_out, "expected CONFIRMED or a timeout: {s}"),
        Expect::CompensatedByOperator => assert!(by_operator, "expected REJECTED by an operator: {s}"),
    }
    // The order (its read model) ends the same way.
    let o = eventually(&format!("/api/orders/{order}"), SETTLE, |o| {
        o["status"] == "CONFIRMED" || o["status"] == "REJECTED"
    })
    .await;
    assert_eq!(o["status"], s["status"], "the order and its saga disagree: {o}");

    // Stock identity, and nothing left reserved.
    for (product, received, quantity, _) in &shop.lines {
        let sold = if confirmed { *quantity } else { 0 };
        let p = eventually(&format!("{}/internal/products/{product}", product_service()), SETTLE, |p| {
            p["reserved"] == 0 && p["sold"] == sold
        })
        .await;
        let (available, reserved, sold) = (p["available"].as_i64(), p["reserved"].as_i64(), p["sold"].as_i64());
        assert_eq!(
            Some(*received),
            available.zip(reserved).zip(sold).map(|((a, r), s)| a + r + s),
            "stock identity broken for product {product}: {p}"
        );
    }

    // Money: the credit used is the total of the confirmed orders (this customer has one order).
    let charged = if confirmed { shop.total() } else { 0 };
    let url = format!("{}/accounts/{}", payment_service(), shop.customer);
    let a = eventually(&url, SETTLE, |a| {
        a["credit_limit_cents"].as_i64().zip(a["available_cents"].as_i64()).is_some_and(|(l, av)| l - av == charged)
    })
    .await;
    let payment = a["payments"].as_array().and_then(|ps| ps.iter().find(|p| p["order_id"] == order)).cloned();
    let state = payment.as_ref().map(|p| p["state"].as_str().unwrap_or_default().to_owned());
    if confirmed {
        assert_eq!(state.as_deref(), Some("Confirmed"), "payment of a confirmed order: {a}");
    } else {
        assert!(matches!(state.as_deref(), None | Some("Refunded" | "Declined")), "payment of a rejected order: {a}");
    }
    s
}

/// The step's replies for `order` on its topic since `from` (committed records only).
async fn published(step: &Step, order: &str, from: &Offsets) -> Vec<Rec> {
    let suffix = format!(".{}", step.reply);
    kafka::read(step.reply_topic, from)
        .await
        .into_iter()
        .filter(|r| {
            r.header(h::CORRELATION_ID).as_deref() == Some(order)
                && r.header(h::RECORD).is_some_and(|n| n.ends_with(&suffix))
        })
        .collect()
}

/// Hold the step's command before its commit: the service's event store is locked and its
/// handler blocked on the append. Returns the order.
async fn hold_before_commit(shop: &Shop, step: &Step, faults: &mut Faults) -> String {
    let order = if step.service == "order" {
        // The order service must record OrderPlaced first; ConfirmOrder comes two steps later.
        let order = shop.place().await;
        faults.hold("events", db::lock_events(step.database).await);
        order
    } else {
        faults.hold("events", db::lock_events(step.database).await);
        shop.place().await
    };
    saga_at(&order, step).await;
    db::wait_blocked_append(step.database, Duration::from_secs(20)).await;
    assert_eq!(
        db::events(step.database, &order, step.reply).await,
        0,
        "{} committed before the fault was in place",
        step.reply
    );
    order
}

async fn killed_before_commit(step: &Step) {
    println!("{} x killed before its commit", step.name);
    let shop = Shop::new().await;
    let mut faults = Faults::default();
    let order = hold_before_commit(&shop, step, &mut faults).await;
    faults.kill(step.service);
    // The dead process's transaction never commits; Kafka redelivers the uncommitted command.
    faults.release("events").await;
    faults.restart(step.service);
    let s = settle(&shop, &order, step, Expect::ConfirmedUnlessTimedOut).await;
    let n = shop.replies(step);
    assert_eq!(db::events(step.database, &order, step.reply).await, n, "the redelivered command took effect once");
    if s["status"] == "REJECTED"
        && let Some(undo) = step.undo
    {
        assert_eq!(db::events(step.database, &order, undo).await, n, "the late effect was undone");
    }
}

async fn killed_after_commit(step: &Step) {
    println!("{} x killed after its commit, before the reply is sent", step.name);
    let shop = Shop::new().await;
    let from = kafka::ends(step.reply_topic);
    let mut faults = Faults::default();
    let order = if step.service == "order" {
        // OrderPlaced must leave the outbox before the relay is held: hold ConfirmOrder before
        // its commit meanwhile.
        let order = hold_before_commit(&shop, step, &mut faults).await;
        faults.hold("relay", db::take_relay_lock(step.database).await);
        faults.release("events").await;
        order
    } else {
        faults.hold("relay", db::take_relay_lock(step.database).await);
        shop.place().await
    };
    let n = shop.replies(step);
    db::wait_outbox_rows(step.database, &order, step.reply, n, SETTLE).await;
    assert!(published(step, &order, &from).await.is_empty(), "{} left before the fault", step.reply);
    faults.kill(step.service);
    faults.release("relay").await;
    faults.restart(step.service);
    let s = settle(&shop, &order, step, Expect::ConfirmedUnlessTimedOut).await;
    let sent = published(step, &order, &from).await;
    assert_eq!(i64::try_from(sent.len()).expect("count"), n, "the committed reply is published exactly once: {sent:?}");
    assert_eq!(db::events(step.database, &order, step.reply).await, n, "the command took effect once");
    db::wait_outbox_drained(step.database, &order, step.reply, Duration::from_secs(5)).await;
    if s["status"] == "REJECTED"
        && let Some(undo) = step.undo
    {
        assert_eq!(db::events(step.database, &order, undo).await, n, "the late effect was undone");
    }
}

async fn reply_delivered_twice(step: &Step) {
    println!("{} x reply delivered twice", step.name);
    let shop = Shop::new().await;
    let from = kafka::ends(step.reply_topic);
    let order = shop.place().await;
    let before = settle(&shop, &order, step, Expect::Confirmed).await;
    let replies = published(step, &order, &from).await;
    let n = shop.replies(step);
    assert_eq!(i64::try_from(replies.len()).expect("count"), n, "{replies:?}");

    // The saga moved on (it is over); the same records again: key, payload, headers, message id.
    let commands: Vec<(&str, Offsets)> = COMMAND_TOPICS.iter().map(|t| (*t, kafka::ends(t))).collect();
    let producer = kafka::producer();
    let mut copies = Offsets::new();
    for r in &replies {
        let payload = r.payload.as_deref().unwrap_or_default();
        let (p, o) =
            kafka::produce(&producer, step.reply_topic, Some(r.partition), r.key.as_deref(), payload, &r.headers).await;
        let next = copies.entry(p).or_insert(0);
        *next = (*next).max(o + 1);
        println!(
            "    {} {} delivered again at {}/{p}/{o}",
            step.reply,
            r.header(h::MESSAGE_ID).unwrap_or_default(),
            step.reply_topic
        );
    }
    kafka::wait_consumed(step.reply_topic, &copies, SETTLE).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let after = saga(&order).await;
    for field in ["status", "step", "reason", "lines", "payment", "history"] {
        assert_eq!(after[field], before[field], "the duplicate changed the saga's {field}");
    }
    for (topic, start) in &commands {
        let caused: Vec<String> = kafka::read(topic, start)
            .await
            .into_iter()
            .filter(|r| r.header(h::CORRELATION_ID).as_deref() == Some(order.as_str()))
            .map(|r| format!("{topic}/{}/{} {}", r.partition, r.offset, r.header(h::RECORD).unwrap_or_default()))
            .collect();
        assert!(caused.is_empty(), "the duplicate set off commands: {caused:?}");
    }
    settle(&shop, &order, step, Expect::Confirmed).await;
    assert_eq!(db::events(step.database, &order, step.reply).await, n, "the step took effect once");
}

async fn timing_out(step: &Step) {
    println!("{} x step timing out", step.name);
    let shop = Shop::new().await;
    let mut faults = Faults::default();
    let order = hold_before_commit(&shop, step, &mut faults).await;
    faults.stop(step.service);
    // The append goes through now, but the commit waits for the stopped process.
    faults.release("events").await;
    let n = shop.replies(step);
    if step.times_out {
        // The saga gives up at the deadline and compensates while the service sleeps.
        let s = eventually(&format!("/api/sagas/{order}"), SETTLE, |s| s["status"] != "RUNNING").await;
        assert_eq!(s["reason"], timed_out_reason(step).as_str(), "{s}");
        faults.resume(step.service);
        settle(&shop, &order, step, Expect::TimedOut).await;
        // The late effect happened after SIGCONT, once, and was undone.
        assert_eq!(db::events(step.database, &order, step.reply).await, n, "the late command took effect once");
        let undo = step.undo.expect("a step that times out has a compensation");
        assert_eq!(db::events(step.database, &order, undo).await, n, "the late effect was undone");
    } else {
        // No timeout on this step: the saga waits as long as it takes.
        let hold = step_timeout() + Duration::from_secs(3);
        let start = Instant::now();
        while start.elapsed() < hold {
            let s = saga(&order).await;
            assert!(s["status"] == "RUNNING" && s["step"] == step.name, "the saga did not wait for {}: {s}", step.name);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        faults.resume(step.service);
        settle(&shop, &order, step, Expect::Confirmed).await;
        assert_eq!(db::events(step.database, &order, step.reply).await, n, "the command took effect once");
    }
}

async fn all_faults(step: &'static Step) {
    let _serial = SERIAL.lock().await;
    stack::assert_restartable();
    let t = Instant::now();
    let cases = async {
        let c = Instant::now();
        killed_before_commit(step).await;
        println!("    ({:.1}s)", c.elapsed().as_secs_f64());
        let c = Instant::now();
        killed_after_commit(step).await;
        println!("    ({:.1}s)", c.elapsed().as_secs_f64());
        let c = Instant::now();
        reply_delivered_twice(step).await;
        println!("    ({:.1}s)", c.elapsed().as_secs_f64());
        let c = Instant::now();
        timing_out(step).await;
        println!("    ({:.1}s)", c.elapsed().as_secs_f64());
    };
    tokio::time::timeout(STEP_LIMIT, cases)
        .await
        .unwrap_or_else(|_| panic!("the faults of {} took longer than {STEP_LIMIT:?}", step.name));
    println!("{}: four faults in {:.1}s", step.name, t.elapsed().as_secs_f64());
}

#[tokio::test]
#[ignore = "needs the running stack: ./stack test"]
async fn reserve_stock_survives_kills_duplicates_and_timeouts() {
    all_faults(&RESERVE_STOCK).await;
}

#[tokio::test]
#[ignore = "needs the running stack: ./stack test"]
async fn authorize_payment_survives_kills_duplicates_and_timeouts() {
    all_faults(&AUTHORIZE_PAYMENT).await;
}

#[tokio::test]
#[ignore = "needs the running stack: ./stack test"]
async fn confirm_order_survives_kills_duplicates_and_timeouts() {
    all_faults(&CONFIRM_ORDER).await;
}

/// An operator acts on a saga held at a step (its command blocked before the commit): a retry
/// sends the command again and it takes effect once; "compensate now" gives up on the step,
/// rejects the order with the operator's reason, and the late effect is undone. Both are in
/// the saga's history with who acted and why.
#[tokio::test]
#[ignore = "needs the running stack: ./stack test"]
async fn an_operator_retries_or_compensates_a_held_saga() {
    let _serial = SERIAL.lock().await;
    stack::assert_restartable();
    let history = |s: &Value| s["history"].to_string();

    println!("reserve_stock x an operator's retry");
    let shop = Shop::new().await;
    let mut faults = Faults::default();
    let order = hold_before_commit(&shop, &RESERVE_STOCK, &mut faults).await;
    let (status, body) =
        post(&format!("/api/sagas/{order}/retry"), &serde_json::json!({ "reason": "held by the test" })).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    faults.release("events").await;
    let s = settle(&shop, &order, &RESERVE_STOCK, Expect::Confirmed).await;
    assert!(history(&s).contains("retried by admin") && history(&s).contains("held by the test"), "{s}");
    let n = shop.replies(&RESERVE_STOCK);
    assert_eq!(
        db::events(RESERVE_STOCK.database, &order, RESERVE_STOCK.reply).await,
        n,
        "the retried command took effect once"
    );

    println!("authorize_payment x an operator's compensation");
    let shop = Shop::new().await;
    let order = hold_before_commit(&shop, &AUTHORIZE_PAYMENT, &mut faults).await;
    let why = serde_json::json!({ "reason": "the payment provider is down" });
    let (status, body) = post(&format!("/api/sagas/{order}/compensate"), &why).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    faults.release("events").await;
    let s = settle(&shop, &order, &AUTHORIZE_PAYMENT, Expect::CompensatedByOperator).await;
    assert!(s["reason"].as_str().is_some_and(|r| r.ends_with("the payment provider is down")), "{s}");
    assert_eq!(db::events(AUTHORIZE_PAYMENT.database, &order, "PaymentAuthorized").await, 1, "authorized once");
    assert_eq!(
        db::events(AUTHORIZE_PAYMENT.database, &order, "PaymentRefunded").await,
        1,
        "the late authorization was refunded"
    );
    let (status, body) = post(&format!("/api/sagas/{order}/compensate"), &why).await;
    assert_eq!(status, reqwest::StatusCode::CONFLICT, "a second compensation is refused: {body}");
}
