//! The folded rebuild writes the same documents as the per-event projection, also when a
//! batch is re-applied after a kill. Needs a MongoDB-wire server (`SHOP_MONGODB_URL`, default
//! 127.0.0.1:27017); each run uses databases of its own and drops them.

use futures::TryStreamExt;
use messaging::consumer::{Envelope, Handler};
use mongodb::bson::{Bson, Document, doc};
use mongodb::{Client, Collection};
use projectors::fold::{self, Known, Outcome};
use projectors::{Projections, synthetic};
use readstore::readmodel::ReadModel;
use std::collections::BTreeMap;

fn mongo_url() -> String {
    std::env::var("SHOP_MONGODB_URL")
        .unwrap_or_else(|_| "mongodb://127.0.0.1:27017/?directConnection=true&retryWrites=false".into())
}

async fn mongo() -> Client {
    readstore::readmodel::connect(&mongo_url()).await.expect("mongodb")
}

/// The read models' collections in `db`, created one after the other with their indexes, as
/// a rebuild does before it writes (some servers do not like collections of a new database
/// created implicitly by concurrent writes).
async fn collections(m: &Client, db: &str) -> BTreeMap<ReadModel, Collection<Document>> {
    let colls: BTreeMap<_, _> =
        ReadModel::ALL.iter().map(|r| (*r, m.database(db).collection(r.location().1))).collect();
    Projections::into_collections(colls.clone()).create_indexes().await.expect("indexes");
    colls
}

/// Field order aside (servers differ in where they put a new field), documents as values.
fn normalized(b: &Bson) -> Bson {
    match b {
        Bson::Document(d) => {
            let mut keys: Vec<_> = d.keys().cloned().collect();
            keys.sort();
            Bson::Document(keys.into_iter().map(|k| (k.clone(), normalized(&d[&k]))).collect())
        }
        Bson::Array(items) => Bson::Array(items.iter().map(normalized).collect()),
        other => other.clone(),
    }
}

async fn all(colls: &BTreeMap<ReadModel, Collection<Document>>) -> BTreeMap<ReadModel, Vec<Bson>> {
    let mut out = BTreeMap::new();
    for (r, c) in colls {
        let mut docs: Vec<Document> = c.find(doc! {}).await.unwrap().try_collect().await.unwrap();
        docs.sort_by_key(|d| d.get_str("_id").unwrap_or_default().to_owned());
        out.insert(*r, docs.iter().map(|d| normalized(&Bson::Document(d.clone()))).collect());
    }
    out
}

fn envelopes() -> Vec<Envelope> {
    let history = synthetic::Shop::new(7).history(2_000);
    history.iter().enumerate().map(|(i, e)| e.envelope(i as i64)).collect()
}

async fn per_event(colls: &BTreeMap<ReadModel, Collection<Document>>, envelopes: &[Envelope]) {
    let p = Projections::into_collections(colls.clone());
    for e in envelopes {
        p.handle(e).await.expect("per-event projection");
    }
}

/// Folded batches of `size`; batches the fold refuses go event by event, as in the rebuild.
async fn folded(colls: &BTreeMap<ReadModel, Collection<Document>>, envelopes: &[Envelope], size: usize) -> usize {
    let mut known = Known::load(colls).await.unwrap();
    let mut fallbacks = 0;
    for batch in envelopes.chunks(size) {
        let changes = batch.iter().flat_map(|e| projectors::changes(e).unwrap()).collect();
        if fold::write(colls, &mut known, changes).await.unwrap() == Outcome::PerEvent {
            fallbacks += 1;
            per_event(colls, batch).await;
        }
    }
    fallbacks
}

