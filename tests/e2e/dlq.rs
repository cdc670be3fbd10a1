//! Poison messages: bytes that are not Avro, and Avro framing with a schema id the registry
//! never issued, on every topic a service consumes. Each is parked on `<topic>.dlq` at once,
//! with the reason and where it came from, and the partition behind it keeps moving. The `dlq`
//! CLI lists them, and re-drives one exactly once.

use crate::harness::*;
use crate::kafka::{self, Offsets, Rec};
use schemas::headers as h;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Every topic some service consumes, with how many consumer groups read it (each parks its
/// own copy of a poison message).
fn consumed() -> Vec<(&'static str, usize)> {
    let mut topics: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, reads) in kafka::groups() {
        for t in reads {
            *topics.entry(t.name()).or_default() += 1;
        }
    }
    topics.into_iter().collect()
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Poison {
    Garbage,
    UnknownSchema,
}

impl Poison {
    fn payload(self) -> Vec<u8> {
        match self {
            Poison::Garbage => b"\xde\xad\xbe\xef this is not Avro \xff".to_vec(),
            // Confluent framing: magic byte, a schema id no registry issued, then junk.
            Poison::UnknownSchema => [&[0u8][..], &999_999u32.to_be_bytes(), b"junk body"].concat(),
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Poison::Garbage => "malformed payload",
            Poison::UnknownSchema => "unknown schema id",
        }
    }
}

#[derive(Debug)]
struct Sent {
    topic: &'static str,
    groups: usize,
    poison: Poison,
    key: String,
    partition: i32,
    offset: i64,
}

/// The `dlq` binary of the ops package (tools/ops), built if needed. `CARGO_BIN_EXE_*` only covers
/// this package's own binaries, so ask cargo where it put the artifact.
async fn dlq_binary() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tools/ops/Cargo.toml");
    let out = tokio::process::Command::new(cargo)
        .args(["build", "--quiet", "--bin", "dlq", "--message-format=json-render-diagnostics", "--manifest-path"])
        .arg(&manifest)
        .output()
        .await
        .expect("running cargo build");
    assert!(out.status.success(), "building dlq failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["reason"] == "compiler-artifact" && v["target"]["name"] == "dlq")
        .and_then(|v| v["executable"].as_str().map(PathBuf::from))
        .expect("cargo named no dlq executable")
}

async fn cli(bin: &PathBuf, args: &[&str]) -> String {
    let out = tokio::process::Command::new(bin)
        .args(args)
        .env("SHOP_KAFKA_BROKERS", brokers())
        .output()
        .await
        .expect("running dlq");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "dlq {args:?} failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// DLQ records (not re-drive markers) whose key is one of ours, read from `from`.
async fn parked(dlq: &str, from: &Offsets, prefix: &str) -> Vec<Rec> {
    kafka::read(dlq, from)
        .await
        .into_iter()
        .filter(|r| r.key_text().unwrap_or_default().starts_with(prefix) && r.header(h::DLQ_ERROR).is_some())
        .collect()
}

/// Our parked messages on the DLQ of every topic.
async fn parked_everywhere<'a>(starts: &BTreeMap<&'a str, Offsets>, run: &str) -> BTreeMap<&'a str, Vec<Rec>> {
    let mut out = BTreeMap::new();
    for (topic, from) in starts {
        out.insert(*topic, parked(&format!("{topic}.dlq"), from, run).await);
    }
    out
}

