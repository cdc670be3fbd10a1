//! Where each projection stands: position, lag in events, time behind — all from
//! [`StatusSource::collect`], which `projectors status`, `GET /status` (and, later, the
//! metrics) share.

use crate::checkpoint::Checkpoints;
use crate::offsets::{self, Tp};
use crate::rebuild;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use readstore::readmodel::{self, ReadModel};
use runtime::http::ApiError;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Serialize)]
pub struct Status {
    pub projections: Vec<ProjectionStatus>,
    /// Rebuilds started and not finished (running, or interrupted and resumable).
    pub rebuilds: Vec<rebuild::Summary>,
}

#[derive(Debug, Serialize)]
pub struct ProjectionStatus {
    pub name: &'static str,
    /// The collection the services read.
    pub active_collection: String,
    /// Sum over the projection's partitions of the next offset to apply.
    pub position: i64,
    /// Sum of the high watermarks.
    pub high_watermark: i64,
    /// Committed events not applied yet (transaction markers excluded).
    pub lag: i64,
    /// Now − occurrence time of the last applied event; 0 when nothing is waiting.
    pub behind_ms: i64,
    pub partitions: Vec<PartitionStatus>,
}

#[derive(Debug, Serialize)]
pub struct PartitionStatus {
    pub topic: String,
    pub partition: i32,
    pub position: i64,
    pub high_watermark: i64,
    pub lag: i64,
}

#[derive(Clone)]
pub struct StatusSource {
    pub mongo: mongodb::Client,
    pub brokers: String,
}

impl StatusSource {
    pub async fn collect(&self) -> anyhow::Result<Status> {
        let checkpoints = Checkpoints::new(&self.mongo).load().await?;
        let topics: Vec<&str> = crate::EVENT_TOPICS.iter().map(|t| t.name()).collect();
        let brokers = self.brokers.clone();
        let cps = checkpoints.clone();
        let (marks, positions, lags) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let kafka = offsets::Offsets::connect(&brokers)?;
            let tps = kafka.partitions(&topics)?;
            let marks = kafka.watermarks(&tps)?;
            // Partitions the projector has applied nothing of since its checkpoints began
            // stand where the consumer group committed.
            let committed = offsets::committed(&brokers, crate::CONSUMER_GROUP, &tps)?;
            let positions: BTreeMap<Tp, i64> = marks
                .iter()
                .map(|(tp, (low, _))| {
                    let next = cps.get(tp).map(|c| c.next).max(committed.get(tp).copied()).unwrap_or(*low);
                    (tp.clone(), next.max(*low))
                })
                .collect();
            let ranges: Vec<(Tp, i64, i64)> =
                marks.iter().map(|(tp, (_, high))| (tp.clone(), positions[tp], *high)).collect();
            let lags = offsets::records_between(&brokers, &ranges)?;
            Ok((marks, positions, lags))
        })
        .await??;
        let now = chrono::Utc::now().timestamp_millis();
        let mut projections = Vec::new();
        for read_model in ReadModel::ALL {
            let names: Vec<&str> = crate::topics_of(read_model).iter().map(|t| t.name()).collect();
            let mut p = ProjectionStatus {
                name: read_model.name(),
                active_collection: readmodel::active_name(&self.mongo, read_model).await?,
                position: 0,
                high_watermark: 0,
                lag: 0,
                behind_ms: 0,
                partitions: Vec::new(),
            };
            let mut last_event = None::<i64>;
            for (tp, (_, high)) in marks.iter().filter(|(tp, _)| names.contains(&tp.0.as_str())) {
                let cp = checkpoints.get(tp);
                let position = positions.get(tp).copied().unwrap_or_default();
                let lag = lags.get(tp).copied().unwrap_or_default();
                if let Some(c) = cp {
                    last_event = last_event.max(Some(c.occurred_at));
                }
                p.position += position;
                p.high_watermark += high;
                p.lag += lag;
                p.partitions.push(PartitionStatus {
                    topic: tp.0.clone(),
                    partition: tp.1,
                    position,
                    high_watermark: *high,
                    lag,
                });
            }
            if p.lag > 0 {
                p.behind_ms = last_event.map_or(0, |at| (now - at).max(0));
            }
            projections.push(p);
        }
        Ok(Status { projections, rebuilds: rebuild::summaries(&self.mongo).await? })
    }
}

/// `GET /status`.
pub fn router(source: StatusSource) -> axum::Router {
    axum::Router::new().route("/status", get(status)).with_state(source)
}

async fn status(State(source): State<StatusSource>) -> Result<Response, ApiError> {
    let s = source.collect().await.map_err(|e| ApiError::internal(format!("{e:#}")))?;
    Ok(axum::Json(s).into_response())
}

/// The status as a table, for the CLI.
pub fn render(s: &Status) -> String {
    use std::fmt::Write as _;
    let mut out = format!(
        "{:<10} {:<26} {:>10} {:>10} {:>8} {:>12}\n",
        "PROJECTION", "ACTIVE COLLECTION", "POSITION", "HIGH WM", "LAG", "BEHIND (ms)"
    );
    for p in &s.projections {
        let _ = writeln!(
            out,
            "{:<10} {:<26} {:>10} {:>10} {:>8} {:>12}",
            p.name, p.active_collection, p.position, p.high_watermark, p.lag, p.behind_ms
        );
    }
    let by_id: BTreeMap<_, _> = s.rebuilds.iter().map(|r| (r.id.clone(), r)).collect();
    for (id, r) in by_id {
        let _ = writeln!(
            out,
            "rebuild {id}: {} into {}, {} events applied",
            r.phase,
            r.targets.iter().map(|(m, c)| format!("{m}->{c}")).collect::<Vec<_>>().join(", "),
            r.applied
        );
    }
    out
}