#[tokio::test]
async fn folded_batches_write_the_same_documents_as_event_by_event() {
    let m = mongo().await;
    let run = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
    let envelopes = envelopes();
    let reference_db = format!("foldtest_{run}_ref");
    let reference = collections(&m, &reference_db).await;
    let began = std::time::Instant::now();
    per_event(&reference, &envelopes).await;
    eprintln!("{} events event by event in {:?}", envelopes.len(), began.elapsed());
    let expected = all(&reference).await;
    for r in ReadModel::ALL {
        assert!(!expected[&r].is_empty(), "the history touches {r}");
    }

    let mut dbs = vec![reference_db];
    for size in [1, 37, 500, 5_000] {
        let db = format!("foldtest_{run}_{size}");
        let colls = collections(&m, &db).await;
        let began = std::time::Instant::now();
        let fallbacks = folded(&colls, &envelopes, size).await;
        eprintln!("batches of {size}: {:?}", began.elapsed());
        assert_eq!(fallbacks, 0, "batch size {size}: a fresh replay needs no fallback");
        let got = all(&colls).await;
        for r in ReadModel::ALL {
            assert_eq!(got[&r].len(), expected[&r].len(), "batch size {size}, {r}: document counts");
            for (g, e) in got[&r].iter().zip(&expected[&r]) {
                assert_eq!(g, e, "batch size {size}, {r}");
            }
        }
        dbs.push(db);
    }

    // A kill after a batch was written and before its progress was saved: the next run reads
    // that batch (and more) again, with the ids it finds in the collections.
    let db = format!("foldtest_{run}_resume");
    let colls = collections(&m, &db).await;
    let (first, _) = envelopes.split_at(900);
    folded(&colls, first, 300).await;
    let fallbacks = folded(&colls, &envelopes[600..], 300).await;
    assert_eq!(fallbacks, 0, "a re-read batch folds: the versions in the documents mark its repeats");
    assert_eq!(all(&colls).await, expected, "resumed");
    dbs.push(db);

    // Topics hold duplicates (an at-least-once relay, redelivered flows): repeats next to the
    // original, a few records later, and whole runs again far behind (other batches).
    let mut repeated = Vec::new();
    for (i, e) in envelopes.iter().enumerate() {
        repeated.push(e.clone());
        if i % 7 == 0 {
            repeated.push(e.clone());
        }
        if i % 11 == 0 && i >= 5 {
            repeated.push(envelopes[i - 5].clone());
        }
        if i % 400 == 399 {
            repeated.extend(envelopes[i - 399..i - 300].iter().cloned());
        }
    }
    for size in [37, 500] {
        let db = format!("foldtest_{run}_repeats_{size}");
        let colls = collections(&m, &db).await;
        let fallbacks = folded(&colls, &repeated, size).await;
        assert_eq!(fallbacks, 0, "batch size {size}: repeats are dropped, not a reason to fall back");
        assert_eq!(all(&colls).await, expected, "batch size {size} with repeats");
        dbs.push(db);
    }

    for db in dbs {
        m.database(&db).drop().await.unwrap();
    }
}

/// The live projector's batches (each document's changes folded into guarded updates) write
/// the same documents as event by event: fresh, with repeats in and across batches, and when
/// a batch arrives again after part of it was applied (a crash before the offsets were
/// committed).
#[tokio::test]
async fn live_batches_write_the_same_documents_as_event_by_event() {
    use messaging::consumer::Delivery;
    let m = mongo().await;
    let run = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
    let envelopes = envelopes();
    let reference_db = format!("livefold_{run}_ref");
    let reference = collections(&m, &reference_db).await;
    per_event(&reference, &envelopes).await;
    let expected = all(&reference).await;
    let mut dbs = vec![reference_db];

    let deliveries = |list: &[Envelope]| -> Vec<Delivery> {
        list.iter().map(|e| Delivery { envelope: e.clone(), span: tracing::Span::none() }).collect()
    };
    let mut repeated = Vec::new();
    for (i, e) in envelopes.iter().enumerate() {
        repeated.push(e.clone());
        if i % 5 == 0 {
            repeated.push(e.clone());
        }
        if i % 300 == 299 {
            repeated.extend(envelopes[i - 299..i - 200].iter().cloned());
        }
    }
    for (name, list, size) in
        [("fresh_256", &envelopes, 256), ("fresh_37", &envelopes, 37), ("repeats", &repeated, 100)]
    {
        let db = format!("livefold_{run}_{name}");
        let colls = collections(&m, &db).await;
        let p = Projections::into_collections(colls.clone());
        for batch in list.chunks(size) {
            p.handle_batch(&deliveries(batch)).await.expect("live batch");
        }
        assert_eq!(all(&colls).await, expected, "{name}");
        dbs.push(db);
    }

    // Half of every batch applied event by event first, then the whole batch again.
    let db = format!("livefold_{run}_partial");
    let colls = collections(&m, &db).await;
    let p = Projections::into_collections(colls.clone());
    for batch in envelopes.chunks(64) {
        for e in &batch[..batch.len() / 2] {
            p.handle(e).await.expect("per event");
        }
        p.handle_batch(&deliveries(batch)).await.expect("live batch again");
    }
    assert_eq!(all(&colls).await, expected, "partly applied batches");
    dbs.push(db);

    for db in dbs {
        m.database(&db).drop().await.unwrap();
    }
}

