//! `dlq`: look at the messages parked on the dead-letter topics and re-drive chosen ones.
//!
//! ```text
//! dlq list [--topic T] [--limit N]
//! dlq redrive --topic T (--offset O ... | --all) [--force] [--dry-run]
//! ```
//!
//! `T` is an original topic (`product.commands`) or its DLQ (`product.commands.dlq`). Brokers
//! come from `SHOP_KAFKA_BROKERS` (or `--brokers`). Reading uses a throwaway consumer that is
//! assigned every partition, reads from the beginning up to the high watermark and stops; it
//! joins no consumer group and commits nothing.
//!
//! Re-driving republishes a parked message to its original topic and partition with its
//! original key, payload and headers, minus the `dlq-*` ones: the `message-id` stays, so a
//! consumer that already applied it skips it. The new record carries `dlq-redriven-from`
//! (`<dlq>/<partition>/<offset>`) so its origin can be traced, and it is parked again like any
//! other message if it still fails.
//!
//! What was re-driven is recorded in the DLQ itself: after Kafka acknowledged the republished
//! record, a key-less, payload-less marker with `dlq-redrive-of: <partition>/<offset>` and
//! `dlq-redriven-to` is appended to the DLQ. `list` and `redrive` read the whole DLQ anyway, so
//! they see the markers at no extra cost, and the record stays next to the message it is about.
//! A consumer group per DLQ was the other candidate, but one committed offset can only say
//! "everything before here", not "these chosen offsets". Kafka transactions would make the
//! republish and the marker atomic, but they leave commit markers in the business topics (an
//! offset that no consumer ever sees, which skews lag) for little gain: if the marker write
//! fails after the republish, a second re-drive repeats a message whose `message-id` the
//! consumers deduplicate anyway. `--force` re-drives an already re-driven message on purpose.

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use schemas::headers as h;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Suffix of every dead-letter topic.
const DLQ_SUFFIX: &str = ".dlq";
/// Prefix of the headers the consumer loop adds when parking; stripped on re-drive.
const DLQ_HEADER_PREFIX: &str = "dlq-";
/// On a republished record: the DLQ message it came from, `<dlq>/<partition>/<offset>`.
const REDRIVEN_FROM: &str = "dlq-redriven-from";
/// On a marker in the DLQ: the parked message that was re-driven, `<partition>/<offset>`.
const REDRIVE_OF: &str = "dlq-redrive-of";
/// On a marker in the DLQ: where the republished record landed, `<topic>/<partition>/<offset>`.
const REDRIVEN_TO: &str = "dlq-redriven-to";
/// How long one request to Kafka may take before the CLI gives up instead of hanging.
const TIMEOUT: Duration = Duration::from_secs(10);
/// How long reading a whole DLQ may take.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Parser)]
#[command(name = "dlq", about = "List and re-drive messages parked on the dead-letter topics")]
struct Cli {
    /// Kafka bootstrap servers; default: SHOP_KAFKA_BROKERS or the local stack.
    #[arg(long, global = true)]
    brokers: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the parked messages of one DLQ, or of every `*.dlq` topic.
    List(ListArgs),
    /// Republish parked messages to the topic they came from.
    Redrive(RedriveArgs),
}

#[derive(Debug, Args)]
struct ListArgs {
    /// Original topic or its DLQ; all DLQs when left out.
    #[arg(long)]
    topic: Option<String>,
    /// Show only the newest N parked messages of each DLQ.
    #[arg(long)]
    limit: Option<usize>,
}

#[derive(Debug, Args)]
struct RedriveArgs {
    /// Original topic or its DLQ.
    #[arg(long)]
    topic: String,
    /// DLQ offsets to re-drive (`O`, or `P:O` on a DLQ with several partitions).
    #[arg(long = "offset", value_name = "O", num_args = 1.., required_unless_present = "all", conflicts_with = "all", value_parser = parse_position)]
    offsets: Vec<Position>,
    /// Every parked message not re-driven yet.
    #[arg(long)]
    all: bool,
    /// Re-drive chosen messages even if they were re-driven before.
    #[arg(long)]
    force: bool,
    /// Print what would be republished and change nothing.
    #[arg(long)]
    dry_run: bool,
}

