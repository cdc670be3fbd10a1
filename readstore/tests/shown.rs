//! Long-polls waiting for documents to show ([`readstore::shown::Shown`]) against the real
//! MongoDB-wire server (`SHOP_MONGODB_URL`, default 127.0.0.1:27017): each gets its document
//! once it reaches the version asked for, or nothing when it does not in time, and all of them
//! together cost one lookup per tick, not one per request. The run uses a database of its own
//! and drops it.

use mongodb::bson::{Document, doc};
use readstore::readmodel::ActiveCollection;
use readstore::shown::{ShowDelay, Shown};
use runtime::consistency::Token;
use std::sync::Arc;
use std::time::Duration;

async fn mongo() -> mongodb::Client {
    let url = std::env::var("SHOP_MONGODB_URL")
        .unwrap_or_else(|_| "mongodb://127.0.0.1:27017/?directConnection=true&retryWrites=false".into());
    readstore::readmodel::connect(&url).await.expect("mongodb")
}

const WAITING: usize = 60;
const TICK: Duration = Duration::from_millis(20);
/// Documents added before the explain, so that reading by the index is the cheaper plan.
const FILLER: usize = 5_000;

#[tokio::test]
#[ignore = "needs the running stack: ./stack test"]
async fn waiting_requests_get_their_documents_with_one_lookup_per_tick() {
    let client = mongo().await;
    let db = client.database(&format!("test_shown_{}", uuid::Uuid::new_v4().simple()));
    let coll = db.collection::<Document>("orders");
    let ids: Vec<String> = (0..WAITING).map(|i| format!("order-{i}")).collect();
    let docs: Vec<Document> = ids.iter().map(|id| doc! { "_id": id, "status": "PENDING", "v_order": 1_i64 }).collect();
    coll.insert_many(docs).await.expect("insert");

    let shown = Arc::new(Shown::new(ActiveCollection::fixed(coll.clone()), ShowDelay::new(TICK, TICK), TICK, TICK));
    let waits: Vec<_> = ids
        .iter()
        .map(|id| {
            let (shown, token) = (shown.clone(), Token::new("order", id, 2));
            tokio::spawn(async move { shown.until_shown(&token, Duration::from_millis(1500)).await })
        })
        .collect();
    // Half of them settle a while later; the other half never does.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for id in ids.iter().step_by(2) {
        coll.update_one(doc! { "_id": id }, doc! { "$set": { "status": "CONFIRMED", "v_order": 2_i64 } })
            .await
            .expect("update");
    }
    let started = std::time::Instant::now();
    let mut answers = Vec::new();
    for wait in waits {
        answers.push(wait.await.expect("wait"));
    }
    let waited = started.elapsed() + Duration::from_millis(300);

    for (i, (id, answer)) in ids.iter().zip(&answers).enumerate() {
        if i % 2 == 0 {
            let doc = answer.as_ref().unwrap_or_else(|| panic!("{id} reached version 2 but its wait got nothing"));
            assert_eq!(doc.get_str("_id").unwrap(), id);
            assert_eq!(doc.get_str("status").unwrap(), "CONFIRMED", "{doc}");
            assert_eq!(doc.get_i64("v_order").unwrap(), 2);
        } else {
            assert!(answer.is_none(), "{id} never reached version 2 but its wait got {answer:?}");
        }
    }
    // Per request, each wait would have looked a dozen times or more (pauses from 20 ms growing
    // by half up to 500 ms, over 1.5 s): hundreds of lookups. Together: at most one per tick.
    let lookups = shown.lookups();
    let ticks = (waited.as_millis() / TICK.as_millis()) as u64 + 2;
    assert!(lookups >= 2, "{lookups} lookups");
    assert!(lookups <= ticks, "{lookups} lookups in {waited:?} for {WAITING} waiting requests: more than one per tick");

    // On FerretDB, the lookup by a list of ids is served by the `_id` index (the stack's patch):
    // its explain says the filter was pushed down to PostgreSQL and the plan reads the index.
    // Real MongoDB has no such field. On a table of a few dozen rows PostgreSQL rightly prefers
    // reading its one page to the index (once it has statistics), so the collection first gets
    // the size of a real one.
    let filler: Vec<Document> =
        (0..FILLER).map(|i| doc! { "_id": format!("filler-{i}"), "status": "CONFIRMED", "v_order": 2_i64 }).collect();
    coll.insert_many(filler).await.expect("insert filler");
    let explain = db
        .run_command(doc! { "explain": { "find": "orders", "filter": { "_id": { "$in": [&ids[0], &ids[1]] } } } })
        .await
        .expect("explain");
    if let Ok(pushed) = explain.get_bool("filterPushdown") {
        let plan = explain.get_document("queryPlanner").map(ToString::to_string).unwrap_or_default();
        assert!(
            pushed && plan.contains("Index Cond"),
            "FerretDB does not look up `_id: {{$in: [...]}}` by the index: {explain}"
        );
    }
    db.drop().await.expect("drop");
}
