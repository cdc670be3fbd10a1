//! Dead-letter topics (`<topic>.dlq`): reading one whole, and what an operator does with a parked
//! message, redrive it or discard it, recorded in the DLQ itself.
//!
//! The consumer loop ([`crate::consumer`]) parks a message it cannot handle on `<topic>.dlq`
//! with its original key, payload and headers plus `dlq-*` headers (the error, the attempts,
//! where it came from). Re-driving republishes it to its original topic and partition with its
//! key, payload and headers minus the `dlq-*` ones: the `message-id` stays, so a consumer that
//! already applied it skips it. The new record carries `dlq-redriven-from`
//! (`<dlq>/<partition>/<offset>`), and it is parked again like any other message if it still fails.
//!
//! What was done is recorded in the DLQ itself, after Kafka acknowledged the republished record:
//! a key-less, payload-less marker naming the parked message (`dlq-redrive-of` or
//! `dlq-discard-of: <partition>/<offset>`), with who did it and why (`dlq-by`, `dlq-reason`) and,
//! for a redrive, where the record landed (`dlq-redriven-to`); the marker's timestamp says when.
//! Reading a DLQ reads it whole anyway, so the markers come at no extra cost and stay next to
//! the messages they are about. A consumer group per DLQ was the other candidate, but one
//! committed offset can only say "everything before here", not "these chosen offsets". Kafka
//! transactions would make the republish and the marker atomic, but they leave commit markers in
//! the business topics for little gain: if the marker write fails after the republish, a second
//! redrive repeats a message whose `message-id` the consumers deduplicate anyway.

use crate::producer::Producer;
use crate::topic;
pub use crate::topic::Record;
use anyhow::{Context, bail};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use schemas::headers as h;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Suffix of every dead-letter topic.
pub const SUFFIX: &str = ".dlq";
/// Prefix of the headers the consumer loop adds when parking; stripped on redrive.
pub const HEADER_PREFIX: &str = "dlq-";
/// On a republished record: the DLQ message it came from, `<dlq>/<partition>/<offset>`.
pub const REDRIVEN_FROM: &str = "dlq-redriven-from";
/// On a marker: the parked message that was re-driven, `<partition>/<offset>`.
pub const REDRIVE_OF: &str = "dlq-redrive-of";
/// On a marker: the parked message that was discarded, `<partition>/<offset>`.
pub const DISCARD_OF: &str = "dlq-discard-of";
/// On a redrive marker: where the republished record landed, `<topic>/<partition>/<offset>`.
pub const REDRIVEN_TO: &str = "dlq-redriven-to";
/// On a marker: who acted.
pub const BY: &str = "dlq-by";
/// On a marker: why.
pub const REASON: &str = "dlq-reason";
/// How long one request to Kafka may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// `product.commands` and `product.commands.dlq` both name the DLQ `product.commands.dlq`.
pub fn dlq_name(topic: &str) -> String {
    if topic.ends_with(SUFFIX) { topic.to_owned() } else { format!("{topic}{SUFFIX}") }
}

/// Where a message sits in a DLQ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub partition: i32,
    pub offset: i64,
}

impl Position {
    /// `<partition>/<offset>`, as the markers write it.
    pub fn parse_header(s: &str) -> Option<Position> {
        let (p, o) = s.split_once('/')?;
        Some(Position { partition: p.parse().ok()?, offset: o.parse().ok()? })
    }

    fn header(self) -> String {
        format!("{}/{}", self.partition, self.offset)
    }

    /// `O` or `P:O` (see `Display`).
    pub fn parse(s: &str) -> Result<Position, String> {
        let (p, o) = s.split_once(':').unwrap_or(("0", s));
        match (p.parse::<i32>(), o.parse::<i64>()) {
            (Ok(partition), Ok(offset)) if partition >= 0 && offset >= 0 => Ok(Position { partition, offset }),
            _ => Err(format!("{s:?} is not an offset (O or P:O)")),
        }
    }
}

impl std::fmt::Display for Position {
    /// `O` on partition 0 (every DLQ the services create has one), `P:O` elsewhere.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.partition == 0 { write!(f, "{}", self.offset) } else { write!(f, "{}:{}", self.partition, self.offset) }
    }
}

/// Where a record sits.
pub fn position(r: &Record) -> Position {
    Position { partition: r.partition, offset: r.offset }
}

/// What an operator did with a parked message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Redrive,
    Discard,
}

