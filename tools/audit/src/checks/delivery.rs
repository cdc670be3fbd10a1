//! Check 5: Event stores and topics agree. Each stream is numbered 1..n and every event reads as its
//! aggregate's; every stored event reached its topic (by the message id the outbox trigger
//! gives it), once at least, in stream order, on one partition, with its aggregate as key,
//! its sequence as `aggregate-version` and the content the schemas' conversion makes of it;
//! what has not arrived yet is still in its outbox (in flight), not parked in `outbox_dead`.
//! No topic holds an event that no store has. Each saga's last `SagaUpdated` on `saga.events`
//! (or in the saga's outbox) is its row's version and status.
//!
//! Redelivered copies (same message id) are allowed, as the consumers deduplicate them; poison
//! records that do not decode are counted, not judged: they are no event.

use crate::model::{Event, Loaded, SAGA_DATABASE, Store, StoredEvent, TopicRecord};
use crate::report::{Check, Offender};
use schemas::{Message, Record, Topic, convert};
use std::collections::{BTreeMap, HashMap, HashSet};

pub const ID: &str = "stores_and_topics_agree";

pub fn check(loaded: &Loaded) -> Check {
    let mut c = Check::new(ID, "every stored event on its topic, in order; no event no store has", "events");
    let stored: HashMap<&str, &StoredEvent> = loaded.events.iter().map(|e| (e.message_id.as_str(), e)).collect();
    let mut streams: BTreeMap<(Store, &str), Vec<&StoredEvent>> = BTreeMap::new();
    for e in &loaded.events {
        streams.entry((e.store, e.aggregate_id.as_str())).or_default().push(e);
    }

    // The records, first copy of each message only.
    let mut seen: HashSet<&str> = HashSet::new();
    let mut on_topic: BTreeMap<(Store, &str), Vec<(i64, i32)>> = BTreeMap::new();
    let (mut undecodable, mut copies, mut late, mut records) = (0, 0, 0, 0);
    for r in &loaded.records {
        let Some(store) = Store::of_topic(r.topic) else { continue };
        records += 1;
        let Ok(message) = &r.message else {
            undecodable += 1;
            continue;
        };
        let Some(id) = r.message_id.as_deref() else {
            c.fail(record_offender(r, "has no message-id header"));
            continue;
        };
        if !seen.insert(id) {
            copies += 1;
            continue;
        }
        let Some(e) = stored.get(id) else {
            if loaded.stored_later.contains(id) {
                late += 1; // stored and published after the stores were read
            } else {
                c.fail(record_offender(r, &format!("{} {id} is in no event store", message.full_name())));
            }
            continue;
        };
        let mut problems = Vec::new();
        if e.store != store {
            problems.push(format!("stored by the {} service", e.store.name()));
        }
        if r.key.as_deref() != Some(e.aggregate_id.as_str()) {
            problems.push(format!("key {:?}", r.key.as_deref().unwrap_or("")));
        }
        if r.aggregate_version != Some(e.sequence) {
            problems.push(format!("aggregate-version {:?}", r.aggregate_version));
        }
        if wire(e).is_some_and(|w| w != *message) {
            problems.push("content differs from the stored event".to_owned());
        }
        if !problems.is_empty() {
            c.fail(event_offender(e, &format!("on {}/{}/{}: {}", r.topic, r.partition, r.offset, problems.join(", "))));
        }
        on_topic.entry((e.store, e.aggregate_id.as_str())).or_default().push((e.sequence, r.partition));
    }

    let queued: HashMap<&str, &crate::model::Queued> =
        loaded.queued.iter().map(|q| (q.message_id.as_str(), q)).collect();
    let mut in_flight = 0;
    for ((_, _), events) in &streams {
        c.checked += events.len();
        let first = events[0];
        for (e, n) in events.iter().zip(1..) {
            if e.sequence != n {
                c.fail(event_offender(e, &format!("numbered {} where {n} was due (a gap in the stream)", e.sequence)));
                break;
            }
        }
        for e in events {
            if let Err(why) = &e.event {
                c.fail(event_offender(e, &format!("does not read as a {} event: {why}", e.event_type)));
            }
        }
        let published = on_topic.get(&(first.store, first.aggregate_id.as_str())).map_or(&[][..], Vec::as_slice);
        if published.windows(2).any(|w| w[1].0 <= w[0].0) {
            let order: Vec<String> = published.iter().map(|(s, _)| s.to_string()).collect();
            c.fail(stream_offender(first, &format!("published out of order: {}", order.join(", "))));
        }
        if published.iter().any(|(_, p)| *p != published[0].1) {
            c.fail(stream_offender(first, "published on more than one partition"));
        }
        let last_published = published.iter().map(|(s, _)| *s).max().unwrap_or(0);
        let mut missing = Vec::new();
        for e in events.iter().filter(|e| !seen.contains(e.message_id.as_str())) {
            match queued.get(e.message_id.as_str()) {
                Some(q) if q.dead.is_some() => c.fail(event_offender(
                    e,
                    &format!("parked in outbox_dead: {}", q.dead.as_deref().unwrap_or_default()),
                )),
                Some(_) if e.sequence > last_published => in_flight += 1,
                _ => missing.push(e.sequence),
            }
        }
        if !missing.is_empty() {
            let list: Vec<String> = missing.iter().map(ToString::to_string).collect();
            c.fail(stream_offender(
                first,
                &format!("events {} stored but not on {}", list.join(", "), first.store.topic()),
            ));
        }
    }

    sagas(loaded, &mut seen, &mut c);

    if undecodable > 0 {
        c.note(format!(
            "{undecodable} undecodable records on the event topics (poison: no event, parked by the consumers)"
        ));
    }
    if copies > 0 {
        c.note(format!("{copies} redelivered copies of published events (same message id; consumers deduplicate)"));
    }
    if late > 0 {
        c.note(format!("{late} events published while the audit read (stored after the first read of the stores)"));
    }
    if in_flight > 0 {
        c.note(format!("{in_flight} stored events still in their outbox (in flight)"));
    }
    c.note(format!("{records} records read on the event topics"));
    c.finish()
}