/// Where a message sits in a DLQ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Position {
    partition: i32,
    offset: i64,
}

impl Position {
    fn parse_header(s: &str) -> Option<Position> {
        let (p, o) = s.split_once('/')?;
        Some(Position { partition: p.parse().ok()?, offset: o.parse().ok()? })
    }
}

impl std::fmt::Display for Position {
    /// `O` on partition 0 (every DLQ the services create has one), `P:O` elsewhere.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.partition == 0 { write!(f, "{}", self.offset) } else { write!(f, "{}:{}", self.partition, self.offset) }
    }
}

fn parse_position(s: &str) -> Result<Position, String> {
    let (p, o) = s.split_once(':').unwrap_or(("0", s));
    match (p.parse::<i32>(), o.parse::<i64>()) {
        (Ok(partition), Ok(offset)) if partition >= 0 && offset >= 0 => Ok(Position { partition, offset }),
        _ => Err(format!("{s:?} is not an offset (O or P:O)")),
    }
}

/// One record read from a DLQ: a parked message or a re-drive marker.
#[derive(Debug, Clone)]
struct Record {
    position: Position,
    timestamp: Option<i64>,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Record {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_deref())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// The marker's subject, if this record is a re-drive marker.
    fn redrive_of(&self) -> Option<Position> {
        self.header(REDRIVE_OF).as_deref().and_then(Position::parse_header)
    }

    fn key_text(&self) -> String {
        self.key.as_deref().map_or_else(|| "-".to_owned(), |k| String::from_utf8_lossy(k).into_owned())
    }

    fn time(&self) -> String {
        self.timestamp
            .and_then(DateTime::<Utc>::from_timestamp_millis)
            .map_or_else(|| "-".to_owned(), |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    }
}

/// The parked messages of one DLQ and what has been re-driven from it.
#[derive(Debug, Default)]
struct Dlq {
    name: String,
    parked: Vec<Record>,
    /// Parked message -> its (latest) marker.
    redriven: BTreeMap<Position, Record>,
}

impl Dlq {
    fn new(name: &str, records: Vec<Record>) -> Self {
        let mut dlq = Dlq { name: name.to_owned(), ..Dlq::default() };
        for r in records {
            match r.redrive_of() {
                Some(of) => {
                    dlq.redriven.insert(of, r);
                }
                None => dlq.parked.push(r),
            }
        }
        dlq.parked.sort_by_key(|r| r.position);
        dlq
    }

    /// The topic the DLQ's messages came from when a message does not say.
    fn base_topic(&self) -> &str {
        self.name.strip_suffix(DLQ_SUFFIX).unwrap_or(&self.name)
    }

    fn original_topic(&self, r: &Record) -> String {
        r.header(h::DLQ_TOPIC).unwrap_or_else(|| self.base_topic().to_owned())
    }

    /// `topic/partition/offset` where the message was first consumed.
    fn origin(&self, r: &Record) -> String {
        let or_dash = |v: Option<String>| v.unwrap_or_else(|| "?".into());
        format!(
            "{}/{}/{}",
            self.original_topic(r),
            or_dash(r.header(h::DLQ_PARTITION)),
            or_dash(r.header(h::DLQ_OFFSET))
        )
    }