#[tokio::test]
#[ignore = "needs the running stack: ./stack test"]
async fn poison_messages_are_parked_with_a_reason_and_the_partitions_keep_moving() {
    let run = unique("poison");
    let producer = kafka::producer();
    let topics = consumed();

    // A good flow first: every topic gets traffic, and the partitions it used start with a good
    // record, which tests that read a topic from the beginning rely on. Only partitions that
    // hold records are poisoned, so on a fresh stack poison is never a partition's first record.
    let customer = new_customer().await;
    let product = new_product(700, 4).await;
    let order = place_order(&customer, &[(&product, 1)]).await;
    assert_eq!(final_order(&order).await["status"], "CONFIRMED");
    let dlq_starts: BTreeMap<&str, Offsets> =
        topics.iter().map(|(t, _)| (*t, kafka::ends(&format!("{t}.dlq")))).collect();

    let mut sent = Vec::new();
    for (topic, groups) in &topics {
        for (partition, _) in kafka::ends(topic).into_iter().filter(|(_, end)| *end > 0) {
            for poison in [Poison::Garbage, Poison::UnknownSchema] {
                let key = format!("{run}-{partition}-{poison:?}");
                let (p, offset) =
                    kafka::produce(&producer, topic, Some(partition), Some(key.as_bytes()), &poison.payload(), &[])
                        .await;
                sent.push(Sent { topic, groups: *groups, poison, key, partition: p, offset });
            }
        }
        assert!(sent.iter().any(|s| s.topic == *topic), "the flow left no record on {topic}");
    }

    // Each lands on its DLQ, straight away (one attempt), with the reason and its coordinates.
    let start = Instant::now();
    let mut seen;
    loop {
        seen = parked_everywhere(&dlq_starts, &run).await;
        let missing: Vec<_> = sent
            .iter()
            .filter(|s| !seen[s.topic].iter().any(|r| r.key_text().unwrap_or_default() == s.key))
            .map(|s| (s.topic, &s.key))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(start.elapsed() < SETTLE, "not parked within {SETTLE:?}: {missing:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for s in &sent {
        for r in seen[s.topic].iter().filter(|r| r.key_text().unwrap_or_default() == s.key) {
            let error = r.header(h::DLQ_ERROR).unwrap_or_default();
            assert!(error.contains(s.poison.reason()), "{} {:?}: dlq-error {error:?}", s.topic, s.poison);
            assert_eq!(r.header(h::DLQ_TOPIC).as_deref(), Some(s.topic), "{s:?}");
            assert_eq!(r.header(h::DLQ_PARTITION), Some(s.partition.to_string()), "{s:?}");
            assert_eq!(r.header(h::DLQ_OFFSET), Some(s.offset.to_string()), "{s:?}");
            assert_eq!(r.header(h::DLQ_ATTEMPTS).as_deref(), Some("1"), "{s:?}: a decode failure is not retried");
            assert_eq!(r.payload.as_deref(), Some(&s.poison.payload()[..]), "{s:?}: payload kept byte for byte");
        }
    }

    // The partitions behind the poison keep moving: the same customer and product (so the same
    // partitions) order again and get through, and every group reads past every poison.
    let order = place_order(&customer, &[(&product, 1)]).await;
    let order = final_order(&order).await;
    assert_eq!(order["status"], "CONFIRMED", "{order}");
    for (topic, _) in &topics {
        let mut past = Offsets::new();
        for s in sent.iter().filter(|s| s.topic == *topic) {
            let next = past.entry(s.partition).or_default();
            *next = (*next).max(s.offset + 1);
        }
        kafka::wait_consumed(topic, &past, SETTLE).await;
    }

    // Every consumer group that reads a topic parked its own copy.
    let start = Instant::now();
    loop {
        let seen = parked_everywhere(&dlq_starts, &run).await;
        let mut short = Vec::new();
        for s in &sent {
            let copies = seen[s.topic].iter().filter(|r| r.key_text().unwrap_or_default() == s.key).count();
            if copies < s.groups {
                short.push(format!("{} {:?} p{}: {copies} of {}", s.topic, s.poison, s.partition, s.groups));
            }
        }
        if short.is_empty() {
            break;
        }
        assert!(start.elapsed() < SETTLE, "not every consumer group parked its copy: {short:?}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    cli_lists_and_redrives_once(&run, &sent, &dlq_starts).await;
}

/// `dlq list` shows our poison; `redrive --dry-run` changes nothing; `redrive` republishes it
/// (it fails again and is parked again, saying where it was re-driven from) and a second
/// `redrive` of the same message is refused.
async fn cli_lists_and_redrives_once(run: &str, sent: &[Sent], dlq_starts: &BTreeMap<&str, Offsets>) {
    const TOPIC: &str = "product.commands";
    const DLQ: &str = "product.commands.dlq";
    let bin = dlq_binary().await;
    let ours = sent.iter().find(|s| s.topic == TOPIC && s.poison == Poison::Garbage).expect("garbage sent");
    let parked_at = parked(DLQ, &dlq_starts[TOPIC], &ours.key).await;
    let offset = parked_at[0].offset.to_string();

    let listing = cli(&bin, &["list", "--topic", TOPIC]).await;
    let line =
        listing.lines().find(|l| l.contains(&format!("key={}", ours.key))).unwrap_or_else(|| panic!("{listing}"));
    for part in [
        format!("offset={offset} "),
        format!("from={TOPIC}/{}/{} ", ours.partition, ours.offset),
        "attempts=1 ".to_owned(),
        "redriven=no ".to_owned(),
        "malformed payload".to_owned(),
    ] {
        assert!(line.contains(&part), "{part:?} missing from {line}");
    }
    let limited = cli(&bin, &["list", "--topic", TOPIC, "--limit", "1"]).await;
    assert_eq!(limited.lines().filter(|l| l.starts_with("offset=")).count(), 1, "{limited}");

    // Dry run: says what it would do, sends nothing.
    let (topic_before, dlq_before) = (kafka::ends(TOPIC), kafka::ends(DLQ));
    let dry = cli(&bin, &["redrive", "--topic", TOPIC, "--offset", &offset, "--dry-run"]).await;
    assert!(dry.contains(&format!("would republish offset={offset} -> {TOPIC}/{}", ours.partition)), "{dry}");
    assert!(dry.contains("nothing was sent"), "{dry}");
    let from = format!("{DLQ}/0/{offset}");
    let republished = |recs: Vec<Rec>| recs.into_iter().filter(|r| r.header("dlq-redriven-from") == Some(from.clone()));
    assert_eq!(republished(kafka::read(TOPIC, &topic_before).await).count(), 0, "the dry run republished");
    let of = format!("0/{offset}");
    let markers =
        kafka::read(DLQ, &dlq_before).await.into_iter().filter(|r| r.header("dlq-redrive-of") == Some(of.clone()));
    assert_eq!(markers.count(), 0, "the dry run recorded a re-drive");

    // The real thing: back on its partition with key, payload and headers; parked again.
    let done = cli(&bin, &["redrive", "--topic", TOPIC, "--offset", &offset]).await;
    assert!(done.contains("1 republished, 0 skipped"), "{done}");
    let again: Vec<Rec> = republished(kafka::read(TOPIC, &topic_before).await).collect();
    assert_eq!(again.len(), 1, "{done}");
    assert_eq!((again[0].partition, again[0].key_text().unwrap_or_default()), (ours.partition, ours.key.clone()));
    assert_eq!(again[0].payload.as_deref(), Some(&Poison::Garbage.payload()[..]));
    assert!(again[0].headers.iter().all(|(k, _)| !k.starts_with("dlq-") || k == "dlq-redriven-from"));
    let start = Instant::now();
    while !parked(DLQ, &dlq_before, run)
        .await
        .iter()
        .any(|r| r.header(h::DLQ_OFFSET) == Some(again[0].offset.to_string()))
    {
        assert!(start.elapsed() < SETTLE, "the re-driven poison was not parked again");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let listing = cli(&bin, &["list", "--topic", DLQ]).await;
    let line =
        listing.lines().find(|l| l.starts_with(&format!("offset={offset} "))).unwrap_or_else(|| panic!("{listing}"));
    assert!(line.contains(&format!("redriven={TOPIC}/{}/{}@", ours.partition, again[0].offset)), "{line}");

    // Not twice by accident.
    let topic_before = kafka::ends(TOPIC);
    let twice = cli(&bin, &["redrive", "--topic", TOPIC, "--offset", &offset]).await;
    assert!(twice.contains("already re-driven") && twice.contains("0 republished, 1 skipped"), "{twice}");
    assert_eq!(republished(kafka::read(TOPIC, &topic_before).await).count(), 0, "{twice}");
}