impl Action {
    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "redrive" => Some(Action::Redrive),
            "discard" => Some(Action::Discard),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Redrive => "redrive",
            Action::Discard => "discard",
        }
    }

    fn marker_header(self) -> &'static str {
        match self {
            Action::Redrive => REDRIVE_OF,
            Action::Discard => DISCARD_OF,
        }
    }
}

/// A marker: what was done with a parked message, by whom, why, when (its timestamp).
#[derive(Debug, Clone)]
pub struct Handled {
    pub action: Action,
    pub by: Option<String>,
    pub reason: Option<String>,
    /// Where a redriven record landed, `<topic>/<partition>/<offset>`.
    pub to: Option<String>,
    pub marker: Record,
}

impl Handled {
    fn of(r: &Record) -> Option<(Position, Handled)> {
        let (action, of) = [Action::Redrive, Action::Discard]
            .into_iter()
            .find_map(|a| r.header(a.marker_header()).as_deref().and_then(Position::parse_header).map(|p| (a, p)))?;
        let handled = Handled {
            action,
            by: r.header(BY),
            reason: r.header(REASON),
            to: r.header(REDRIVEN_TO),
            marker: r.clone(),
        };
        Some((of, handled))
    }
}

/// The parked messages of one DLQ and what operators did with them.
#[derive(Debug, Default)]
pub struct Dlq {
    pub name: String,
    /// Oldest first.
    pub parked: Vec<Record>,
    /// Parked message -> its latest marker.
    pub handled: BTreeMap<Position, Handled>,
}

impl Dlq {
    pub fn new(name: &str, records: Vec<Record>) -> Self {
        let mut dlq = Dlq { name: name.to_owned(), ..Dlq::default() };
        for r in records {
            match Handled::of(&r) {
                Some((of, handled)) => {
                    dlq.handled.insert(of, handled);
                }
                None => dlq.parked.push(r),
            }
        }
        dlq.parked.sort_by_key(position);
        dlq
    }

    /// The parked message at `at`; an error naming what is there instead.
    pub fn message(&self, at: Position) -> anyhow::Result<&Record> {
        if let Some(r) = self.parked.iter().find(|r| position(r) == at) {
            return Ok(r);
        }
        if self.handled.values().any(|m| position(&m.marker) == at) {
            bail!("{} holds no parked message at offset {at} (a marker)", self.name);
        }
        bail!("{} holds no parked message at offset {at}", self.name)
    }

    /// The topic the DLQ's messages came from when a message does not say.
    pub fn base_topic(&self) -> &str {
        self.name.strip_suffix(SUFFIX).unwrap_or(&self.name)
    }

    pub fn original_topic(&self, r: &Record) -> String {
        r.header(h::DLQ_TOPIC).unwrap_or_else(|| self.base_topic().to_owned())
    }

    /// `topic/partition/offset` where the message was first consumed.
    pub fn origin(&self, r: &Record) -> String {
        let or_dash = |v: Option<String>| v.unwrap_or_else(|| "?".into());
        format!(
            "{}/{}/{}",
            self.original_topic(r),
            or_dash(r.header(h::DLQ_PARTITION)),
            or_dash(r.header(h::DLQ_OFFSET))
        )
    }

    /// Parked messages nobody acted on yet.
    pub fn open(&self) -> usize {
        self.parked.iter().filter(|r| !self.handled.contains_key(&position(r))).count()
    }
}

/// The headers of the republished record: the original ones, minus the DLQ's own, plus where
/// it came from.
pub fn republished_headers(dlq: &str, r: &Record) -> Vec<(String, Option<Vec<u8>>)> {
    let mut out: Vec<_> = r.headers.iter().filter(|(k, _)| !k.starts_with(HEADER_PREFIX)).cloned().collect();
    out.push((REDRIVEN_FROM.to_owned(), Some(format!("{dlq}/{}/{}", r.partition, r.offset).into())));
    out
}

fn owned_headers(pairs: &[(String, Option<Vec<u8>>)]) -> OwnedHeaders {
    pairs.iter().fold(OwnedHeaders::new(), |hs, (key, value)| hs.insert(Header { key, value: value.as_deref() }))
}

/// Every DLQ on the cluster, by name.
pub async fn topics(brokers: &str) -> anyhow::Result<Vec<String>> {
    Ok(topic::names(brokers).await?.into_iter().filter(|n| n.ends_with(SUFFIX)).collect())
}

/// One DLQ, read whole.
pub async fn load(brokers: &str, topic: &str, patience: Duration) -> anyhow::Result<Dlq> {
    let name = dlq_name(topic);
    Ok(Dlq::new(&name, topic::read(brokers, &name, &topic::Offsets::new(), false, patience).await?))
}

