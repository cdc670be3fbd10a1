//! `projectors rebuild`: replay the event topics from the beginning into shadow collections
//! with the live projections' own code, catch up with the live high watermark, then switch
//! each read model's active pointer (see `readstore::readmodel`). The services read the old
//! collections until the switch; the live projector keeps running throughout and follows the
//! pointer once its cache expires.
//!
//! Handover: after the switch the rebuild keeps applying new events for [`GRACE`] (a few
//! pointer cache lifetimes) and then up to the high watermark once more, so an event the live
//! projector wrote to the old collection just before it saw the new pointer lands in the new
//! one too. Both apply the same version-guarded upserts, so overlapping is harmless.
//!
//! Resumable: the targets and the offsets applied so far live in `readmodels.rebuilds`
//! (`_id`: `all` or the read model names), saved every second and on Ctrl-C; a re-run with the
//! same selection continues from there. The old collections are kept (a pointer write rolls
//! back); dropping them is left to the operator.
//!
//! Until the switch nobody else writes the shadow collections, so a batch (up to [`BATCH`]
//! records, decoded in parallel) is folded per document and each touched document is written
//! once ([`crate::fold`]); progress is saved after a flushed batch. The next batch is received,
//! decoded and planned while one is written. From the switch on the
//! live projector writes the same collections, so the rebuild applies event by event with the
//! guarded upserts: records are grouped by Kafka key (the aggregate id, which is also the id of
//! every document its events touch) and groups are applied concurrently, each in order — two
//! upserts of one new document must never race. The folded path falls back to this one for
//! any batch it cannot write exactly.

use crate::fold::{self, Known};
use crate::offsets::{self, Offsets, Tp};
use crate::{Projections, topics_of};
use anyhow::Context;
use contract::RebuildProgress;
use futures::{StreamExt, TryStreamExt};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use messaging::consumer::{Envelope, Handler, HandlerError};
use mongodb::bson::{Document, doc};
use mongodb::{Client, Collection, Database};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Message as _, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use readstore::readmodel::{self, META_DB, POINTER_TTL, ReadModel};
use runtime::Settings;
use schemas::{Codec, DecodeError, Topic};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Rebuild progress documents in [`META_DB`].
pub const REBUILDS: &str = "rebuilds";
/// The generation counter that numbers shadow collections, in [`META_DB`].
const COUNTERS: &str = "counters";
/// How long the rebuild keeps applying after the switch (see the module docs).
pub const GRACE: Duration = Duration::from_secs(3 * POINTER_TTL.as_secs());
const SAVE_EVERY: Duration = Duration::from_secs(1);
/// Records per batch (one folded write per touched document each).
pub const BATCH: usize = 20_000;
const CONCURRENCY: usize = 8;
/// A catch-up round that applied fewer events than this is close enough to switch.
const CLOSE_ENOUGH: u64 = 200;

pub struct Options {
    pub read_models: Vec<ReadModel>,
    pub dry_run: bool,
    /// Events per second at most, to spare the database that serves queries meanwhile.
    pub max_rate: Option<u32>,
    pub place: Place,
    /// How long to keep applying after the switch; [`GRACE`] unless nothing else writes.
    pub grace: Duration,
}

impl Options {
    pub fn new(read_models: Vec<ReadModel>) -> Self {
        Self { read_models, dry_run: false, max_rate: None, place: Place::default(), grace: GRACE }
    }
}

/// Where a rebuild reads and writes: by default the live event topics, each read model's own
/// database and the pointers in [`META_DB`]; a benchmark reads topics under a prefix and keeps
/// everything in one database of its own.
#[derive(Debug, Clone, Default)]
pub struct Place {
    pub topic_prefix: String,
    pub database: Option<String>,
}

impl Place {
    pub fn topic(&self, topic: Topic) -> String {
        format!("{}{}", self.topic_prefix, topic.name())
    }

    fn db_of(&self, read_model: ReadModel) -> &str {
        self.database.as_deref().unwrap_or(read_model.location().0)
    }