/// A live batch inserts the documents it starts (orders, products, payments, sagas) with one
/// `insert` command per read model, instead of an upsert each; only the documents it does
/// not start (customers, fed by two streams) are upserted. The documents equal event by
/// event, also when the same batch arrives again and every insert finds its document.
#[tokio::test]
async fn a_live_batch_inserts_the_documents_it_starts_at_once() {
    use messaging::consumer::Delivery;
    use mongodb::event::{EventHandler, command::CommandEvent};
    use std::sync::{Arc, Mutex};
    let mut options = mongodb::options::ClientOptions::parse(mongo_url()).await.unwrap();
    let commands: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let seen = commands.clone();
    options.command_event_handler = Some(EventHandler::callback(move |e: CommandEvent| {
        if let CommandEvent::Started(s) = e
            && matches!(s.command_name.as_str(), "insert" | "update")
        {
            let coll = s.command.get_str(&s.command_name).unwrap_or_default().to_owned();
            seen.lock().unwrap().push((s.command_name.clone(), coll));
        }
    }));
    let m = mongodb::Client::with_options(options).unwrap();
    let run = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
    let envelopes = &envelopes()[..300];
    let reference = collections(&m, &format!("liveinsert_{run}_ref")).await;
    per_event(&reference, envelopes).await;
    let expected = all(&reference).await;

    let colls = collections(&m, &format!("liveinsert_{run}")).await;
    let p = Projections::into_collections(colls.clone());
    let batch: Vec<Delivery> =
        envelopes.iter().map(|e| Delivery { envelope: e.clone(), span: tracing::Span::none() }).collect();
    commands.lock().unwrap().clear();
    p.handle_batch(&batch).await.expect("live batch");
    let sent = std::mem::take(&mut *commands.lock().unwrap());
    assert_eq!(all(&colls).await, expected, "a fresh batch");
    let name = |r: ReadModel| r.location().1.to_owned();
    for r in [ReadModel::Orders, ReadModel::Catalog, ReadModel::Payments, ReadModel::Sagas] {
        let inserts = sent.iter().filter(|(c, coll)| c == "insert" && *coll == name(r)).count();
        let updates = sent.iter().filter(|(c, coll)| c == "update" && *coll == name(r)).count();
        assert_eq!((inserts, updates), (1, 0), "{r:?}: insert and update commands of a fresh batch ({sent:?})");
    }
    assert!(sent.iter().any(|(c, coll)| c == "update" && *coll == name(ReadModel::Customers)), "{sent:?}");

    // Again: every insert finds its document, and the guarded way skips what it holds.
    p.handle_batch(&batch).await.expect("the batch again");
    assert_eq!(all(&colls).await, expected, "the batch again");
    for db in [format!("liveinsert_{run}_ref"), format!("liveinsert_{run}")] {
        m.database(&db).drop().await.unwrap();
    }
}