    fn describe(&self, r: &Record) -> String {
        let mut line = format!(
            "offset={} from={} attempts={} record={} key={} size={} time={}",
            r.position,
            self.origin(r),
            r.header(h::DLQ_ATTEMPTS).unwrap_or_else(|| "?".into()),
            r.header(h::RECORD).unwrap_or_else(|| "-".into()),
            r.key_text(),
            r.payload.as_ref().map_or(0, Vec::len),
            r.time(),
        );
        match self.redriven.get(&r.position) {
            Some(m) => {
                let to = m.header(REDRIVEN_TO).unwrap_or_else(|| "?".into());
                let _ = write!(line, " redriven={to}@{}", m.time());
            }
            None => line.push_str(" redriven=no"),
        }
        if let Some(from) = r.header(REDRIVEN_FROM) {
            let _ = write!(line, " earlier-redriven-from={from}");
        }
        let _ = write!(line, " error={:?}", r.header(h::DLQ_ERROR).unwrap_or_default());
        line
    }
}

/// What `redrive` will do with one chosen message.
#[derive(Debug)]
enum Step<'a> {
    Redrive(&'a Record),
    Skip(&'a Record, String),
}

/// Choose the messages to re-drive. Unknown offsets are an error, so a typo changes nothing.
fn plan<'a>(dlq: &'a Dlq, chosen: &[Position], all: bool, force: bool) -> anyhow::Result<Vec<Step<'a>>> {
    let wanted: BTreeSet<Position> = chosen.iter().copied().collect();
    let markers: BTreeSet<Position> = dlq.redriven.values().map(|m| m.position).collect();
    let missing: Vec<String> = wanted
        .iter()
        .filter(|p| !dlq.parked.iter().any(|r| r.position == **p))
        .map(|p| if markers.contains(p) { format!("{p} (a re-drive marker)") } else { p.to_string() })
        .collect();
    if !missing.is_empty() {
        bail!("{} holds no parked message at offset {}", dlq.name, missing.join(", "));
    }
    Ok(dlq
        .parked
        .iter()
        .filter(|r| all || wanted.contains(&r.position))
        .map(|r| match dlq.redriven.get(&r.position) {
            Some(m) if !force => Step::Skip(
                r,
                format!(
                    "already re-driven to {} at {} (--force to repeat)",
                    m.header(REDRIVEN_TO).unwrap_or_else(|| "?".into()),
                    m.time()
                ),
            ),
            _ => Step::Redrive(r),
        })
        .collect())
}

/// The headers of the republished record: the original ones, minus the DLQ's own, plus where
/// it came from.
fn republished_headers(dlq: &str, r: &Record) -> Vec<(String, Option<Vec<u8>>)> {
    let mut out: Vec<_> = r.headers.iter().filter(|(k, _)| !k.starts_with(DLQ_HEADER_PREFIX)).cloned().collect();
    out.push((REDRIVEN_FROM.to_owned(), Some(format!("{dlq}/{}/{}", r.position.partition, r.position.offset).into())));
    out
}

fn owned_headers(pairs: &[(String, Option<Vec<u8>>)]) -> OwnedHeaders {
    pairs.iter().fold(OwnedHeaders::new(), |hs, (key, value)| hs.insert(Header { key, value: value.as_deref() }))
}

fn header_names(pairs: &[(String, Option<Vec<u8>>)]) -> String {
    pairs.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(",")
}

/// `product.commands` and `product.commands.dlq` both name the DLQ `product.commands.dlq`.
fn dlq_name(topic: &str) -> String {
    if topic.ends_with(DLQ_SUFFIX) { topic.to_owned() } else { format!("{topic}{DLQ_SUFFIX}") }
}

fn reader(brokers: &str) -> anyhow::Result<StreamConsumer> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        // Never joined (partitions are assigned) and nothing is committed under this name.
        .set("group.id", "dlq-cli")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .create()
        .context("creating Kafka consumer")
}

/// Partition count of `topic`; an error if the topic does not exist.
fn partitions(consumer: &StreamConsumer, topic: &str) -> anyhow::Result<i32> {
    let md = consumer.fetch_metadata(Some(topic), TIMEOUT).with_context(|| format!("metadata of {topic}"))?;
    let t = md.topics().first().with_context(|| format!("no metadata for {topic}"))?;
    match t.error() {
        None => {}
        Some(rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) => {
            bail!("topic {topic} does not exist")
        }
        Some(e) => bail!("topic {topic}: {e:?}"),
    }
    Ok(i32::try_from(t.partitions().len())?)
}

