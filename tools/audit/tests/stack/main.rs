//! The auditor against the running stack (`./stack test` starts it and runs these with
//! `--include-ignored`): on orders placed through the gateway it finds nothing wrong, and each
//! store corrupted on purpose — a duplicated charge, a lost event, a wrong read model — is
//! reported as exactly that violation and no other.
//!
//! Each test corrupts only data it created (a fresh customer, product and order) and puts the
//! store back as it was before it asserts, so the stack is left whole. A corruption test
//! compares the audit after the corruption with the audit just before it: whatever the stack
//! held already is in both. The tests run one at a time ([`SERIAL`]): an audit reads the whole
//! stack, and a corruption must not be seen by another test's audit.

mod harness;

use audit::report::Offender;
use domain::order::OrderStatus;
use harness::*;
use mongodb::bson::{Bson, Document, doc};
use readstore::readmodel::{self, ReadModel};
use std::time::Duration;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A customer with one confirmed order of one product.
struct Flow {
    customer: String,
    product: String,
    order: String,
}

async fn confirmed_flow() -> Flow {
    let customer = new_customer().await;
    let product = new_product(1_250, 20).await;
    let order = place(&customer, &[(&product, 2)]).await;
    assert_eq!(settled(&order).await, "CONFIRMED");
    Flow { customer, product, order }
}

/// The only difference between the audits is one new offender, in `check`, about `id`;
/// returns it.
fn exactly_one_new(before: &audit::Report, after: &audit::Report, check: &str, id: &str) -> Offender {
    let (new, gone) = difference(before, after);
    assert!(gone.is_empty(), "the corruption made offenders disappear: {gone:#?}");
    assert_eq!(new.len(), 1, "expected exactly one new violation, got {new:#?}");
    let (found_in, offender) = new.into_iter().next().expect("one");
    assert_eq!(found_in, check, "reported by the wrong check: {offender}");
    assert!(offender.involves(id), "the violation is not about {id}: {offender:?}");
    for c in &after.checks {
        let was = before.check(c.id).expect("same checks").ok();
        assert_eq!(c.ok(), was && c.id != check, "{}: {} before, {} after", c.id, was, c.ok());
    }
    offender
}

fn same_verdict(before: &audit::Report, after: &audit::Report) {
    let (new, gone) = difference(before, after);
    assert!(new.is_empty() && gone.is_empty(), "the store was not put back: new {new:#?}, gone {gone:#?}");
}

#[tokio::test]
#[ignore = "needs the running stack: ./stack test"]
async fn a_shop_with_orders_of_every_outcome_passes_every_check() {
    let _one_at_a_time = SERIAL.lock().await;
    let customer = new_customer().await;
    let mug = new_product(1_250, 10).await;
    let grinder = new_product(60_000, 3).await;
    let confirmed = place(&customer, &[(&mug, 2), (&grinder, 1)]).await;
    let cancelled = place(&customer, &[(&mug, 1)]).await;
    // 2 grinders cost 1200.00 EUR, more than the credit left: declined, stock released.
    let over_credit = place(&customer, &[(&grinder, 2)]).await;
    // More mugs than there are: the reservation fails.
    let over_stock = place(&customer, &[(&mug, 50)]).await;
    assert_eq!(settled(&confirmed).await, "CONFIRMED");
    assert_eq!(settled(&cancelled).await, "CONFIRMED");
    cancel(&cancelled).await;
    assert_eq!(settled(&over_credit).await, "REJECTED");
    assert_eq!(settled(&over_stock).await, "REJECTED");
    add_stock(&mug, 5).await;

    // What this client was promised: each order accepted, and the final statuses it saw (the
    // cancelled one it last saw CONFIRMED, before its cancel).
    let promise = |line: usize, id: &str, seen: Option<OrderStatus>| audit::Promise {
        line,
        order_id: id.to_owned(),
        final_seen: seen,
        cancel_unknown: false,
    };
    let promised = vec![
        promise(1, &confirmed, Some(OrderStatus::Confirmed)),
        promise(2, &cancelled, None),
        promise(3, &over_credit, Some(OrderStatus::Rejected)),
        promise(4, &over_stock, Some(OrderStatus::Rejected)),
    ];
    let report = audit_promised("orders of every outcome", SETTLE, promised).await.expect("audit");
    assert!(report.conditions.settled, "the stack did not quieten: {:?}", report.conditions.unsettled);
    let offenders: Vec<String> = offenders(&report).iter().map(|(c, o)| format!("{c}: {o}")).collect();
    assert!(report.ok, "the auditor found something wrong:\n{}", offenders.join("\n"));
    for c in &report.checks {
        assert!(c.checked > 0, "{} judged nothing", c.id);
    }
    assert!(report.check("orders_finished").expect("check 1").checked >= 4);
    assert_eq!(report.check("promises_kept").expect("check 7").checked, 4);
}

