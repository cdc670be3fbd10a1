//! Before reading, wait (bounded) until the stack is quiet: every outbox empty and every
//! service's consumer group caught up with its topics. Read while work is in flight, the
//! stores disagree for a moment, and the checks would call that a violation. Only *when* to
//! read is decided here: the verdict comes from the stores alone.

use crate::load::Pools;
use projectors::offsets::{self, Offsets, Tp};
use schemas::Topic;
use std::time::{Duration, Instant};

/// The services' consumer groups and what each reads, as each service wires its consumers
/// (`spawn_consumer` in command-services/*, saga-orchestrator, notification); the live
/// projector's groups are added from [`projectors::LIVE_CONSUMERS`] by [`groups`].
const SERVICE_GROUPS: [(&str, &[Topic]); 5] = [
    ("product", &[Topic::ProductCommands]),
    ("payment", &[Topic::PaymentCommands, Topic::CustomerEvents]),
    ("order", &[Topic::OrderCommands]),
    ("saga-orchestrator", &[Topic::OrderEvents, Topic::ProductEvents, Topic::PaymentEvents]),
    (notification_service::GROUP, &[Topic::CustomerEvents, Topic::OrderEvents, Topic::PaymentEvents]),
];

/// Every consumer group of the stack and what it reads.
pub fn groups() -> impl Iterator<Item = (&'static str, &'static [Topic])> {
    SERVICE_GROUPS.into_iter().chain(projectors::LIVE_CONSUMERS.iter().map(|c| (c.group, c.topics)))
}

/// Wait up to `limit` for quiet; what still moved when it ran out (empty: quiet).
pub async fn wait(pools: &Pools, brokers: &str, limit: Duration) -> Vec<String> {
    let start = Instant::now();
    loop {
        let busy = busy(pools, brokers).await;
        if busy.is_empty() || start.elapsed() >= limit {
            return busy;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What is still moving: outbox rows waiting, consumer groups behind.
async fn busy(pools: &Pools, brokers: &str) -> Vec<String> {
    let mut busy = Vec::new();
    for (database, pool) in pools.all() {
        match crate::load::stores::outbox_backlog(pool).await {
            Ok(0) => {}
            Ok(n) => busy.push(format!("{database}: {n} outbox rows waiting")),
            Err(e) => busy.push(format!("{database}: outbox not readable: {e}")),
        }
    }
    let brokers = brokers.to_owned();
    let lag = tokio::task::spawn_blocking(move || lagging(&brokers)).await;
    match lag {
        Ok(Ok(lag)) => busy.extend(lag),
        Ok(Err(e)) => busy.push(format!("consumer groups not readable: {e:#}")),
        Err(e) => busy.push(format!("consumer groups not readable: {e}")),
    }
    busy
}

/// Groups with records left to consume (transaction markers, which take offsets but are never
/// delivered, do not count). Blocking.
fn lagging(brokers: &str) -> anyhow::Result<Vec<String>> {
    let kafka = Offsets::connect(brokers)?;
    let mut out = Vec::new();
    for (group, topics) in groups() {
        let names: Vec<&str> = topics.iter().map(|t| t.name()).collect();
        let tps = kafka.partitions(&names)?;
        let marks = kafka.watermarks(&tps)?;
        let committed = offsets::committed(brokers, group, &tps)?;
        let open: Vec<(Tp, i64, i64)> = marks
            .iter()
            .filter_map(|(tp, (low, high))| {
                let at = committed.get(tp).copied().unwrap_or(*low).max(*low);
                (at < *high).then(|| (tp.clone(), at, *high))
            })
            .collect();
        for ((topic, partition), n) in offsets::records_between(brokers, &open)? {
            if n > 0 {
                out.push(format!("group {group}: {n} records of {topic}/{partition} not consumed yet"));
            }
        }
    }
    Ok(out)
}