    fn meta(&self, client: &Client) -> Database {
        client.database(self.database.as_deref().unwrap_or(META_DB))
    }
}

/// What a finished rebuild did.
#[derive(Debug, Clone)]
pub struct Report {
    /// Events applied by this run (a resumed run counts only its own).
    pub applied: u64,
    /// From the first record read to the switch.
    pub until_switch: Duration,
}

#[derive(Debug, Clone)]
struct Progress {
    id: String,
    phase: Phase,
    targets: BTreeMap<ReadModel, String>,
    next: BTreeMap<Tp, i64>,
    applied: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Replay,
    Switched,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::Replay => "replay",
            Phase::Switched => "switched",
        }
    }
}

fn rebuilds(meta: &Database) -> Collection<Document> {
    meta.collection(REBUILDS)
}

pub fn rebuild_id(read_models: &[ReadModel]) -> String {
    if ReadModel::ALL.iter().all(|r| read_models.contains(r)) {
        return "all".to_owned();
    }
    read_models.iter().map(|r| r.name()).collect::<Vec<_>>().join("+")
}

fn shadow_name(read_model: ReadModel, generation: i64) -> String {
    format!("{}__rebuild_{generation}", read_model.location().1)
}

impl Progress {
    fn to_doc(&self) -> Document {
        let targets: Vec<Document> =
            self.targets.iter().map(|(r, c)| doc! { "read_model": r.name(), "collection": c }).collect();
        let offsets: Vec<Document> =
            self.next.iter().map(|((t, p), n)| doc! { "topic": t, "partition": p, "next": n }).collect();
        doc! {
            "_id": &self.id, "phase": self.phase.as_str(), "targets": targets, "offsets": offsets,
            "applied": self.applied, "updated_at": mongodb::bson::DateTime::now(),
        }
    }

    fn from_doc(d: &Document) -> anyhow::Result<Self> {
        let bad = || anyhow::anyhow!("malformed rebuild progress {d}");
        let mut targets = BTreeMap::new();
        for t in d.get_array("targets")? {
            let t = t.as_document().ok_or_else(bad)?;
            let r = ReadModel::parse(t.get_str("read_model")?).ok_or_else(bad)?;
            targets.insert(r, t.get_str("collection")?.to_owned());
        }
        let mut next = BTreeMap::new();
        for o in d.get_array("offsets")? {
            let o = o.as_document().ok_or_else(bad)?;
            next.insert((o.get_str("topic")?.to_owned(), o.get_i32("partition")?), o.get_i64("next")?);
        }
        let phase = match d.get_str("phase")? {
            "switched" => Phase::Switched,
            _ => Phase::Replay,
        };
        Ok(Self { id: d.get_str("_id")?.to_owned(), phase, targets, next, applied: d.get_i64("applied")? })
    }

    async fn save(&self, meta: &Database) -> mongodb::error::Result<()> {
        rebuilds(meta).replace_one(doc! { "_id": &self.id }, self.to_doc()).upsert(true).await?;
        moved();
        Ok(())
    }
}

/// Bumped whenever a rebuild of this process saved its progress, switched or ended: what
/// `GET /status/live` waits on.
pub static PROGRESS: std::sync::LazyLock<tokio::sync::watch::Sender<u64>> =
    std::sync::LazyLock::new(|| tokio::sync::watch::channel(0).0);

/// Tell the followers of [`PROGRESS`] that something moved.
pub fn moved() {
    PROGRESS.send_modify(|n| *n += 1);
}