/// Where a redrive would republish `r`: its original topic and, if that partition still exists,
/// its partition (so it stays behind its key's earlier messages), else by key.
pub async fn target(brokers: &str, dlq: &Dlq, r: &Record) -> anyhow::Result<(String, Option<i32>)> {
    let topic = dlq.original_topic(r);
    let n = topic::partitions(brokers, &topic).await?;
    let partition = r.header(h::DLQ_PARTITION).and_then(|p| p.parse::<i32>().ok()).filter(|p| (0..n).contains(p));
    Ok((topic, partition))
}

/// Republish `r` to `(topic, partition)` (from [`target`]) and record that in its DLQ; answers
/// where the record landed, `<topic>/<partition>/<offset>`.
pub async fn redrive(
    producer: &Producer,
    dlq: &Dlq,
    r: &Record,
    (topic, partition): (&str, Option<i32>),
    by: &str,
    reason: &str,
) -> anyhow::Result<String> {
    let headers = republished_headers(&dlq.name, r);
    let (p, o) = send(producer, topic, partition, r.key.as_deref(), r.payload.as_deref(), &headers).await?;
    let to = format!("{topic}/{p}/{o}");
    mark(producer, dlq, r, Action::Redrive, by, reason, Some(&to)).await.with_context(|| {
        format!("offset {} was republished to {to}, but recording that in {} failed", position(r), dlq.name)
    })?;
    Ok(to)
}

/// Record in its DLQ that `r` will not be redriven.
pub async fn discard(producer: &Producer, dlq: &Dlq, r: &Record, by: &str, reason: &str) -> anyhow::Result<()> {
    mark(producer, dlq, r, Action::Discard, by, reason, None).await
}

async fn mark(
    producer: &Producer,
    dlq: &Dlq,
    r: &Record,
    action: Action,
    by: &str,
    reason: &str,
    to: Option<&str>,
) -> anyhow::Result<()> {
    let mut marker = vec![
        (action.marker_header().to_owned(), Some(position(r).header().into_bytes())),
        (BY.to_owned(), Some(by.as_bytes().to_vec())),
        (REASON.to_owned(), Some(reason.as_bytes().to_vec())),
    ];
    if let Some(to) = to {
        marker.push((REDRIVEN_TO.to_owned(), Some(to.as_bytes().to_vec())));
    }
    send(producer, &dlq.name, Some(r.partition), None, None, &marker).await.map(drop)
}

/// Produce one record and wait for Kafka's acknowledgement; answers where it landed.
async fn send(
    producer: &Producer,
    topic: &str,
    partition: Option<i32>,
    key: Option<&[u8]>,
    payload: Option<&[u8]>,
    headers: &[(String, Option<Vec<u8>>)],
) -> anyhow::Result<(i32, i64)> {
    let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(owned_headers(headers));
    if let Some(p) = partition {
        record = record.partition(p);
    }
    if let Some(k) = key {
        record = record.key(k);
    }
    if let Some(v) = payload {
        record = record.payload(v);
    }
    let delivery =
        producer.send(record, TIMEOUT).await.map_err(|(e, _)| anyhow::anyhow!("producing to {topic}: {e}"))?;
    Ok((delivery.partition, delivery.offset))
}

/// Which of `chosen` (or all, with `all`) to redrive: those handled before are skipped with the
/// reason unless `force`. Unknown offsets are an error, so a typo changes nothing.
pub fn plan<'a>(
    dlq: &'a Dlq,
    chosen: &[Position],
    all: bool,
    force: bool,
) -> anyhow::Result<Vec<(&'a Record, Option<String>)>> {
    let wanted: BTreeSet<Position> = chosen.iter().copied().collect();
    for p in &wanted {
        dlq.message(*p)?;
    }
    Ok(dlq
        .parked
        .iter()
        .filter(|r| all || wanted.contains(&position(r)))
        .map(|r| match dlq.handled.get(&position(r)) {
            Some(m) if !force => (r, Some(format!("already {} (--force to repeat)", describe_handled(m)))),
            _ => (r, None),
        })
        .collect())
}