/// Every record of `topic`, from the beginning up to the high watermarks taken at the start.
async fn read_all(brokers: &str, topic: &str) -> anyhow::Result<Vec<Record>> {
    let consumer = reader(brokers)?;
    let n = partitions(&consumer, topic)?;
    let mut tpl = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for p in 0..n {
        let (low, high) =
            consumer.fetch_watermarks(topic, p, TIMEOUT).with_context(|| format!("watermarks of {topic}/{p}"))?;
        if high > low {
            tpl.add_partition_offset(topic, p, Offset::Offset(low))?;
            ends.insert(p, high);
        }
    }
    let mut out = Vec::new();
    if ends.is_empty() {
        return Ok(out);
    }
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + READ_TIMEOUT;
    while !ends.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = match tokio::time::timeout(left, consumer.recv()).await {
            Err(_) => {
                bail!("reading {topic} did not reach the end within {READ_TIMEOUT:?} (partitions left: {ends:?})")
            }
            Ok(Err(KafkaError::PartitionEOF(p))) => {
                ends.remove(&p);
                continue;
            }
            Ok(Err(e)) => return Err(e).with_context(|| format!("reading {topic}")),
            Ok(Ok(m)) => m,
        };
        if ends.get(&m.partition()).is_some_and(|high| m.offset() + 1 >= *high) {
            ends.remove(&m.partition());
        }
        out.push(Record {
            position: Position { partition: m.partition(), offset: m.offset() },
            timestamp: m.timestamp().to_millis(),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().map(<[u8]>::to_vec),
            headers: m
                .headers()
                .map(|hs| hs.iter().map(|hd| (hd.key.to_owned(), hd.value.map(<[u8]>::to_vec))).collect())
                .unwrap_or_default(),
        });
    }
    Ok(out)
}

async fn load(brokers: &str, name: &str) -> anyhow::Result<Dlq> {
    Ok(Dlq::new(name, read_all(brokers, name).await?))
}

async fn list(brokers: &str, args: ListArgs) -> anyhow::Result<()> {
    let names = match args.topic {
        Some(t) => vec![dlq_name(&t)],
        None => {
            let md = reader(brokers)?.fetch_metadata(None, TIMEOUT).context("listing topics")?;
            let mut names: Vec<String> =
                md.topics().iter().map(|t| t.name().to_owned()).filter(|n| n.ends_with(DLQ_SUFFIX)).collect();
            names.sort();
            names
        }
    };
    for name in names {
        let dlq = load(brokers, &name).await?;
        let skip = args.limit.map_or(0, |n| dlq.parked.len().saturating_sub(n));
        println!(
            "# {name}: {} parked, {} re-driven{}",
            dlq.parked.len(),
            dlq.parked.iter().filter(|r| dlq.redriven.contains_key(&r.position)).count(),
            if skip > 0 { format!(" (newest {} shown)", dlq.parked.len() - skip) } else { String::new() }
        );
        for r in &dlq.parked[skip..] {
            println!("{}", dlq.describe(r));
        }
    }
    Ok(())
}

async fn redrive(brokers: &str, args: RedriveArgs) -> anyhow::Result<()> {
    let name = dlq_name(&args.topic);
    let dlq = load(brokers, &name).await?;
    let steps = plan(&dlq, &args.offsets, args.all, args.force)?;
    let producer = if args.dry_run { None } else { Some(messaging::kafka::producer(brokers)?) };
    let counts = reader(brokers)?;
    let mut partition_counts: BTreeMap<String, i32> = BTreeMap::new();
    let (mut done, mut skipped) = (0, 0);
    for step in steps {
        let r = match step {
            Step::Skip(r, why) => {
                println!("skip offset={}: {why}", r.position);
                skipped += 1;
                continue;
            }
            Step::Redrive(r) => r,
        };
        let topic = dlq.original_topic(r);
        let n = match partition_counts.get(&topic) {
            Some(n) => *n,
            None => {
                let n = partitions(&counts, &topic)?;
                partition_counts.insert(topic.clone(), n);
                n
            }
        };
        // Back to the partition it came from, so it stays behind its key's earlier messages;
        // by key when the partition is unknown or no longer exists.
        let partition = r.header(h::DLQ_PARTITION).and_then(|p| p.parse::<i32>().ok()).filter(|p| (0..n).contains(p));
        let headers = republished_headers(&name, r);
        let target = partition.map_or_else(|| format!("{topic} (by key)"), |p| format!("{topic}/{p}"));
        let what = format!(
            "offset={} -> {target} key={} record={} size={} headers={}",
            r.position,
            r.key_text(),
            r.header(h::RECORD).unwrap_or_else(|| "-".into()),
            r.payload.as_ref().map_or(0, Vec::len),
            header_names(&headers),
        );
        let Some(producer) = &producer else {
            println!("would republish {what}");
            done += 1;
            continue;
        };
        let (p, o) = send(producer, &topic, partition, r.key.as_deref(), r.payload.as_deref(), &headers).await?;
        let marker = vec![
            (REDRIVE_OF.to_owned(), Some(format!("{}/{}", r.position.partition, r.position.offset).into_bytes())),
            (REDRIVEN_TO.to_owned(), Some(format!("{topic}/{p}/{o}").into_bytes())),
        ];
        send(producer, &name, Some(r.position.partition), None, None, &marker).await.with_context(|| {
            format!("offset {} was republished to {topic}/{p}/{o}, but recording that in {name} failed", r.position)
        })?;
        println!("republished {what} at {topic}/{p}/{o}");
        done += 1;
    }
    if args.dry_run {
        println!("dry run: {done} would be republished, {skipped} skipped; nothing was sent");
    } else {
        println!("{done} republished, {skipped} skipped");
    }
    Ok(())
}