/// Unfinished rebuilds, each with the next offset it will read per partition (from which
/// `status` computes how far it is).
pub async fn summaries(client: &Client) -> anyhow::Result<Vec<(RebuildProgress, BTreeMap<Tp, i64>)>> {
    let docs: Vec<Document> = rebuilds(&client.database(META_DB)).find(doc! {}).await?.try_collect().await?;
    docs.iter()
        .map(|d| {
            let p = Progress::from_doc(d)?;
            let summary = RebuildProgress {
                id: p.id,
                phase: p.phase.as_str().to_owned(),
                targets: p.targets.iter().map(|(r, c)| (r.name().to_owned(), c.clone())).collect(),
                applied: p.applied,
                position: 0,
                total: 0,
            };
            Ok((summary, p.next))
        })
        .collect()
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> anyhow::Result<T> + Send + 'static) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f).await?
}

pub async fn run(settings: &Settings, options: Options) -> anyhow::Result<Option<Report>> {
    anyhow::ensure!(!options.read_models.is_empty(), "name a read model or --all");
    let mongo = readmodel::connect(&settings.mongodb_url).await?;
    let place = options.place.clone();
    let meta = place.meta(&mongo);
    let id = rebuild_id(&options.read_models);
    let mut topics: Vec<String> =
        options.read_models.iter().flat_map(|r| topics_of(*r)).map(|t| place.topic(*t)).collect();
    topics.sort();
    topics.dedup();
    let kafka = {
        let brokers = settings.kafka_brokers.clone();
        Arc::new(blocking(move || Offsets::connect(&brokers)).await?)
    };
    let tps = blocking({
        let (k, t) = (kafka.clone(), topics.clone());
        move || k.partitions(&t.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await?;
    let watermarks = || {
        let (k, t) = (kafka.clone(), tps.clone());
        blocking(move || k.watermarks(&t))
    };
    let marks = watermarks().await?;
    let existing = rebuilds(&meta).find_one(doc! { "_id": &id }).await?;
    let existing = existing.as_ref().map(Progress::from_doc).transpose()?;

    if options.dry_run {
        dry_run(&mongo, &id, &options, &marks, existing.as_ref()).await?;
        return Ok(None);
    }

    let mut progress = match existing {
        Some(mut p) => {
            for (tp, (low, _)) in &marks {
                p.next.entry(tp.clone()).or_insert(*low);
            }
            let position: i64 = marks.iter().map(|(tp, (low, _))| p.next[tp] - low).sum();
            println!(
                "resuming from position {position} ({} events applied, phase {}) into {}",
                p.applied,
                p.phase.as_str(),
                describe_targets(&place, &p.targets)
            );
            p
        }
        None => {
            let generation = next_generation(&meta).await?;
            let targets: BTreeMap<_, _> =
                options.read_models.iter().map(|r| (*r, shadow_name(*r, generation))).collect();
            for (r, c) in &targets {
                // Left over from a rebuild whose progress was deleted: start clean.
                mongo.database(place.db_of(*r)).collection::<Document>(c).drop().await?;
            }
            let p = Progress {
                id: id.clone(),
                phase: Phase::Replay,
                targets,
                next: marks.iter().map(|(tp, (low, _))| (tp.clone(), *low)).collect(),
                applied: 0,
            };
            p.save(&meta).await?;
            println!("starting rebuild {id} into {}", describe_targets(&place, &p.targets));
            p
        }
    };

    let collections: BTreeMap<_, _> =
        progress.targets.iter().map(|(r, c)| (*r, mongo.database(place.db_of(*r)).collection::<Document>(c))).collect();
    let known = if progress.phase == Phase::Replay { Some(Known::load(&collections).await?) } else { None };
    let projections = Projections::into_collections(collections);
    projections.create_indexes().await.context("creating indexes on the shadow collections")?;

    let interrupted = Arc::new(AtomicBool::new(false));
    tokio::spawn({
        let flag = interrupted.clone();
        async move {
            runtime::shutdown_signal().await;
            flag.store(true, Ordering::SeqCst);
        }
    });

    let mut replay = Replay::new(settings, &meta, projections, known, &progress, options.max_rate, interrupted)?;
    let start: i64 = marks.iter().map(|(tp, (low, _))| progress.next[tp] - low).sum();
    let total: i64 = marks.values().map(|(low, high)| high - low).sum();
    replay.progress_bar(marks.iter().map(|(tp, (low, _))| (tp.clone(), *low)).collect(), start, total);

    if progress.phase == Phase::Replay {
        // Replay, then catch up until a round finds little new: the live projector is close.
        loop {
            let goal = watermarks().await?;
            replay.set_total(goal.values().map(|(low, high)| high - low).sum());
            let goal: BTreeMap<Tp, i64> = goal.into_iter().map(|(tp, (_, high))| (tp, high)).collect();
            let applied = replay.until(&goal, &mut progress).await?;
            if applied < CLOSE_ENOUGH {
                break;
            }
        }
        for (r, c) in &progress.targets {
            readmodel::switch_in(&meta, *r, place.db_of(*r), c).await?;
        }
        progress.phase = Phase::Switched;
        progress.save(&meta).await?;
        replay.known = None;
        replay.println(&format!("switched {}", describe_targets(&place, &progress.targets)));
    }
    let until_switch = replay.started.elapsed();
    // Handover: whatever the live projector still wrote to the old collections.
    replay.during(options.grace, &mut progress).await?;
    let goal = watermarks().await?;
    let goal: BTreeMap<Tp, i64> = goal.into_iter().map(|(tp, (_, high))| (tp, high)).collect();
    replay.until(&goal, &mut progress).await?;
    rebuilds(&meta).delete_one(doc! { "_id": &id }).await?;
    replay.finish();
    println!(
        "done: {} events applied; active: {}; the previous collections are kept",
        progress.applied,
        describe_targets(&place, &progress.targets)
    );
    Ok(Some(Report { applied: replay.applied_here, until_switch }))
}

fn describe_targets(place: &Place, targets: &BTreeMap<ReadModel, String>) -> String {
    targets.iter().map(|(r, c)| format!("{r} -> {}.{c}", place.db_of(*r))).collect::<Vec<_>>().join(", ")
}

async fn next_generation(meta: &Database) -> anyhow::Result<i64> {
    let counters = meta.collection::<Document>(COUNTERS);
    let d = counters
        .find_one_and_update(doc! { "_id": "rebuild" }, doc! { "$inc": { "n": 1_i64 } })
        .upsert(true)
        .return_document(mongodb::options::ReturnDocument::After)
        .await?
        .context("generation counter")?;
    Ok(d.get_i64("n")?)
}

async fn dry_run(
    mongo: &Client,
    id: &str,
    options: &Options,
    marks: &BTreeMap<Tp, (i64, i64)>,
    existing: Option<&Progress>,
) -> anyhow::Result<()> {
    println!("rebuild {id} (dry run: nothing is changed)");
    let total: i64 = marks.values().map(|(low, high)| high - low).sum();
    for ((t, p), (low, high)) in marks {
        let from = existing.and_then(|e| e.next.get(&(t.clone(), *p)).copied()).unwrap_or(*low);
        println!("  {t} [{p}]: offsets {low}..{high}, {} to replay from {from}", high - from);
    }
    println!("  {total} offsets in all (transaction markers included: slightly more than events)");
    match existing {
        Some(e) => println!(
            "  would resume (phase {}, {} events applied) into {}",
            e.phase.as_str(),
            e.applied,
            describe_targets(&options.place, &e.targets)
        ),
        None => {
            let counters = options.place.meta(mongo).collection::<Document>(COUNTERS);
            let n = counters.find_one(doc! { "_id": "rebuild" }).await?.and_then(|d| d.get_i64("n").ok()).unwrap_or(0);
            let targets = options.read_models.iter().map(|r| (*r, shadow_name(*r, n + 1))).collect();
            println!("  would write {}", describe_targets(&options.place, &targets));
        }
    }
    if options.place.database.is_none() {
        for r in &options.read_models {
            println!("  {r}: the services read {} until the switch", readmodel::active_name(mongo, *r).await?);
        }
    }
    Ok(())
}

/// The replaying consumer and its bookkeeping.
struct Replay {
    consumer: StreamConsumer,
    codec: Arc<Codec>,
    projections: Projections,
    /// Set while the shadow collections are private to the rebuild: batches are folded.
    known: Option<Known>,
    /// The next batch, received, decoded and planned while the previous one was being
    /// written; its positions count only once it is written.
    prefetched: Option<Prepared>,
    meta: Database,
    max_rate: Option<u32>,
    interrupted: Arc<AtomicBool>,
    brokers: String,
    bar: ProgressBar,
    /// Plain progress lines when stderr is no terminal (logs, tests).
    plain: bool,
    /// Low watermarks: the progress bar's zero.
    low: BTreeMap<Tp, i64>,
    started: Instant,
    applied_here: u64,
    last_save: Instant,
    last_line: Instant,
}

impl Replay {
    fn new(
        settings: &Settings,
        meta: &Database,
        projections: Projections,
        known: Option<Known>,
        progress: &Progress,
        max_rate: Option<u32>,
        interrupted: Arc<AtomicBool>,
    ) -> anyhow::Result<Self> {
        let consumer = replay_consumer(&settings.kafka_brokers, &progress.next)?;
        let plain = !std::io::stderr().is_terminal();
        Ok(Self {
            consumer,
            codec: Arc::new(Codec::new(&settings.schema_registry_url)?),
            projections,
            known,
            prefetched: None,
            meta: meta.clone(),
            max_rate,
            interrupted,
            brokers: settings.kafka_brokers.clone(),
            bar: ProgressBar::hidden(),
            plain,
            low: BTreeMap::new(),
            started: Instant::now(),
            applied_here: 0,
            last_save: Instant::now(),
            last_line: Instant::now(),
        })
    }

    fn progress_bar(&mut self, low: BTreeMap<Tp, i64>, position: i64, total: i64) {
        self.low = low;
        let len = u64::try_from(total).unwrap_or_default();
        self.bar = if self.plain {
            ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::hidden())
        } else {
            let bar = ProgressBar::new(len);
            bar.set_style(
                ProgressStyle::with_template("{elapsed_precise} [{wide_bar}] {pos}/{len} events, {per_sec}, ETA {eta}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        };
        self.bar.set_position(u64::try_from(position).unwrap_or_default());
        self.bar.reset_eta();
    }

    fn set_total(&self, total: i64) {
        self.bar.set_length(u64::try_from(total).unwrap_or_default());
    }

    fn println(&self, line: &str) {
        if self.plain {
            println!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }

    fn report(&mut self, progress: &Progress, force: bool) {
        let position: i64 = progress.next.iter().map(|(tp, n)| n - self.low.get(tp).copied().unwrap_or(*n)).sum();
        self.bar.set_position(u64::try_from(position).unwrap_or_default());
        if self.plain && (force || self.last_line.elapsed() >= SAVE_EVERY) {
            self.last_line = Instant::now();
            let (pos, len) = (self.bar.position(), self.bar.length().unwrap_or(0).max(1));
            let rate = self.applied_here as f64 / self.started.elapsed().as_secs_f64().max(0.001);
            println!("progress {pos}/{len} ({}%), {rate:.0} events/s", pos * 100 / len);
        }
    }

    /// Apply everything up to `goal`; returns how many events were applied.
    async fn until(&mut self, goal: &BTreeMap<Tp, i64>, progress: &mut Progress) -> anyhow::Result<u64> {
        let before = self.applied_here;
        let mut idle_since = Instant::now();
        loop {
            let open: Vec<(Tp, i64, i64)> = goal
                .iter()
                .filter_map(|(tp, g)| {
                    let n = progress.next.get(tp).copied().unwrap_or(0);
                    (n < *g).then(|| (tp.clone(), n, *g))
                })
                .collect();
            if open.is_empty() {
                break;
            }
            let got = self.batch(progress, Duration::from_millis(100)).await?;
            if got > 0 {
                idle_since = Instant::now();
            } else if idle_since.elapsed() > Duration::from_secs(2) {
                // What is left may be transaction markers only, which the consumer never returns.
                let brokers = self.brokers.clone();
                let counts = blocking(move || offsets::records_between(&brokers, &open)).await?;
                for (tp, n) in counts {
                    if n == 0 {
                        progress.next.insert(tp.clone(), goal[&tp]);
                    }
                }
                idle_since = Instant::now();
            }
        }
        self.save(progress, true).await?;
        Ok(self.applied_here - before)
    }

    /// Keep applying whatever arrives for `period`.
    async fn during(&mut self, period: Duration, progress: &mut Progress) -> anyhow::Result<()> {
        let end = Instant::now() + period;
        while Instant::now() < end {
            self.batch(progress, Duration::from_millis(100)).await?;
        }
        self.save(progress, true).await
    }

    /// Receive up to one batch (waiting at most `wait` for its first record), apply it, note
    /// the positions. Returns the number of records.
    async fn batch(&mut self, progress: &mut Progress, wait: Duration) -> anyhow::Result<usize> {
        if self.interrupted.load(Ordering::SeqCst) {
            self.save(progress, true).await?;
            self.bar.abandon();
            anyhow::bail!("interrupted after {} events; run the same command again to resume", progress.applied);
        }
        let limit = match self.max_rate {
            Some(rate) => (rate as usize / 10).clamp(1, BATCH),
            None => BATCH,
        };
        let prepared = match self.prefetched.take() {
            Some(batch) if !batch.positions.is_empty() => batch,
            _ => {
                let received = receive(&self.consumer, &self.codec, limit, wait).await;
                prepare(&mut self.known, &self.projections, received).await?
            }
        };
        let Prepared { positions, envelopes, plan } = prepared;
        for (tp, offset) in positions {
            progress.next.insert(tp, offset + 1);
        }
        let n = envelopes.len();
        // A plan made before the switch is void after it: others write the collections now.
        let plan = plan.filter(|_| self.known.is_some());
        // While the shadow collections are private, the next batch is received, decoded and
        // planned while this one is written: the two use different machines (Kafka and this
        // process's cores, MongoDB's server).
        let prefetch = self.known.is_some() && self.max_rate.is_none();
        let (consumer, codec, known, projections) = (&self.consumer, &self.codec, &mut self.known, &self.projections);
        let (written, next) = tokio::join!(Self::write(projections, plan, envelopes), async move {
            if prefetch {
                let received = receive(consumer, codec, limit, Duration::from_millis(100)).await;
                Some(prepare(known, projections, received).await)
            } else {
                None
            }
        });
        written?;
        self.prefetched = next.transpose()?;
        // The consumer's position also steps over transaction markers; it is ours to take only
        // when nothing beyond this batch was received yet.
        if self.prefetched.as_ref().is_none_or(|p| p.positions.is_empty())
            && let Ok(positions) = self.consumer.position()
        {
            for e in positions.elements() {
                if let Offset::Offset(pos) = e.offset() {
                    let next = progress.next.entry((e.topic().to_owned(), e.partition())).or_insert(pos);
                    *next = (*next).max(pos);
                }
            }
        }
        progress.applied += i64::try_from(n).unwrap_or_default();
        self.applied_here += n as u64;
        self.report(progress, false);
        self.save(progress, false).await?;
        if let Some(rate) = self.max_rate {
            let due = Duration::from_secs_f64(self.applied_here as f64 / f64::from(rate.max(1)));
            if let Some(pause) = due.checked_sub(self.started.elapsed()) {
                tokio::time::sleep(pause).await;
            }
        }
        Ok(n)
    }

    /// Folded when planned so, else (or when the folded write cannot be exact) event by event.
    async fn write(
        projections: &Projections,
        plan: Option<fold::Plan>,
        envelopes: Vec<(String, Envelope)>,
    ) -> anyhow::Result<()> {
        if let Some(plan) = plan {
            let started = Instant::now();
            match fold::execute(&plan).await {
                Ok(fold::Outcome::Applied) => {
                    let (inserts, updates) = plan.size();
                    let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                    tracing::debug!(inserts, updates, ms, "folded batch written");
                    return Ok(());
                }
                Ok(fold::Outcome::PerEvent) => tracing::info!("folded batch not exact; applying event by event"),
                Err(e) => tracing::warn!(error = format!("{e:#}"), "folded write failed; applying event by event"),
            }
        }
        Self::apply(projections, envelopes).await
    }

    async fn apply(projections: &Projections, envelopes: Vec<(String, Envelope)>) -> anyhow::Result<()> {
        let mut groups: BTreeMap<String, Vec<Envelope>> = BTreeMap::new();
        for (key, e) in envelopes {
            groups.entry(key).or_default().push(e);
        }
        futures::stream::iter(groups.into_values())
            .map(|group| async move {
                for e in group {
                    apply_one(projections, &e).await?;
                }
                anyhow::Ok(())
            })
            .buffer_unordered(CONCURRENCY)
            .try_collect::<()>()
            .await
    }

    async fn save(&mut self, progress: &Progress, force: bool) -> anyhow::Result<()> {
        if force || self.last_save.elapsed() >= SAVE_EVERY {
            progress.save(&self.meta).await?;
            self.last_save = Instant::now();
            if force {
                self.report(progress, true);
            }
        }
        Ok(())
    }
}

/// A received record: its partition and offset, and its key and envelope (`None`: not
/// decodable).
type Received = (Tp, i64, Option<(String, Envelope)>);

/// A received batch: the records' positions, their envelopes and, while the shadow
/// collections are private, the batch's folded writes.
struct Prepared {
    positions: Vec<(Tp, i64)>,
    envelopes: Vec<(String, Envelope)>,
    plan: Option<fold::Plan>,
}

/// Split a received batch and, while `known` is set (the shadows are private), plan its
/// folded writes on a blocking thread: CPU work that overlaps the previous batch's write.
async fn prepare(
    known: &mut Option<Known>,
    projections: &Projections,
    received: Vec<Received>,
) -> anyhow::Result<Prepared> {
    let mut positions = Vec::with_capacity(received.len());
    let mut envelopes = Vec::with_capacity(received.len());
    for (tp, offset, envelope) in received {
        positions.push((tp, offset));
        envelopes.extend(envelope);
    }
    let collections = match projections.fixed() {
        Some(c) if known.is_some() => c.clone(),
        _ => return Ok(Prepared { positions, envelopes, plan: None }),
    };
    let mut k = known.take().unwrap_or_default();
    let (k, envelopes, plan) = tokio::task::spawn_blocking(move || {
        let mut changes = Vec::new();
        let mut foldable = true;
        for (_, e) in &envelopes {
            match crate::changes(e) {
                Ok(c) => changes.extend(c),
                // Skipped by the per-event path too (see `apply_one`).
                Err(HandlerError::Permanent(_)) => {}
                Err(HandlerError::Transient(_)) => foldable = false,
            }
        }
        // Planned even when it will not be used: `known` follows every batch.
        let plan = fold::plan(&collections, &mut k, changes).filter(|_| foldable);
        if plan.is_none() && !envelopes.is_empty() {
            tracing::info!("batch not foldable as it is; it will be applied event by event");
        }
        (k, envelopes, plan)
    })
    .await?;
    *known = Some(k);
    Ok(Prepared { positions, envelopes, plan })
}

async fn apply_one(projections: &Projections, e: &Envelope) -> anyhow::Result<()> {
    let mut backoff = Duration::from_millis(100);
    for attempt in 1.. {
        match projections.handle(e).await {
            Ok(()) => return Ok(()),
            Err(HandlerError::Permanent(reason)) => {
                tracing::warn!(topic = e.topic, offset = e.offset, reason, "skipping record the projection refuses");
                return Ok(());
            }
            Err(HandlerError::Transient(err)) if attempt >= 8 => {
                return Err(err.context(format!("applying {}/{}/{}", e.topic, e.partition, e.offset)));
            }
            Err(HandlerError::Transient(err)) => {
                tracing::warn!(error = format!("{err:#}"), attempt, "retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
    unreachable!("the loop returns")
}

/// The rebuild's Kafka consumer, assigned to start at `next` of each partition: no group is
/// joined, nothing is committed. Large fetches: a rebuild reads the topics from the start.
pub fn replay_consumer(brokers: &str, next: &BTreeMap<Tp, i64>) -> anyhow::Result<StreamConsumer> {
    let consumer: StreamConsumer = messaging::connect::client_config(brokers)?
        .set("group.id", "projectors.rebuild")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("fetch.min.bytes", "65536")
        .set("fetch.wait.max.ms", "50")
        .set("max.partition.fetch.bytes", "8388608")
        .set("fetch.max.bytes", "67108864")
        .set("queued.min.messages", "200000")
        .create()
        .context("creating Kafka consumer")?;
    let mut assignment = TopicPartitionList::new();
    for ((t, p), n) in next {
        assignment.add_partition_offset(t, *p, Offset::Offset(*n))?;
    }
    consumer.assign(&assignment)?;
    Ok(consumer)
}

/// Decode a batch of records into (Kafka key, envelope), in order, on all cores. Records that
/// cannot be decoded are skipped (the live consumer parks them on the DLQ); an unreachable
/// schema registry is waited for.
pub async fn decode_all(codec: &Arc<Codec>, records: Vec<OwnedMessage>) -> Vec<(String, Envelope)> {
    decode_positioned(codec, records).await.into_iter().filter_map(|(_, _, e)| e).collect()
}

/// [`decode_all`], keeping every record's partition and offset (`None`: not decodable).
async fn decode_positioned(codec: &Arc<Codec>, records: Vec<OwnedMessage>) -> Vec<Received> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).max(1);
    let per = records.len().div_ceil(workers).max(256);
    let mut chunks = Vec::new();
    let mut records = records.into_iter().peekable();
    while records.peek().is_some() {
        let chunk: Vec<OwnedMessage> = records.by_ref().take(per).collect();
        let codec = codec.clone();
        chunks.push(tokio::spawn(async move {
            let mut out = Vec::with_capacity(chunk.len());
            for m in &chunk {
                let tp = (m.topic().to_owned(), m.partition());
                out.push((tp, m.offset(), decode_one(&codec, m).await));
            }
            out
        }));
    }
    let mut out = Vec::new();
    for c in chunks {
        match c.await {
            Ok(part) => out.extend(part),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    out
}

/// Up to `limit` records, waiting at most `wait` for the first, decoded.
async fn receive(consumer: &StreamConsumer, codec: &Arc<Codec>, limit: usize, wait: Duration) -> Vec<Received> {
    let mut records: Vec<OwnedMessage> = Vec::new();
    let mut wait = wait;
    while records.len() < limit {
        let m = match tokio::time::timeout(wait, consumer.recv()).await {
            Err(_) => break,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "kafka receive error");
                break;
            }
            Ok(Ok(m)) => m,
        };
        wait = Duration::from_millis(20);
        records.push(m.detach());
    }
    decode_positioned(codec, records).await
}

async fn decode_one(codec: &Codec, m: &OwnedMessage) -> Option<(String, Envelope)> {
    let key = m.key().map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_default();
    let payload = m.payload().unwrap_or_default();
    loop {
        match codec.decode(payload).await {
            Ok(message) => return Some((key, Envelope::new(m, message))),
            Err(e @ DecodeError::Unavailable(_)) => {
                tracing::warn!(error = %e, "schema registry unavailable; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            // Parked on the DLQ by the live consumer too: nothing to project.
            Err(e) => {
                tracing::warn!(topic = m.topic(), offset = m.offset(), error = %e, "skipping undecodable record");
                return None;
            }
        }
    }
}