/// Each saga row against the last `SagaUpdated` of its order.
fn sagas<'a>(loaded: &'a Loaded, seen: &mut HashSet<&'a str>, c: &mut Check) {
    let mut last: HashMap<&str, (&TopicRecord, i64, &str)> = HashMap::new();
    for r in loaded.records.iter().filter(|r| r.topic == Topic::SagaEvents) {
        let Ok(Message::SagaUpdated(s)) = &r.message else { continue };
        if let Some(id) = r.message_id.as_deref()
            && !seen.insert(id)
        {
            continue;
        }
        let entry = last.entry(s.order_id.as_str()).or_insert((r, s.version, s.status.as_str()));
        if s.version > entry.1 {
            *entry = (r, s.version, s.status.as_str());
        }
    }
    let rows: HashMap<&str, &crate::model::SagaRow> = loaded.sagas.iter().map(|s| (s.order_id.as_str(), s)).collect();
    for row in &loaded.sagas {
        c.checked += 1;
        let queued = loaded
            .queued
            .iter()
            .filter(|q| q.database == SAGA_DATABASE && q.aggregate_id == row.order_id)
            .filter(|q| q.record == schemas::records::SagaUpdated::FULL_NAME)
            .map(|q| q.sequence)
            .max();
        let published = last.get(row.order_id.as_str());
        match published {
            Some((_, v, status)) if *v == row.version && *status == row.status => {}
            _ if queued == Some(row.version) => {}
            Some((_, v, status)) => c.fail(Offender::new(
                format!("saga {}", row.order_id),
                &[&row.order_id],
                format!("row at version {} ({}), saga.events ends at version {v} ({status})", row.version, row.status),
            )),
            None => c.fail(Offender::new(
                format!("saga {}", row.order_id),
                &[&row.order_id],
                format!("row at version {} ({}), nothing on saga.events", row.version, row.status),
            )),
        }
    }
    for (order, (r, v, _)) in &last {
        if !rows.contains_key(order) {
            c.fail(record_offender(r, &format!("SagaUpdated version {v} for order {order}, which has no saga row")));
        }
    }
}