/// Produce one record and wait for Kafka's acknowledgement; answers where it landed.
async fn send(
    producer: &FutureProducer,
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

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = async {
        let brokers = match cli.brokers {
            Some(b) => b,
            None => runtime::Settings::from_env("dlq")?.kafka_brokers,
        };
        match cli.command {
            Command::List(args) => list(&brokers, args).await,
            Command::Redrive(args) => redrive(&brokers, args).await,
        }
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dlq: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parked(offset: i64, headers: &[(&str, &str)]) -> Record {
        Record {
            position: Position { partition: 0, offset },
            timestamp: Some(0),
            key: Some(b"k".to_vec()),
            payload: Some(vec![1, 2, 3]),
            headers: headers.iter().map(|(k, v)| ((*k).to_owned(), Some(v.as_bytes().to_vec()))).collect(),
        }
    }

    fn marker(offset: i64, of: i64) -> Record {
        let of = format!("0/{of}");
        Record { key: None, payload: None, ..parked(offset, &[(REDRIVE_OF, &of), (REDRIVEN_TO, "t/1/9")]) }
    }

    fn sample() -> Dlq {
        Dlq::new("t.dlq", vec![parked(0, &[(h::DLQ_ERROR, "x")]), parked(1, &[]), marker(2, 0), parked(3, &[])])
    }

    #[test]
    fn offsets_parse_with_and_without_partition() {
        assert_eq!(parse_position("17"), Ok(Position { partition: 0, offset: 17 }));
        assert_eq!(parse_position("2:17"), Ok(Position { partition: 2, offset: 17 }));
        assert!(parse_position("x").is_err());
        assert!(parse_position("-1").is_err());
        assert_eq!(Position { partition: 2, offset: 17 }.to_string(), "2:17");
    }

    #[test]
    fn either_topic_name_means_its_dlq() {
        assert_eq!(dlq_name("order.events"), "order.events.dlq");
        assert_eq!(dlq_name("order.events.dlq"), "order.events.dlq");
    }

    #[test]
    fn markers_are_not_parked_messages() {
        let dlq = sample();
        assert_eq!(dlq.parked.iter().map(|r| r.position.offset).collect::<Vec<_>>(), [0, 1, 3]);
        assert!(dlq.redriven.contains_key(&Position { partition: 0, offset: 0 }));
        assert!(dlq.describe(&dlq.parked[0]).contains("redriven=t/1/9@"));
        assert!(dlq.describe(&dlq.parked[1]).contains("redriven=no"));
    }

    #[test]
    fn all_skips_what_was_redriven_unless_forced() {
        let dlq = sample();
        let steps = plan(&dlq, &[], true, false).unwrap();
        assert!(matches!(steps[0], Step::Skip(r, _) if r.position.offset == 0));
        assert!(matches!(steps[1], Step::Redrive(r) if r.position.offset == 1));
        assert_eq!(steps.len(), 3);
        let forced = plan(&dlq, &[Position { partition: 0, offset: 0 }], false, true).unwrap();
        assert!(matches!(forced[..], [Step::Redrive(r)] if r.position.offset == 0));
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
