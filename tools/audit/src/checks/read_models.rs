//! Check 6: Every read model equals a fresh replay of the topics: the loading layer replays the
//! records it read through the projectors' own code into a scratch database; here the live
//! documents (each read model's active collection) and the replayed ones are compared
//! document by document, field by field.
//!
//! Nothing is ignored as volatile: every field the projectors write is a function of the
//! records (timestamps come from the events' `occurred-at` headers, versions from
//! `aggregate-version`), so a replay must reproduce all of them. Only the representation is
//! set aside: field order, and whether a whole number is stored as a 32- or 64-bit integer
//! (`$inc` on a server and the rebuild's in-memory fold may pick either).

use crate::model::{Documents, Loaded};
use crate::report::{Check, Offender};
use mongodb::bson::{Bson, Document};
use readstore::readmodel::ReadModel;
use std::collections::BTreeSet;

pub const ID: &str = "read_models_match_replay";

/// Differing fields listed per document.
const FIELDS: usize = 3;

pub fn check(loaded: &Loaded) -> Check {
    let mut c = Check::new(ID, "every read model equals a fresh replay of the topics", "documents");
    let none = Documents::new();
    let models = &loaded.read_models;
    let names: BTreeSet<ReadModel> = models.live.keys().chain(models.replayed.keys()).copied().collect();
    for model in names {
        let live = models.live.get(&model).unwrap_or(&none);
        let replayed = models.replayed.get(&model).unwrap_or(&none);
        let ids: BTreeSet<&String> = live.keys().chain(replayed.keys()).collect();
        for id in ids {
            c.checked += 1;
            let subject = format!("{}/{id}", model.name());
            let problem = match (live.get(id), replayed.get(id)) {
                (Some(_), None) => "in the live read model only: no record on the topics makes it".to_owned(),
                (None, Some(_)) => "missing from the live read model".to_owned(),
                (Some(l), Some(r)) => {
                    let mut diffs = Vec::new();
                    differences("", l, r, &mut diffs);
                    if diffs.is_empty() {
                        continue;
                    }
                    let more = diffs.len().saturating_sub(FIELDS);
                    diffs.truncate(FIELDS);
                    if more > 0 {
                        diffs.push(format!("and {more} more fields"));
                    }
                    diffs.join("; ")
                }
                (None, None) => continue,
            };
            c.fail(Offender::new(subject, &[id], problem));
        }
    }
    c.finish()
}

/// Field by field: `path: live X, replay Y`.
fn differences(prefix: &str, live: &Document, replayed: &Document, out: &mut Vec<String>) {
    let keys: BTreeSet<&String> = live.keys().chain(replayed.keys()).collect();
    for key in keys {
        let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        match (live.get(key), replayed.get(key)) {
            (Some(Bson::Document(l)), Some(Bson::Document(r))) => differences(&path, l, r, out),
            (l, r) if same(l, r) => {}
            (l, r) => out.push(format!("{path}: live {}, replay {}", show(l), show(r))),
        }
    }
}

fn same(a: Option<&Bson>, b: Option<&Bson>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => equal(a, b),
        (None, None) => true,
        _ => false,
    }
}

/// Equal values, whatever the field order of documents and the width of integers.
fn equal(a: &Bson, b: &Bson) -> bool {
    match (a, b) {
        (Bson::Document(x), Bson::Document(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| equal(v, w)))
        }
        (Bson::Array(x), Bson::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(v, w)| equal(v, w)),
        _ => match (integer(a), integer(b)) {
            (Some(x), Some(y)) => x == y,
            _ => a == b,
        },
    }
}

fn integer(b: &Bson) -> Option<i64> {
    match b {
        Bson::Int32(n) => Some(i64::from(*n)),
        Bson::Int64(n) => Some(*n),
        _ => None,
    }
}

fn show(b: Option<&Bson>) -> String {
    match b {
        None => "absent".to_owned(),
        Some(Bson::String(s)) => format!("{s:?}"),
        Some(b) => {
            let s = b.to_string();
            if s.chars().count() > 60 { format!("{}…", s.chars().take(59).collect::<String>()) } else { s }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ReadModels;
    use mongodb::bson::doc;

    fn loaded(live: Vec<Document>, replayed: Vec<Document>) -> Loaded {
        let by_id = |docs: Vec<Document>| -> Documents {
            docs.into_iter().map(|d| (d.get_str("_id").unwrap().to_owned(), d)).collect()
        };
        Loaded {
            read_models: ReadModels {
                live: [(ReadModel::Catalog, by_id(live))].into(),
                replayed: [(ReadModel::Catalog, by_id(replayed))].into(),
            },
            ..Loaded::default()
        }
    }

    #[test]
    fn field_order_and_integer_width_do_not_matter() {
        let live = doc! { "_id": "p1", "available": 3_i32, "sku": "A", "h": [ { "at": "t", "n": 1_i64 } ], "v_product": 2_i64 };
        let replayed = doc! { "_id": "p1", "sku": "A", "v_product": 2_i32, "available": 3_i64, "h": [ { "n": 1_i32, "at": "t" } ] };
        let c = check(&loaded(vec![live], vec![replayed]));
        assert!(c.ok(), "{:?}", c.offenders);
        assert_eq!(c.checked, 1);
    }

    #[test]
    fn a_changed_field_a_missing_and_an_extra_document_are_caught() {
        let c = check(&loaded(
            vec![doc! { "_id": "p1", "available": 11_i64, "name": "Mug" }, doc! { "_id": "p2" }],
            vec![doc! { "_id": "p1", "available": 10_i64, "name": "Mug", "sold": 0_i64 }, doc! { "_id": "p3" }],
        ));
        let said: Vec<String> = c.offenders.iter().map(ToString::to_string).collect();
        assert_eq!(
            said,
            [
                "catalog/p1: available: live 11, replay 10; sold: live absent, replay 0",
                "catalog/p2: in the live read model only: no record on the topics makes it",
                "catalog/p3: missing from the live read model",
            ]
        );
        assert_eq!(c.checked, 3);
    }

    #[test]
    fn nested_differences_name_their_path_and_long_lists_are_cut() {
        let c = check(&loaded(
            vec![doc! { "_id": "o1", "a": 1, "b": 1, "c": 1, "d": { "e": "x" } }],
            vec![doc! { "_id": "o1", "a": 2, "b": 2, "c": 2, "d": { "e": "y" } }],
        ));
        assert_eq!(
            c.offenders[0].problem,
            "a: live 1, replay 2; b: live 1, replay 2; c: live 1, replay 2; and 1 more fields"
        );
        let c = check(&loaded(
            vec![doc! { "_id": "o1", "d": { "e": "x" } }],
            vec![doc! { "_id": "o1", "d": { "e": "y" } }],
        ));
        assert_eq!(c.offenders[0].problem, "d.e: live \"x\", replay \"y\"");
    }
}
