//! The read models: the live documents (each read model's active collection, as the services
//! resolve it), and a replay of the records the audit read into a scratch database with the
//! projectors' own code — the rebuild's path: each batch's changes (`projectors::changes`)
//! folded per document (`projectors::fold::write`), or, when a batch cannot be folded exactly,
//! the live projector's guarded upsert per event (`Projections::handle`). The scratch database
//! is dropped afterwards.

use crate::model::Documents;
use futures::TryStreamExt;
use messaging::consumer::{Envelope, Handler, HandlerError};
use mongodb::bson::{Document, doc};
use mongodb::{Client, Collection};
use projectors::Projections;
use projectors::fold::{self, Known, Outcome};
use readstore::readmodel::{self, ReadModel};
use std::collections::BTreeMap;

/// Records per folded batch (the rebuild's size).
const BATCH: usize = projectors::rebuild::BATCH;

/// Prefix of the scratch databases (one per audit, dropped at its end).
pub const SCRATCH_PREFIX: &str = "audit_scratch_";

pub async fn live(client: &Client) -> anyhow::Result<BTreeMap<ReadModel, Documents>> {
    let mut out = BTreeMap::new();
    for model in ReadModel::ALL {
        let name = readmodel::active_name(client, model).await?;
        let coll = client.database(model.location().0).collection::<Document>(&name);
        out.insert(model, all(&coll).await?);
    }
    Ok(out)
}

async fn all(coll: &Collection<Document>) -> anyhow::Result<Documents> {
    let docs: Vec<Document> = coll.find(doc! {}).await?.try_collect().await?;
    Ok(docs
        .into_iter()
        .map(|d| {
            let id = match d.get("_id") {
                Some(mongodb::bson::Bson::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => String::new(),
            };
            (id, d)
        })
        .collect())
}

/// What the replay built, and what it could not apply.
pub struct Replayed {
    pub documents: BTreeMap<ReadModel, Documents>,
    pub notes: Vec<String>,
}

pub async fn replay(client: &Client, envelopes: &[Envelope]) -> anyhow::Result<Replayed> {
    let name = format!("{SCRATCH_PREFIX}{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    let db = client.database(&name);
    let collections: BTreeMap<ReadModel, Collection<Document>> =
        ReadModel::ALL.into_iter().map(|r| (r, db.collection::<Document>(r.name()))).collect();
    let built = async {
        let notes = apply(&collections, envelopes).await?;
        let mut documents = BTreeMap::new();
        for (model, coll) in &collections {
            documents.insert(*model, all(coll).await?);
        }
        anyhow::Ok(Replayed { documents, notes })
    }
    .await;
    let dropped = db.drop().await;
    let replayed = built?;
    dropped.map_err(|e| anyhow::anyhow!("dropping the scratch database {name}: {e}"))?;
    Ok(replayed)
}

async fn apply(
    collections: &BTreeMap<ReadModel, Collection<Document>>,
    envelopes: &[Envelope],
) -> anyhow::Result<Vec<String>> {
    let projections = Projections::into_collections(collections.clone());
    let mut known = Known::default();
    let (mut refused, mut skipped, mut first_refusal) = (0, 0, None);
    for batch in envelopes.chunks(BATCH) {
        let mut changes = Vec::new();
        let mut foldable = true;
        for e in batch {
            match projectors::changes(e) {
                Ok(c) => changes.extend(c),
                Err(HandlerError::Permanent(_)) => {}
                Err(HandlerError::Transient(_)) => foldable = false,
            }
        }
        let outcome = match foldable {
            true => fold::write(collections, &mut known, changes).await.unwrap_or(Outcome::PerEvent),
            false => Outcome::PerEvent,
        };
        if outcome == Outcome::Applied {
            continue;
        }
        // Event by event, as the live projector applies them; repeats are no-ops.
        for e in batch {
            match projections.handle(e).await {
                Ok(()) => {}
                Err(HandlerError::Permanent(_)) => skipped += 1,
                // A gap the replay cannot fill: the live projector would park the event too.
                Err(HandlerError::Transient(why)) => {
                    refused += 1;
                    first_refusal.get_or_insert_with(|| format!("{}/{}/{}: {why:#}", e.topic, e.partition, e.offset));
                }
            }
        }
    }
    let mut notes = Vec::new();
    if skipped > 0 {
        notes.push(format!("{skipped} records the projections refuse for good (no aggregate-version) were skipped"));
    }
    if let Some(first) = first_refusal {
        notes.push(format!("the replay could not apply {refused} records (first: {first})"));
    }
    Ok(notes)
}
