//! Batched writes for a rebuild's shadow collections: the [`Change`]s of a batch of events are
//! folded per document, and each touched document is written once per batch — new documents
//! with one unordered `insert`, existing ones with one unordered multi-statement `update` — instead
//! of one guarded upsert (and round trip) per event.
//!
//! This is only an optimistic fast path, for collections nobody else writes (a shadow before
//! its switch). Whenever it cannot prove that it did exactly what the per-event path would
//! have done, [`write`] answers [`Outcome::PerEvent`] and the caller applies the batch event by
//! event with the guarded upserts, which skip whatever was already applied:
//!
//! - repeats (a change at or below the version its stream already holds in the document, or
//!   reaches earlier in the batch) are dropped, as the guarded upsert skips them: topics hold
//!   duplicates (an at-least-once relay, redelivered flows), and a resumed rebuild reads again
//!   what it wrote before it was stopped ([`Known`] holds the versions);
//! - a new document is inserted only if every stream that feeds it starts at version 1 in the
//!   batch (or the document follows its stream loosely), and the insert fails if it exists;
//! - an update of an existing document carries, per stream, the guard of its first event (the
//!   document holds exactly the previous version), and the batch falls back unless every
//!   statement matched;
//! - versions of a stream within a batch must be consecutive (strictly increasing for
//!   loosely-following documents), and only `$set`, `$inc` and `$push` of plain fields are
//!   folded.
//!
//! A document built in memory applies the same operators in the same order as the server
//! would, so the result equals the per-event result (tested against a real server).

use crate::{Change, Order};
use futures::{StreamExt, TryStreamExt};
use mongodb::Collection;
use mongodb::bson::{Bson, Document, doc};
use readstore::readmodel::ReadModel;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};

/// One collection's share of a batch: new documents, and update statements per round.
type Writes = (Collection<Document>, Vec<Document>, Vec<Vec<Document>>);

/// What [`write`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every change is applied.
    Applied,
    /// Some changes may be missing: apply the batch event by event (repeats are no-ops).
    PerEvent,
}

/// Statements per `update` command, and update commands at once. FerretDB v1 (PostgreSQL
/// backend) was seen to hang for good on unordered writes of a few hundred statements,
/// apparently one pooled connection per statement; together with the inserts below these stay
/// well below its pool of 50. Small commands side by side finish a round sooner than one large
/// one: FerretDB runs the statements of one command one after the other.
const STATEMENTS: usize = 5;
const IN_FLIGHT: usize = 4;
/// Documents per `insert` command. FerretDB inserts them in batches of 100 per SQL statement,
/// one batch after the other on one connection, so large commands are safe.
const INSERT_DOCS: usize = 1_000;
/// `insert` commands at once: each takes one connection of FerretDB's pool (see above).
const INSERTS_IN_FLIGHT: usize = 4;

/// The documents the shadow collections hold and, per document, the version each stream holds
/// there: read from the collections when a rebuild starts or resumes, then advanced by every
/// planned batch. The rebuild applies each batch completely before it writes the next (folded,
/// or event by event, which ends at the same versions) and stops on any error, so these are
/// the versions the documents hold once the planned writes land. They decide insert or update
/// and which changes are repeats. An entry behind the document costs a fallback (the writes'
/// guards check the versions on the server); one ahead of it would drop changes unseen, which
/// is why a batch that fails to apply stops the rebuild (a resumed one reads the versions
/// again).
#[derive(Debug, Default)]
pub struct Known {
    docs: HashMap<ReadModel, HashMap<String, Versions>>,
}