/// A second `PaymentConfirmed` (the capture: the customer is charged) appended to the payment
/// event store for an order already charged, with the next sequence of the account's stream.
/// The payment service's relay is held meanwhile, so the event is stored (and queued in the
/// outbox, in flight) but never published: taking it back out leaves no trace on Kafka.
#[tokio::test]
#[ignore = "needs the running stack: ./stack test"]
async fn a_duplicated_charge_is_reported_as_exactly_that() {
    let _one_at_a_time = SERIAL.lock().await;
    let flow = confirmed_flow().await;
    let before = audit("before a duplicated charge", SETTLE).await;
    assert!(before.conditions.settled, "the stack did not quieten: {:?}", before.conditions.unsettled);

    let relay = hold_relay("shop_payment").await;
    let mut payment = db("shop_payment").await;
    let appended: i64 = sqlx::query_scalar(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         SELECT aggregate_type, aggregate_id, \
                (SELECT max(sequence) + 1 FROM events WHERE aggregate_type = 'Account' AND aggregate_id = $1), \
                event_type, event_version, payload, metadata \
           FROM events \
          WHERE aggregate_type = 'Account' AND aggregate_id = $1 AND event_type = 'PaymentConfirmed' \
            AND payload -> 'PaymentConfirmed' ->> 'order_id' = $2 \
         RETURNING sequence",
    )
    .bind(&flow.customer)
    .bind(&flow.order)
    .fetch_one(&mut payment)
    .await
    .expect("appending a second PaymentConfirmed");
    let corrupted = try_audit("a duplicated charge", Duration::ZERO).await;

    // Put it back before judging: the event and its outbox row, then the relay.
    let mut tx = sqlx::Connection::begin(&mut payment).await.expect("begin");
    sqlx::query("DELETE FROM events WHERE aggregate_type = 'Account' AND aggregate_id = $1 AND sequence = $2")
        .bind(&flow.customer)
        .bind(appended)
        .execute(&mut *tx)
        .await
        .expect("removing the duplicate");
    let queued = sqlx::query("DELETE FROM outbox WHERE message_id = md5('Account/' || $1 || '/' || $2)::uuid")
        .bind(&flow.customer)
        .bind(appended)
        .execute(&mut *tx)
        .await
        .expect("removing its outbox row");
    tx.commit().await.expect("commit");
    drop(relay);
    assert_eq!(queued.rows_affected(), 1, "the duplicate was not waiting in the outbox: was it published?");
    let restored = audit("after putting the payment store back", SETTLE).await;

    let corrupted = corrupted.expect("auditing the duplicated charge");
    let offender = exactly_one_new(&before, &corrupted, "no_duplicate_effects", &flow.order);
    assert_eq!(offender.problem, "confirmed (charged) 2 times", "{offender}");
    assert!(offender.involves(&flow.customer), "{offender:?}");
    same_verdict(&before, &restored);
}