/// The record a stored event becomes on its topic, as the relay makes it.
fn wire(e: &StoredEvent) -> Option<Message> {
    let id = e.aggregate_id.as_str();
    Some(match e.event.as_ref().ok()? {
        Event::Customer(x) => convert::customer_event(convert::customer_id(id).ok()?, x),
        Event::Product(x) => convert::product_event(convert::product_id(id).ok()?, x),
        Event::Order(x) => convert::order_event(convert::order_id(id).ok()?, x),
        Event::Account(x) => convert::account_event(convert::customer_id(id).ok()?, x),
    })
}

fn event_offender(e: &StoredEvent, problem: &str) -> Offender {
    Offender::new(
        format!("{} event {}/{}", e.store.name(), e.aggregate_id, e.sequence),
        &[&e.aggregate_id, &e.message_id],
        problem,
    )
}

fn stream_offender(e: &StoredEvent, problem: &str) -> Offender {
    Offender::new(format!("{} stream {}", e.store.name(), e.aggregate_id), &[&e.aggregate_id], problem)
}

fn record_offender(r: &TopicRecord, problem: &str) -> Offender {
    let key = r.key.clone().unwrap_or_default();
    let mut ids = vec![key.as_str()];
    ids.extend(r.message_id.as_deref());
    Offender::new(format!("record {}/{}/{} (key {key})", r.topic, r.partition, r.offset), &ids, problem)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::tests::*;
    use crate::model::{Queued, SagaRow};
    use domain::product::ProductEvent as P;

    /// The records the relay would publish for `events`, on partition 0 from offset `from`.
    fn publish(events: &[StoredEvent], from: i64) -> Vec<TopicRecord> {
        events
            .iter()
            .zip(from..)
            .map(|(e, offset)| TopicRecord {
                topic: e.store.topic(),
                partition: 0,
                offset,
                key: Some(e.aggregate_id.clone()),
                message_id: Some(e.message_id.clone()),
                aggregate_version: Some(e.sequence),
                message: Ok(wire(e).unwrap()),
            })
            .collect()
    }

    fn stream() -> Stream {
        let (p, o) = (product_id(1), order_id(1));
        Stream::new(Store::Product, p)
            .then(created(p, 5))
            .then(Event::Product(P::StockReserved { order_id: o, quantity: 2 }))
            .then(Event::Product(P::StockAdded { quantity: 3 }))
    }

    fn said(c: &Check) -> Vec<String> {
        c.offenders.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn published_events_copies_and_poison_pass() {
        let s = stream();
        let mut records = publish(&s.events, 0);
        records.extend(publish(&s.events[..2], 3)); // a redelivered flow
        records.push(TopicRecord { message: Err("garbage".into()), message_id: None, ..records[0].clone() });
        let l = Loaded { events: s.events, records, ..Loaded::default() };
        let c = check(&l);
        assert!(c.ok(), "{:?}", c.offenders);
        assert_eq!(c.checked, 3);
        assert!(c.notes.iter().any(|n| n.starts_with("2 redelivered")), "{:?}", c.notes);
        assert!(c.notes.iter().any(|n| n.starts_with("1 undecodable")), "{:?}", c.notes);
    }

    #[test]
    fn an_event_deleted_from_its_store_is_on_the_topic_only() {
        let s = stream();
        let records = publish(&s.events, 0);
        let mut events = s.events.clone();
        let lost = events.pop().unwrap();
        let l = Loaded { events, records, ..Loaded::default() };
        let c = check(&l);
        assert_eq!(
            said(&c),
            [format!(
                "record product.events/0/2 (key {}): shop.product.StockAdded {} is in no event store",
                lost.aggregate_id, lost.message_id
            )]
        );
        // Stored again meanwhile (it was only late): no offender.
        let l = Loaded { stored_later: [lost.message_id.clone()].into(), ..l };
        assert!(check(&l).ok());
    }

    #[test]
    fn unpublished_events_are_in_flight_parked_or_missing() {
        let s = stream();
        let records = publish(&s.events[..2], 0);
        let queued = |dead: Option<&str>| Queued {
            database: "shop_product".into(),
            message_id: s.events[2].message_id.clone(),
            aggregate_id: s.id.clone(),
            sequence: 3,
            record: "StockAdded".into(),
            dead: dead.map(str::to_owned),
        };
        let l = Loaded {
            events: s.events.clone(),
            records: records.clone(),
            queued: vec![queued(None)],
            ..Loaded::default()
        };
        let c = check(&l);
        assert!(c.ok() && c.notes.iter().any(|n| n.starts_with("1 stored events still in their outbox")));
        let l = Loaded { queued: vec![queued(Some("Avro says no"))], ..l };
        assert_eq!(said(&check(&l)), [format!("product event {}/3: parked in outbox_dead: Avro says no", s.id)]);
        let l = Loaded { queued: vec![], ..l };
        assert_eq!(said(&check(&l)), [format!("product stream {}: events 3 stored but not on product.events", s.id)]);
    }

    #[test]
    fn disorder_wrong_headers_content_and_gaps_are_caught() {
        let s = stream();
        let mut records = publish(&s.events, 0);
        records.swap(0, 1);
        records[2].aggregate_version = Some(9);
        records[2].message = Ok(wire(&s.events[1]).unwrap());
        let mut events = s.events.clone();
        events.remove(1);
        let l = Loaded { events, records: records.clone(), ..Loaded::default() };
        let c = check(&l);
        let said = said(&c);
        assert!(
            said.iter().any(|s| s.ends_with("aggregate-version Some(9), content differs from the stored event")),
            "{said:#?}"
        );
        assert!(said.iter().any(|s| s.ends_with("numbered 3 where 2 was due (a gap in the stream)")), "{said:#?}");
        assert!(said.iter().any(|s| s.contains("is in no event store")), "{said:#?}");
        let l = Loaded { events: s.events.clone(), records, ..Loaded::default() };
        assert!(self::said(&check(&l)).iter().any(|s| s.ends_with("published out of order: 2, 1, 3")));
    }

    #[test]
    fn a_saga_row_matches_its_last_update_or_its_queued_one() {
        let update = |version: i64, status: &str, offset: i64| TopicRecord {
            topic: Topic::SagaEvents,
            partition: 1,
            offset,
            key: Some("o1".into()),
            message_id: Some(format!("m{offset}")),
            aggregate_version: Some(version),
            message: Ok(Message::SagaUpdated(schemas::records::SagaUpdated {
                order_id: "o1".into(),
                customer_id: "c1".into(),
                version,
                status: status.into(),
                step: "done".into(),
                reason: None,
                payment: "CONFIRMED".into(),
                total_cents: 1,
                currency: "EUR".into(),
                lines: vec![],
                history: vec![],
            })),
        };
        let row = SagaRow { order_id: "o1".into(), status: "CONFIRMED".into(), step: "done".into(), version: 2 };
        let records = vec![update(1, "RUNNING", 0), update(2, "CONFIRMED", 1)];
        let l = Loaded { sagas: vec![row.clone()], records: records.clone(), ..Loaded::default() };
        assert!(check(&l).ok(), "{:?}", check(&l).offenders);
        let l = Loaded { records: records[..1].to_vec(), ..l };
        assert_eq!(
            said(&check(&l)),
            ["saga o1: row at version 2 (CONFIRMED), saga.events ends at version 1 (RUNNING)"]
        );
        let queued = Queued {
            database: SAGA_DATABASE.into(),
            message_id: "q".into(),
            aggregate_id: "o1".into(),
            sequence: 2,
            record: "shop.saga.SagaUpdated".into(),
            dead: None,
        };
        assert!(check(&Loaded { queued: vec![queued], ..l }).ok());
        let orphan = Loaded { records, ..Loaded::default() };
        assert_eq!(check(&orphan).offenders.len(), 1);
    }
}