/// (stream, version) of each stream a document follows.
type Versions = Vec<(Cow<'static, str>, i64)>;

impl Known {
    /// What `collections` hold (nothing for a fresh rebuild).
    pub async fn load(collections: &BTreeMap<ReadModel, Collection<Document>>) -> mongodb::error::Result<Self> {
        let mut docs = HashMap::new();
        for (r, coll) in collections {
            let mut held = HashMap::new();
            let mut cursor = coll.find(doc! {}).await?;
            while let Some(d) = cursor.try_next().await? {
                let Ok(id) = d.get_str("_id") else { continue };
                let versions = d
                    .iter()
                    .filter_map(|(field, v)| {
                        let stream = field.strip_prefix(VERSION_PREFIX)?;
                        Some((Cow::Owned(stream.to_owned()), v.as_i64().or_else(|| v.as_i32().map(i64::from))?))
                    })
                    .collect();
                held.insert(id.to_owned(), versions);
            }
            docs.insert(*r, held);
        }
        Ok(Self { docs })
    }

    fn get(&self, r: ReadModel, id: &str) -> Option<&Versions> {
        self.docs.get(&r)?.get(id)
    }

    /// Note that document `id` holds (once the planned writes land) these stream versions.
    fn note(&mut self, r: ReadModel, id: String, reached: &Reached) {
        let versions = self.docs.entry(r).or_default().entry(id).or_default();
        for (stream, version) in reached {
            match versions.iter_mut().find(|(s, _)| s == stream) {
                Some((_, v)) => *v = (*v).max(*version),
                None => versions.push((Cow::Borrowed(stream), *version)),
            }
        }
    }
}

/// Versions reached per stream.
type Reached = Vec<(&'static str, i64)>;

/// `changes` without the repeats: changes at or below the version their stream holds in the
/// document (`held`) or reaches earlier in the batch. The guarded upsert skips those too.
/// Also the version each of the batch's streams reaches in the document.
fn without_repeats(changes: Vec<Change>, held: Option<&Versions>) -> (Vec<Change>, Reached) {
    let mut reached: Reached = Vec::new();
    let kept = changes
        .into_iter()
        .filter(|c| {
            let i = reached.iter().position(|(s, _)| *s == c.stream).unwrap_or_else(|| {
                let v = held.and_then(|h| h.iter().find(|(s, _)| s == c.stream)).map_or(i64::MIN, |(_, v)| *v);
                reached.push((c.stream, v));
                reached.len() - 1
            });
            let v = &mut reached[i].1;
            if c.version <= *v {
                return false;
            }
            *v = c.version;
            true
        })
        .collect();
    (kept, reached)
}

/// The changes of one document, in order.
struct DocChanges {
    id: String,
    changes: Vec<Change>,
}

/// Group `changes` by read model and document, keeping each document's order.
fn group(changes: Vec<Change>) -> BTreeMap<ReadModel, Vec<DocChanges>> {
    let mut out: BTreeMap<ReadModel, (HashMap<String, usize>, Vec<DocChanges>)> = BTreeMap::new();
    for c in changes {
        let (index, docs) = out.entry(c.read_model).or_default();
        match index.get(&c.id) {
            Some(&i) => docs[i].changes.push(c),
            None => {
                index.insert(c.id.clone(), docs.len());
                docs.push(DocChanges { id: c.id.clone(), changes: vec![c] });
            }
        }
    }
    out.into_iter().map(|(r, (_, docs))| (r, docs)).collect()
}

/// Whether each stream's versions in `changes` follow each other as the guard demands.
fn in_sequence(changes: &[Change]) -> bool {
    let mut last: HashMap<&str, i64> = HashMap::new();
    for c in changes {
        if let Some(prev) = last.insert(c.stream, c.version) {
            let ok = match c.order() {
                Order::Strict => c.version == prev + 1,
                Order::Loose => c.version > prev,
            };
            if !ok {
                return false;
            }
        }
    }
    true
}

/// Whether a document without these streams may take `changes` as they are.
fn may_create(changes: &[Change]) -> bool {
    let mut seen = HashSet::new();
    changes.iter().all(|c| !seen.insert(c.stream) || c.order() == Order::Loose || c.version == 1)
}

/// Each document holds the version of each of its streams in field `v_<stream>`.
const VERSION_PREFIX: &str = "v_";

fn version_field(stream: &str) -> String {
    format!("{VERSION_PREFIX}{stream}")
}

/// The change's update with the stream's version set, as the guarded upsert writes it.
fn with_version(c: Change) -> Document {
    let mut update = c.update;
    let field = version_field(c.stream);
    match update.get_mut("$set") {
        Some(Bson::Document(set)) => {
            set.insert(field, c.version);
        }
        _ => {
            update.insert("$set", doc! { field: c.version });
        }
    }
    update
}

fn plain(field: &str) -> bool {
    !field.is_empty() && !field.contains('.') && !field.starts_with('$')
}

/// `a + b` as `$inc` computes it, for the number types the projections use.
fn add(a: &Bson, b: &Bson) -> Option<Bson> {
    Some(match (a, b) {
        (Bson::Int64(x), Bson::Int64(y)) => Bson::Int64(x.checked_add(*y)?),
        (Bson::Int64(x), Bson::Int32(y)) | (Bson::Int32(y), Bson::Int64(x)) => {
            Bson::Int64(x.checked_add(i64::from(*y))?)
        }
        (Bson::Int32(x), Bson::Int32(y)) => {
            x.checked_add(*y).map_or_else(|| Bson::Int64(i64::from(*x) + i64::from(*y)), Bson::Int32)
        }
        (Bson::Double(x), Bson::Double(y)) => Bson::Double(x + y),
        _ => return None,
    })
}

fn is_number(b: &Bson) -> bool {
    matches!(b, Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_))
}

/// Apply an update document (`$set`, `$inc`, `$push` of plain fields) to `doc` in memory.
/// `None` when it uses anything else.
fn apply_in_memory(doc: &mut Document, update: Document) -> Option<()> {
    for (op, fields) in update {
        let Bson::Document(fields) = fields else { return None };
        for (field, value) in fields {
            if !plain(&field) {
                return None;
            }
            match op.as_str() {
                "$set" => {
                    doc.insert(field, value);
                }
                "$inc" => {
                    let new = match doc.get(&field) {
                        None if is_number(&value) => value,
                        None => return None,
                        Some(current) => add(current, &value)?,
                    };
                    doc.insert(field, new);
                }
                "$push" => {
                    if value.as_document().is_some_and(|d| d.keys().any(|k| k.starts_with('$'))) {
                        return None; // modifiers such as $each
                    }
                    match doc.get_mut(&field) {
                        None => {
                            doc.insert(field, Bson::Array(vec![value]));
                        }
                        Some(Bson::Array(items)) => items.push(value),
                        Some(_) => return None,
                    }
                }
                _ => return None,
            }
        }
    }
    Some(())
}

/// The new document the changes would create, as the per-event upserts would leave it.
fn materialize(id: &str, changes: Vec<Change>) -> Option<Document> {
    let mut d = doc! { "_id": id };
    for c in changes {
        apply_in_memory(&mut d, with_version(c))?;
    }
    Some(d)
}

/// The document a live batch's changes create when the first of them starts it
/// ([`Change::creates`]), as the per-event upserts would leave it: the batch inserts its new
/// documents with one `insert` per collection instead of an upsert (a look-up and a write)
/// each. `None` when the changes do not start their document or cannot be folded exactly.
pub fn created(id: &str, changes: &[Change]) -> Option<Document> {
    if !changes.first()?.creates {
        return None;
    }
    let (changes, _) = without_repeats(changes.to_vec(), None);
    if !in_sequence(&changes) || !may_create(&changes) {
        return None;
    }
    materialize(id, changes)
}

/// One combined update of a document, and the first version of each stream it covers.
#[derive(Default)]
struct Combined {
    set: Document,
    inc: Document,
    push: Document,
    first: Vec<(&'static str, i64, Order)>,
}

impl Combined {
    /// Fold `update` in, unless a field would be touched by two operators in a way one
    /// update cannot express (then the caller starts another round).
    fn absorb(&mut self, c: &Change) -> Option<bool> {
        let update = with_version(c.clone());
        // Check first, change afterwards: a refused change leaves `self` as it was.
        for (op, fields) in &update {
            let fields = fields.as_document()?;
            for (field, value) in fields {
                if !plain(field) {
                    return None;
                }
                let clash = match op.as_str() {
                    "$set" => self.inc.contains_key(field) || self.push.contains_key(field),
                    "$inc" => {
                        self.push.contains_key(field)
                            || self.set.get(field).is_some_and(|s| add(s, value).is_none())
                            || self.inc.get(field).is_some_and(|s| add(s, value).is_none())
                    }
                    // One $push per field and update ($each is avoided: not every server has it).
                    "$push" => {
                        self.set.contains_key(field)
                            || self.inc.contains_key(field)
                            || self.push.contains_key(field)
                            || value.as_document().is_some_and(|d| d.keys().any(|k| k.starts_with('$')))
                    }
                    _ => return None,
                };
                if clash {
                    return Some(false);
                }
            }
        }
        for (op, fields) in &update {
            for (field, value) in fields.as_document()? {
                match op.as_str() {
                    "$set" => {
                        self.set.insert(field.clone(), value.clone());
                    }
                    "$inc" => {
                        if let Some(s) = self.set.get(field) {
                            let sum = add(s, value)?;
                            self.set.insert(field.clone(), sum);
                        } else if let Some(s) = self.inc.get(field) {
                            let sum = add(s, value)?;
                            self.inc.insert(field.clone(), sum);
                        } else {
                            self.inc.insert(field.clone(), value.clone());
                        }
                    }
                    _ => {
                        self.push.insert(field.clone(), value.clone());
                    }
                }
            }
        }
        if !self.first.iter().any(|(s, _, _)| *s == c.stream) {
            self.first.push((c.stream, c.version, c.order()));
        }
        Some(true)
    }

    /// The `update` statement: the guard of each stream's first event, and the operators.
    fn statement(&self, id: &str) -> Document {
        let (filter, u) = self.guarded(id);
        doc! { "q": filter, "u": u, "upsert": false, "multi": false }
    }

    /// Whether the update may create its document: only when a missing document is what every
    /// strictly followed stream expects (its first event here is its first event at all).
    fn may_upsert(&self) -> bool {
        self.first.iter().all(|(_, first, order)| *order == Order::Loose || *first <= 1)
    }

    /// (filter, update): the guard of each stream's first event, and the operators.
    fn guarded(&self, id: &str) -> (Document, Document) {
        let mut filter = doc! { "_id": id };
        let mut loose = Vec::new();
        for (stream, first, order) in &self.first {
            let field = version_field(stream);
            match order {
                Order::Strict if *first <= 1 => {
                    filter.insert(field, doc! { "$exists": false });
                }
                Order::Strict => {
                    filter.insert(field, first - 1);
                }
                Order::Loose => {
                    loose.push(doc! { "$or": [ { &field: { "$exists": false } }, { &field: { "$lt": first } } ] })
                }
            }
        }
        if !loose.is_empty() {
            filter.insert("$and", loose);
        }
        let mut u = Document::new();
        for (op, fields) in [("$set", &self.set), ("$inc", &self.inc), ("$push", &self.push)] {
            if !fields.is_empty() {
                u.insert(op, fields.clone());
            }
        }
        (filter, u)
    }
}

/// Combined updates of one existing document, in rounds that must run in order.
fn combine(changes: &[Change]) -> Option<Vec<Combined>> {
    let mut rounds = vec![Combined::default()];
    for c in changes {
        let last = rounds.last_mut()?;
        if !last.absorb(c)? {
            let mut next = Combined::default();
            if !next.absorb(c)? {
                return None;
            }
            rounds.push(next);
        }
    }
    Some(rounds)
}

/// One guarded update of a live document: it applies all of a run of changes or, when its guard
/// does not match (the document holds another version than the run's first event expects, or
/// does not exist yet), none of them.
#[derive(Debug, Clone, PartialEq)]
pub struct Folded {
    pub filter: Document,
    pub update: Document,
    pub upsert: bool,
}

/// The live projector's fold of one document's changes in a batch (in event order): the
/// updates that together do what the guarded per-event upserts would, to be applied in order,
/// each all or nothing (see [`Folded`]). Repeats within the batch are dropped first. `None`
/// when the changes cannot be folded exactly (a gap or an operator outside `$set`, `$inc` and
/// `$push`); so is a rejected update: the caller then applies the changes event by event, and
/// the per-event guards skip whatever the folded updates already applied.
pub fn fold_live(id: &str, changes: Vec<Change>) -> Option<Vec<Folded>> {
    let (changes, _) = without_repeats(changes, None);
    if !in_sequence(&changes) {
        return None;
    }
    let rounds = combine(&changes)?;
    Some(
        rounds
            .iter()
            .map(|c| {
                let (filter, update) = c.guarded(id);
                Folded { filter, update, upsert: c.may_upsert() }
            })
            .collect(),
    )
}

/// The writes of one batch, planned: per collection, new documents and update statements per
/// round. Planning needs no server, so the next batch is planned while one is written.
pub struct Plan {
    writes: Vec<Writes>,
}

impl Plan {
    /// (new documents, update statements) in all.
    pub fn size(&self) -> (usize, usize) {
        let inserts = self.writes.iter().map(|(_, i, _)| i.len()).sum();
        let updates = self.writes.iter().map(|(_, _, r)| r.iter().map(Vec::len).sum::<usize>()).sum();
        (inserts, updates)
    }
}

/// Plan the folded writes of `changes` (in event order) to `collections`; `None` when the
/// batch cannot be folded exactly (apply it event by event). Either way, `known` takes the
/// versions the batch leads to. See the module docs.
pub fn plan(
    collections: &BTreeMap<ReadModel, Collection<Document>>,
    known: &mut Known,
    changes: Vec<Change>,
) -> Option<Plan> {
    let mut writes = Vec::new();
    let mut exact = true;
    for (r, docs) in group(changes) {
        let Some(coll) = collections.get(&r) else { continue };
        let mut inserts = Vec::new();
        let mut rounds: Vec<Vec<Document>> = Vec::new();
        for d in docs {
            let held = known.get(r, &d.id);
            let exists = held.is_some();
            let (changes, reached) = without_repeats(d.changes, held);
            if changes.is_empty() {
                continue;
            }
            exact = exact && plan_document(&d.id, exists, changes, &mut inserts, &mut rounds).is_some();
            // Noted whatever becomes of the plan: the batch is applied either way (see [`Known`]).
            known.note(r, d.id, &reached);
        }
        writes.push((coll.clone(), inserts, rounds));
    }
    exact.then_some(Plan { writes })
}

/// Add one document's writes (its changes without repeats) to `inserts` and `rounds`; `None`
/// when they cannot be folded exactly.
fn plan_document(
    id: &str,
    exists: bool,
    changes: Vec<Change>,
    inserts: &mut Vec<Document>,
    rounds: &mut Vec<Vec<Document>>,
) -> Option<()> {
    if !in_sequence(&changes) {
        return None;
    }
    if !exists && may_create(&changes) {
        inserts.push(materialize(id, changes)?);
        return Some(());
    }
    for (i, c) in combine(&changes)?.iter().enumerate() {
        if rounds.len() <= i {
            rounds.push(Vec::new());
        }
        rounds[i].push(c.statement(id));
    }
    Some(())
}

/// Write a planned batch.
pub async fn execute(plan: &Plan) -> anyhow::Result<Outcome> {
    let plans = &plan.writes;
    // Inserts of distinct documents are independent; so are the statements of one round. The
    // inserts create documents the batch's updates do not touch, so they run beside the first
    // round. Never more than IN_FLIGHT commands of each kind at once (see STATEMENTS).
    let inserts = plans.iter().flat_map(|(coll, inserts, _)| inserts.chunks(INSERT_DOCS).map(move |c| (coll, c)));
    let inserted = futures::stream::iter(inserts)
        .map(|(coll, chunk)| async move { coll.insert_many(chunk).ordered(false).await.is_ok() })
        .buffer_unordered(INSERTS_IN_FLIGHT)
        .all(|ok| async move { ok });
    let (inserted, first) = futures::join!(inserted, round(plans, 0));
    if !inserted || !first? {
        return Ok(Outcome::PerEvent);
    }
    let rounds = plans.iter().map(|(_, _, rounds)| rounds.len()).max().unwrap_or(0);
    for i in 1..rounds {
        if !round(plans, i).await? {
            return Ok(Outcome::PerEvent);
        }
    }
    Ok(Outcome::Applied)
}

/// [`plan`] and [`execute`] in one.
pub async fn write(
    collections: &BTreeMap<ReadModel, Collection<Document>>,
    known: &mut Known,
    changes: Vec<Change>,
) -> anyhow::Result<Outcome> {
    match plan(collections, known, changes) {
        Some(p) => execute(&p).await,
        None => Ok(Outcome::PerEvent),
    }
}

/// The `i`-th update statements of every document, in multi-statement `update` commands;
/// whether every statement matched its document.
async fn round(plans: &[Writes], i: usize) -> anyhow::Result<bool> {
    let statements = plans
        .iter()
        .filter_map(|(coll, _, rounds)| Some((coll, rounds.get(i)?)))
        .flat_map(|(coll, round)| round.chunks(STATEMENTS).map(move |c| (coll, c)));
    let results: Vec<anyhow::Result<bool>> = futures::stream::iter(statements)
        .map(|(coll, chunk)| async move {
            let command = doc! { "update": coll.name(), "updates": chunk, "ordered": false };
            let reply = coll.client().database(coll.namespace().db.as_str()).run_command(command).await?;
            let n = reply.get("n").and_then(|n| n.as_i64().or_else(|| n.as_i32().map(i64::from)));
            let errors = reply.get_array("writeErrors").map(|e| !e.is_empty()).unwrap_or(false);
            Ok(!errors && n == i64::try_from(chunk.len()).ok())
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    for r in results {
        if !r? {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(stream: &'static str, version: i64) -> Change {
        Change {
            read_model: ReadModel::Customers,
            id: "c".into(),
            stream,
            version,
            update: doc! { "$set": { "x": version } },
            creates: false,
        }
    }

    fn versions(changes: &[Change]) -> Vec<(&'static str, i64)> {
        changes.iter().map(|c| (c.stream, c.version)).collect()
    }

    #[test]
    fn only_changes_that_start_their_document_make_a_new_one() {
        let creating = |v| Change { creates: true, ..change("a", v) };
        let d = created("c", &[creating(1), change("a", 2)]).expect("a new document");
        assert_eq!(d, doc! { "_id": "c", "x": 2_i64, "v_a": 2_i64 });
        assert_eq!(created("c", &[change("a", 1)]), None, "a change that does not create");
        assert_eq!(created("c", &[creating(1), change("a", 3)]), None, "a gap");
        assert_eq!(created("c", &[creating(2)]), None, "a strict stream that does not start at 1");
    }

    #[test]
    fn repeats_within_a_batch_are_dropped() {
        let batch =
            vec![change("a", 1), change("a", 2), change("a", 1), change("b", 1), change("a", 2), change("a", 3)];
        let (kept, _) = without_repeats(batch, None);
        assert_eq!(versions(&kept), [("a", 1), ("a", 2), ("b", 1), ("a", 3)]);
        assert!(in_sequence(&kept));
    }

    #[test]
    fn what_the_document_holds_is_a_repeat() {
        let held: Versions = vec![(Cow::Borrowed("a"), 4), (Cow::Borrowed("b"), 1)];
        let batch =
            vec![change("a", 3), change("a", 4), change("a", 5), change("b", 1), change("b", 2), change("c", 1)];
        let (kept, _) = without_repeats(batch, Some(&held));
        assert_eq!(versions(&kept), [("a", 5), ("b", 2), ("c", 1)]);
    }

    #[test]
    fn a_gap_stays_and_is_refused() {
        let (kept, _) = without_repeats(vec![change("a", 1), change("a", 3)], None);
        assert_eq!(versions(&kept), [("a", 1), ("a", 3)]);
        assert!(!in_sequence(&kept));
    }

    #[test]
    fn known_follows_the_last_version_of_each_stream() {
        let mut known = Known::default();
        let (_, reached) = without_repeats(vec![change("a", 1), change("a", 2), change("b", 1)], None);
        known.note(ReadModel::Customers, "c".into(), &reached);
        let (_, reached) = without_repeats(vec![change("a", 2), change("a", 3)], known.get(ReadModel::Customers, "c"));
        known.note(ReadModel::Customers, "c".into(), &reached);
        let held = known.get(ReadModel::Customers, "c").expect("noted");
        assert_eq!(held, &vec![(Cow::Borrowed("a"), 3), (Cow::Borrowed("b"), 1)]);
        assert!(known.get(ReadModel::Orders, "c").is_none());
    }
}
