//! Where each projection stands: position, lag in events, time behind — all from
//! [`StatusSource::collect`], which `projectors status`, `GET /status` (and, later, the
//! metrics) share.

use crate::checkpoint::Checkpoints;
use crate::offsets::{self, Tp};
use crate::rebuild;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use contract::{FinishedRebuild, PartitionStatus, ProjectionStatus, ProjectionsStatus as Status, StartRebuild};
use readstore::readmodel::{self, ReadModel};
use runtime::http::ApiError;
use runtime::http::Json;
use runtime::identity::Caller;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

#[derive(Clone)]
pub struct StatusSource {
    pub mongo: mongodb::Client,
    pub brokers: String,
    /// Rebuilds this process ran (the service's, through `POST /rebuilds`), newest first.
    pub finished: Arc<Mutex<Vec<FinishedRebuild>>>,
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
            let mut committed = BTreeMap::new();
            for live in crate::LIVE_CONSUMERS {
                let names: Vec<&str> = live.topics.iter().map(|t| t.name()).collect();
                let own: Vec<Tp> = tps.iter().filter(|tp| names.contains(&tp.0.as_str())).cloned().collect();
                committed.extend(offsets::committed(&brokers, live.group, &own)?);
            }
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
                name: read_model.name().to_owned(),
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
        let mut rebuilds = Vec::new();
        for (mut summary, next) in rebuild::summaries(&self.mongo).await? {
            for (tp, next) in &next {
                if let Some((low, high)) = marks.get(tp) {
                    summary.position += (next - low).max(0);
                    summary.total += high - low;
                }
            }
            rebuilds.push(summary);
        }
        let finished = self.finished.lock().map(|f| f.clone()).unwrap_or_default();
        Ok(Status { projections, rebuilds, finished })
    }
}

/// `GET /status`, and `POST /rebuilds` (admin): start a rebuild in this process, one at a time.
pub fn router(source: StatusSource, settings: runtime::Settings) -> axum::Router {
    let desk = Desk { source, settings: Arc::new(settings), running: Arc::default() };
    axum::Router::new()
        .route("/status", get(status))
        .route("/status/live", get(live))
        .route("/rebuilds", post(start_rebuild))
        .with_state(desk)
}

#[derive(Clone)]
struct Desk {
    source: StatusSource,
    settings: Arc<runtime::Settings>,
    /// The rebuild this process runs, if any.
    running: Arc<Mutex<Option<String>>>,
}

/// Rebuilds kept in [`StatusSource::finished`].
const KEEP_FINISHED: usize = 20;

async fn status(State(desk): State<Desk>) -> Result<Response, ApiError> {
    let s = desk.source.collect().await.map_err(|e| ApiError::internal(format!("{e:#}")))?;
    Ok(axum::Json(s).into_response())
}

/// How often `/status/live` sends the status when no rebuild moves: lag changes by itself.
const LIVE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// `GET /status/live` (admin): the status as server-sent events (`event: status`, the JSON of
/// `GET /status`): at once, whenever a rebuild of this process saved progress, switched or
/// ended, and every few seconds otherwise.
async fn live(State(desk): State<Desk>, caller: Caller) -> Result<Response, ApiError> {
    caller.require_privileged()?;
    let events =
        futures::stream::unfold((desk, rebuild::PROGRESS.subscribe(), true), |(desk, mut rx, first)| async move {
            if !first {
                // Either something moved or it is time anyway; a closed channel cannot happen (static).
                let _ = tokio::time::timeout(LIVE_EVERY, rx.changed()).await;
            }
            let event = match desk.source.collect().await {
                Ok(s) => Event::default().event("status").json_data(&s).unwrap_or_default(),
                Err(e) => Event::default().event("error").data(format!("{e:#}")),
            };
            Some((Ok::<_, std::convert::Infallible>(event), (desk, rx, false)))
        });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(std::time::Duration::from_secs(15))).into_response())
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Which read models a request names, sorted, each once.
fn chosen(body: &StartRebuild) -> Result<Vec<ReadModel>, ApiError> {
    let mut models = if body.all {
        ReadModel::ALL.to_vec()
    } else {
        body.read_models
            .iter()
            .map(|n| {
                ReadModel::parse(n).ok_or_else(|| {
                    let names: Vec<_> = ReadModel::ALL.iter().map(|r| r.name()).collect();
                    ApiError::unprocessable(format!("unknown read model {n:?}; one of {}", names.join(", ")))
                })
            })
            .collect::<Result<Vec<_>, _>>()?
    };
    if models.is_empty() {
        return Err(ApiError::unprocessable("name at least one read model, or all"));
    }
    models.sort();
    models.dedup();
    Ok(models)
}

/// `POST /rebuilds`: 202 with the rebuild's id; its progress shows in `GET /status`.
async fn start_rebuild(
    State(desk): State<Desk>,
    caller: Caller,
    Json(body): Json<StartRebuild>,
) -> Result<Response, ApiError> {
    caller.require_privileged()?;
    let models = chosen(&body)?;
    let id = rebuild::rebuild_id(&models);
    {
        let mut running = desk.running.lock().map_err(|_| ApiError::internal("rebuild state poisoned"))?;
        if let Some(other) = running.as_ref() {
            return Err(ApiError::conflict(format!("rebuild {other} is running; one at a time")));
        }
        *running = Some(id.clone());
    }
    let started_by = caller.who();
    tracing::warn!(id, started_by, "rebuild started over HTTP");
    let started_at = now();
    // The rebuild's future is not `Send` (its Kafka stream): it runs on a blocking thread of its
    // own, driven by this runtime's handle.
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking({
        let (desk, id) = (desk.clone(), id.clone());
        move || {
            let result = handle.block_on(rebuild::run(&desk.settings, rebuild::Options::new(models)));
            let (applied, error) = match result {
                Ok(report) => (report.map_or(0, |r| r.applied), None),
                Err(e) => {
                    tracing::error!(id, error = format!("{e:#}"), "rebuild failed");
                    (0, Some(format!("{e:#}")))
                }
            };
            let done = FinishedRebuild { id, started_by, started_at, finished_at: now(), applied, error };
            if let Ok(mut finished) = desk.source.finished.lock() {
                finished.insert(0, done);
                finished.truncate(KEEP_FINISHED);
            }
            if let Ok(mut running) = desk.running.lock() {
                *running = None;
            }
            rebuild::moved();
        }
    });
    Ok((StatusCode::ACCEPTED, axum::Json(serde_json::json!({ "id": id }))).into_response())
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