/// "re-driven to t/1/9 at … by … (reason)" or "discarded at … by … (reason)".
pub fn describe_handled(m: &Handled) -> String {
    let when =
        m.marker.time().map_or_else(|| "?".to_owned(), |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    let what = match m.action {
        Action::Redrive => format!("re-driven to {}", m.to.as_deref().unwrap_or("?")),
        Action::Discard => "discarded".to_owned(),
    };
    let by = m.by.as_deref().map(|b| format!(" by {b}")).unwrap_or_default();
    let why = m.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default();
    format!("{what} at {when}{by}{why}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parked(offset: i64, headers: &[(&str, &str)]) -> Record {
        Record {
            partition: 0,
            offset,
            timestamp: Some(0),
            key: Some(b"k".to_vec()),
            payload: Some(vec![1, 2, 3]),
            headers: headers.iter().map(|(k, v)| ((*k).to_owned(), Some(v.as_bytes().to_vec()))).collect(),
        }
    }

    fn marker(offset: i64, of: &str, action: &str) -> Record {
        let of = format!("0/{of}");
        Record {
            key: None,
            payload: None,
            ..parked(offset, &[(action, &of), (REDRIVEN_TO, "t/1/9"), (BY, "ada"), (REASON, "fixed")])
        }
    }

    fn sample() -> Dlq {
        Dlq::new(
            "t.dlq",
            vec![
                parked(0, &[(h::DLQ_ERROR, "x")]),
                parked(1, &[]),
                marker(2, "0", REDRIVE_OF),
                parked(3, &[]),
                marker(4, "3", DISCARD_OF),
            ],
        )
    }

    #[test]
    fn offsets_parse_with_and_without_partition() {
        assert_eq!(Position::parse("17"), Ok(Position { partition: 0, offset: 17 }));
        assert_eq!(Position::parse("2:17"), Ok(Position { partition: 2, offset: 17 }));
        assert!(Position::parse("x").is_err());
        assert!(Position::parse("-1").is_err());
        assert_eq!(Position { partition: 2, offset: 17 }.to_string(), "2:17");
    }

    #[test]
    fn either_topic_name_means_its_dlq() {
        assert_eq!(dlq_name("order.events"), "order.events.dlq");
        assert_eq!(dlq_name("order.events.dlq"), "order.events.dlq");
    }

    #[test]
    fn markers_are_not_parked_messages_and_say_who_did_what_and_why() {
        let dlq = sample();
        assert_eq!(dlq.parked.iter().map(|r| r.offset).collect::<Vec<_>>(), [0, 1, 3]);
        let redriven = &dlq.handled[&Position { partition: 0, offset: 0 }];
        assert_eq!(
            (redriven.action, redriven.by.as_deref(), redriven.reason.as_deref()),
            (Action::Redrive, Some("ada"), Some("fixed"))
        );
        assert_eq!(dlq.handled[&Position { partition: 0, offset: 3 }].action, Action::Discard);
        assert_eq!(dlq.open(), 1);
        assert!(describe_handled(redriven).starts_with("re-driven to t/1/9 at "), "{}", describe_handled(redriven));
        assert!(describe_handled(redriven).ends_with(" by ada (fixed)"));
    }

    #[test]
    fn all_skips_what_was_handled_unless_forced() {
        let dlq = sample();
        let steps = plan(&dlq, &[], true, false).unwrap();
        assert_eq!(
            steps.iter().map(|(r, skip)| (r.offset, skip.is_some())).collect::<Vec<_>>(),
            [(0, true), (1, false), (3, true)]
        );
        let forced = plan(&dlq, &[Position { partition: 0, offset: 0 }], false, true).unwrap();
        assert!(matches!(forced[..], [(r, None)] if r.offset == 0));
    }

    #[test]
    fn unknown_offsets_and_markers_cannot_be_chosen() {
        let dlq = sample();
        assert!(plan(&dlq, &[Position { partition: 0, offset: 9 }], false, false).is_err());
        let e = plan(&dlq, &[Position { partition: 0, offset: 2 }], false, false).unwrap_err();
        assert!(e.to_string().contains("marker"), "{e}");
    }

    #[test]
    fn republished_headers_drop_the_dlq_ones_and_keep_the_message_id() {
        let r = parked(
            5,
            &[(h::MESSAGE_ID, "m1"), (h::DLQ_ERROR, "boom"), (h::DLQ_OFFSET, "3"), (REDRIVEN_FROM, "old/0/1")],
        );
        let out = republished_headers("t.dlq", &r);
        assert_eq!(
            out,
            [(h::MESSAGE_ID.to_owned(), Some(b"m1".to_vec())), (REDRIVEN_FROM.to_owned(), Some(b"t.dlq/0/5".to_vec()))]
        );
    }
}