/// The last event of a product's stream (a stock delivery) deleted from the product event
/// store after it was published: the topic holds an event no store has.
#[tokio::test]
#[ignore = "needs the running stack: ./stack test"]
async fn a_lost_event_is_reported_as_exactly_that() {
    let _one_at_a_time = SERIAL.lock().await;
    let product = new_product(990, 12).await;
    add_stock(&product, 7).await;
    let before = audit("before a lost event", SETTLE).await;
    assert!(before.conditions.settled, "the stack did not quieten: {:?}", before.conditions.unsettled);

    let mut store = db("shop_product").await;
    let (sequence, event_type, event_version, payload, metadata): (i64, String, String, String, String) =
        sqlx::query_as(
            "DELETE FROM events WHERE aggregate_type = 'Product' AND aggregate_id = $1 AND event_type = 'StockAdded' \
               AND sequence = (SELECT max(sequence) FROM events WHERE aggregate_type = 'Product' AND aggregate_id = $1) \
             RETURNING sequence, event_type, event_version, payload::text, metadata::text",
        )
        .bind(&product)
        .fetch_one(&mut store)
        .await
        .expect("deleting the product's last event, its StockAdded");
    let corrupted = try_audit("a lost event", SETTLE).await;

    // Put it back as it was, without publishing it again (its outbox row goes in the same
    // transaction the trigger made it in).
    let mut tx = sqlx::Connection::begin(&mut store).await.expect("begin");
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         VALUES ('Product', $1, $2, $3, $4, $5::json, $6::json)",
    )
    .bind(&product)
    .bind(sequence)
    .bind(&event_type)
    .bind(&event_version)
    .bind(&payload)
    .bind(&metadata)
    .execute(&mut *tx)
    .await
    .expect("restoring the event");
    sqlx::query("DELETE FROM outbox WHERE message_id = md5('Product/' || $1 || '/' || $2)::uuid")
        .bind(&product)
        .bind(sequence)
        .execute(&mut *tx)
        .await
        .expect("dropping the restored event's outbox row");
    tx.commit().await.expect("commit");
    let restored = audit("after putting the product store back", SETTLE).await;

    let corrupted = corrupted.expect("auditing the lost event");
    let offender = exactly_one_new(&before, &corrupted, "stores_and_topics_agree", &product);
    assert!(
        offender.problem.starts_with("shop.product.StockAdded ") && offender.problem.ends_with(" is in no event store"),
        "{offender}"
    );
    assert!(offender.subject.starts_with("record product.events/"), "{offender}");
    same_verdict(&before, &restored);
}

/// One field of a product's catalog document changed in MongoDB.
#[tokio::test]
#[ignore = "needs the running stack: ./stack test"]
async fn a_wrong_read_model_is_reported_as_exactly_that() {
    let _one_at_a_time = SERIAL.lock().await;
    let flow = confirmed_flow().await;
    let before = audit("before a wrong read model", SETTLE).await;
    assert!(before.conditions.settled, "the stack did not quieten: {:?}", before.conditions.unsettled);

    let client = mongo().await;
    let active = readmodel::active_name(&client, ReadModel::Catalog).await.expect("catalog pointer");
    let catalog = client.database(ReadModel::Catalog.location().0).collection::<Document>(&active);
    let original = catalog
        .find_one(doc! { "_id": &flow.product })
        .await
        .expect("reading the catalog")
        .and_then(|d| d.get("available").cloned())
        .expect("the product's catalog document has `available`");
    let wrong = match &original {
        Bson::Int32(n) => Bson::Int64(i64::from(*n) + 1),
        Bson::Int64(n) => Bson::Int64(n + 1),
        other => panic!("available is {other:?}"),
    };
    catalog
        .update_one(doc! { "_id": &flow.product }, doc! { "$set": { "available": wrong } })
        .await
        .expect("changing the document");
    let corrupted = try_audit("a wrong read model", SETTLE).await;

    catalog
        .update_one(doc! { "_id": &flow.product }, doc! { "$set": { "available": original.clone() } })
        .await
        .expect("putting the document back");
    let restored = audit("after putting the read model back", SETTLE).await;

    let corrupted = corrupted.expect("auditing the wrong read model");
    let offender = exactly_one_new(&before, &corrupted, "read_models_match_replay", &flow.product);
    assert_eq!(offender.subject, format!("catalog/{}", flow.product));
    let n = original.as_i64().or_else(|| original.as_i32().map(i64::from)).expect("a number");
    assert_eq!(offender.problem, format!("available: live {}, replay {n}", n + 1));
    same_verdict(&before, &restored);
}
