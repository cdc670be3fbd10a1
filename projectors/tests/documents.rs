//! The documents the projectors write are the API's shapes: every document of the customers,
//! catalog, orders and sagas read models, projected from a synthetic shop's history, reads as
//! the `contract` type the services answer with, and holds no field that type does not know
//! (beyond `_id`, the `owner` that decides access, and the `v_*` version guards). A field a
//! projector renames or forgets fails here, not as an empty value in an answer. Needs a
//! MongoDB-wire server (`SHOP_MONGODB_URL`, default 127.0.0.1:27017); the run uses a database
//! of its own and drops it.

use futures::TryStreamExt;
use messaging::consumer::Handler;
use mongodb::bson::{Document, doc};
use projectors::{Projections, synthetic};
use readstore::readmodel::ReadModel;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, BTreeSet};

async fn mongo() -> mongodb::Client {
    let url = std::env::var("SHOP_MONGODB_URL")
        .unwrap_or_else(|_| "mongodb://127.0.0.1:27017/?directConnection=true&retryWrites=false".into());
    readstore::readmodel::connect(&url).await.expect("mongodb")
}

/// Every document of `docs` reads as `T`, and each of its fields is one of `T`'s. Returns how
/// many documents were checked.
fn conforms<T: DeserializeOwned + Serialize>(model: ReadModel, docs: &[Document]) -> usize {
    for d in docs {
        let typed: T = mongodb::bson::from_document(d.clone())
            .unwrap_or_else(|e| panic!("a {} document does not read as the API's type: {e}\n{d}", model.name()));
        let known: BTreeSet<String> = match serde_json::to_value(&typed).expect("json") {
            serde_json::Value::Object(m) => m.keys().cloned().collect(),
            other => panic!("{other} is not an object"),
        };
        let unknown: Vec<&String> = d
            .keys()
            .filter(|k| !(k.as_str() == "_id" || k.as_str() == "owner" || k.starts_with("v_") || known.contains(*k)))
            .collect();
        assert!(
            unknown.is_empty(),
            "{} documents hold {unknown:?}, which the API's type does not know:\n{d}",
            model.name()
        );
    }
    docs.len()
}

#[tokio::test]
#[ignore = "needs the running stack: ./stack test"]
async fn read_models_hold_the_apis_shapes() {
    let m = mongo().await;
    let db = format!("test_documents_{}", uuid::Uuid::new_v4().simple());
    let colls: BTreeMap<ReadModel, mongodb::Collection<Document>> =
        ReadModel::ALL.iter().map(|r| (*r, m.database(&db).collection(r.location().1))).collect();
    let projections = Projections::into_collections(colls.clone());
    projections.create_indexes().await.expect("indexes");
    let history = synthetic::Shop::new(11).history(1_500);
    for (i, event) in history.iter().enumerate() {
        projections.handle(&event.envelope(i as i64)).await.expect("projection");
    }
    let mut docs = BTreeMap::new();
    for (model, coll) in &colls {
        let found: Vec<Document> = coll.find(doc! {}).await.expect("find").try_collect().await.expect("read");
        docs.insert(*model, found);
    }
    let checked = [
        conforms::<contract::Customer>(ReadModel::Customers, &docs[&ReadModel::Customers]),
        conforms::<contract::Product>(ReadModel::Catalog, &docs[&ReadModel::Catalog]),
        conforms::<contract::Order>(ReadModel::Orders, &docs[&ReadModel::Orders]),
        conforms::<contract::Saga>(ReadModel::Sagas, &docs[&ReadModel::Sagas]),
    ];
    m.database(&db).drop().await.expect("drop");
    assert!(checked.iter().all(|n| *n > 0), "every read model has documents to check: {checked:?}");
}
