//! The timed part: an open-loop scheduler and one task per order.
//!
//! Order `i` is due at `t0 + i / rate`. The scheduler sleeps until each due time and spawns
//! the order's task there, never waiting for earlier orders to be answered; if it falls behind
//! it spawns at once (its lateness is reported). Every latency is measured from the due time,
//! not from when the request left: when the system (or the client) queues, the wait counts,
//! which is what a user arriving at that instant would see.
//!
//! A task places its order, cancels it if it is a cancel order, then follows it to a final
//! status: long-polls (`?wait=`, the gateway answers when the order settles) or polls with
//! backoff, and hands its [`OrderRecord`] to the collector. Everything a task does
//! stops at the drain deadline; what it had seen by then is kept.

use crate::api::{Api, OrderStatus, OrderView};
use crate::mix::Kind;
use crate::plan::PlannedOrder;
use crate::setup::Setup;
use crate::stats::Latencies;
use reqwest::StatusCode;
use serde::Serialize;
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct LoadParams {
    pub rate: f64,
    pub drain_timeout: Duration,
    pub max_in_flight: usize,
    pub poll_first: Duration,
    pub poll_max: Duration,
    /// Long-poll seconds per GET; 0 polls with backoff.
    pub wait_s: u64,
}

/// How the order's `POST` went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Post {
    /// Due while `--max-in-flight` orders were open: never sent.
    ClientOverflow,
    /// Sent, no answer by the drain deadline.
    Unanswered,
    /// 202.
    Accepted,
    /// 429 or 503: the system shed the load. Never retried.
    Refused,
    /// Any other status.
    Failed,
    /// No HTTP answer: connection refused or reset, timeout.
    TransportError,
}

/// Everything the bench learnt about one order. Times in µs are from the order's due time;
/// times in s are from the start of the run.
#[derive(Debug, Clone, Serialize)]
pub struct OrderRecord {
    pub index: u64,
    pub kind: Kind,
    pub customer: usize,
    pub due_s: f64,
    pub expected_total_cents: i64,
    pub post: Post,
    pub post_status: Option<u16>,
    pub post_202_us: Option<u64>,
    pub order_id: Option<Uuid>,
    /// Status of the cancel request (cancel orders).
    pub cancel_status: Option<u16>,
    /// Transport error of the POST or the cancel, if any.
    pub error: Option<String>,
    pub final_status: Option<OrderStatus>,
    /// The last status seen, final or not.
    pub last_status: Option<OrderStatus>,
    /// Due time → the GET that first showed the final status.
    pub post_final_us: Option<u64>,
    pub final_seen_s: Option<f64>,
    pub reason: Option<String>,
    /// The order service's total.
    pub total_cents: Option<i64>,
    /// The statuses of the order's own history, oldest first.
    pub history: Vec<OrderStatus>,
    /// The order's own history: PENDING at → final status at (server clocks).
    pub saga_own_us: Option<u64>,
    pub polls: u32,
    /// Polls answered 429/503 (the gateway's per-user limit, or overload).
    pub polls_throttled: u32,
    /// Polls that failed otherwise (transport, 5xx); 404s before the read model has the order are not counted.
    pub polls_failed: u32,
}

impl OrderRecord {
    fn new(plan: &PlannedOrder, due_s: f64) -> Self {
        OrderRecord {
            index: plan.index,
            kind: plan.kind,
            customer: plan.customer,
            due_s,
            expected_total_cents: plan.total_cents,
            post: Post::Unanswered,
            post_status: None,
            post_202_us: None,
            order_id: None,
            cancel_status: None,
            error: None,
            final_status: None,
            last_status: None,
            post_final_us: None,
            final_seen_s: None,
            reason: None,
            total_cents: None,
            history: Vec::new(),
            saga_own_us: None,
            polls: 0,
            polls_throttled: 0,
            polls_failed: 0,
        }
    }

    pub fn accepted(&self) -> bool {
        self.post == Post::Accepted
    }
}

/// Counters the progress line reads while the run goes on; updated as things happen.
#[derive(Default)]
pub struct Live {
    pub offered: AtomicU64,
    pub accepted: AtomicU64,
    pub refused: AtomicU64,
    pub errors: AtomicU64,
    pub finals: AtomicU64,
    pub overflow: AtomicU64,
    /// Order tasks not finished yet.
    pub open: AtomicU64,
    pub post_final: Mutex<Latencies>,
}

impl Live {
    /// `[ 12s] offered … p99 final … ms`: cheap enough for once a second.
    pub fn progress_line(&self, elapsed_s: f64) -> String {
        let p99 = self.post_final.lock().unwrap_or_else(|e| e.into_inner()).quantile_ms(0.99);
        format!(
            "[{elapsed_s:>5.0}s] offered {:>7}  accepted {:>7}  refused {:>5}  errors {:>5}  final {:>7}  in flight {:>6}  p99 final {}",
            self.offered.load(Relaxed),
            self.accepted.load(Relaxed),
            self.refused.load(Relaxed),
            self.errors.load(Relaxed),
            self.finals.load(Relaxed),
            self.open.load(Relaxed),
            p99.map_or("-".to_owned(), |v| format!("{v:.1} ms")),
        )
    }
}

pub struct LoadResult {
    /// By order index.
    pub records: Vec<OrderRecord>,
    /// Due time → the instant the scheduler spawned the order: the client's own lateness.
    pub scheduler_lag: Latencies,
    /// From t0 until the last task ended.
    pub ended_s: f64,
}

struct Ctx {
    api: Api,
    setup: Arc<Setup>,
    live: Arc<Live>,
    params: LoadParams,
    t0: Instant,
    deadline: Instant,
}

/// Runs the plans from `t0` (which may lie a little ahead, so the first order is not late);
/// returns once every order has ended or the drain deadline (`t0 + window + drain_timeout`) passed.
pub async fn run(
    api: Api,
    setup: Arc<Setup>,
    plans: Vec<PlannedOrder>,
    params: LoadParams,
    live: Arc<Live>,
    t0: Instant,
    window: Duration,
) -> LoadResult {
    let deadline = t0 + window + params.drain_timeout;
    let ctx = Arc::new(Ctx { api, setup, live: live.clone(), params: params.clone(), t0, deadline });
    let (tx, mut rx) = mpsc::unbounded_channel::<OrderRecord>();
    let count = plans.len();
    let collector = tokio::spawn(async move {
        let mut records = Vec::with_capacity(count);
        while let Some(r) = rx.recv().await {
            records.push(r);
        }
        records
    });

    let permits = Arc::new(Semaphore::new(params.max_in_flight));
    let (rate, runtime) = (params.rate, tokio::runtime::Handle::current());
    // The dispatcher sleeps to each due time on a thread of its own: the runtime's timer ticks in
    // whole milliseconds and wakes a sleeper up to two late (1.5 ms at the median), lateness of the
    // client's own that would count in every order's latency.
    let dispatcher = tokio::task::spawn_blocking(move || {
        let mut scheduler_lag = Latencies::new();
        for plan in plans {
            let offset = crate::plan::due_offset(plan.index, rate);
            let due = t0 + offset;
            let early = due.into_std().saturating_duration_since(std::time::Instant::now());
            if !early.is_zero() {
                std::thread::sleep(early);
            }
            scheduler_lag.record(micros(due.elapsed()));
            live.offered.fetch_add(1, Relaxed);
            let mut rec = OrderRecord::new(&plan, offset.as_secs_f64());
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                rec.post = Post::ClientOverflow;
                live.overflow.fetch_add(1, Relaxed);
                let _ = tx.send(rec);
                continue;
            };
            live.open.fetch_add(1, Relaxed);
            let (ctx, tx) = (ctx.clone(), tx.clone());
            runtime.spawn(async move {
                let _ = tokio::time::timeout_at(ctx.deadline, lifecycle(&ctx, &plan, due, &mut rec)).await;
                ctx.live.open.fetch_sub(1, Relaxed);
                let _ = tx.send(rec);
                drop(permit);
            });
        }
        scheduler_lag
    });
    let scheduler_lag = dispatcher.await.unwrap_or_else(|_| Latencies::new());
    let mut records = collector.await.unwrap_or_default();
    records.sort_by_key(|r| r.index);
    LoadResult { records, scheduler_lag, ended_s: t0.elapsed().as_secs_f64() }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// A transport error with its causes: reqwest's own message alone rarely says what failed.
fn describe(e: &reqwest::Error) -> String {
    let class = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "transport"
    };
    let mut msg = format!("{class}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

async fn lifecycle(ctx: &Ctx, plan: &PlannedOrder, due: Instant, rec: &mut OrderRecord) {
    let customer = &ctx.setup.customers[plan.customer];
    let items: Vec<_> = plan
        .lines
        .iter()
        .map(|l| json!({ "product_id": ctx.setup.products[l.product].id, "quantity": l.quantity }))
        .collect();
    let body = json!({ "customer_id": customer.id, "items": items });
    let answer = match ctx.api.place_order(customer.owner, &body).await {
        Ok(a) => a,
        Err(e) => {
            rec.post = Post::TransportError;
            rec.error = Some(describe(&e));
            ctx.live.errors.fetch_add(1, Relaxed);
            return;
        }
    };
    rec.post_status = Some(answer.status.as_u16());
    let order_id = match (answer.status, answer.order_id) {
        (StatusCode::ACCEPTED, Some(id)) => id,
        (StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE, _) => {
            rec.post = Post::Refused;
            ctx.live.refused.fetch_add(1, Relaxed);
            return;
        }
        (status, _) => {
            rec.post = Post::Failed;
            if status == StatusCode::ACCEPTED {
                rec.error = Some("202 without an order id".into());
            }
            ctx.live.errors.fetch_add(1, Relaxed);
            return;
        }
    };
    rec.post = Post::Accepted;
    rec.order_id = Some(order_id);
    rec.post_202_us = Some(micros(due.elapsed()));
    ctx.live.accepted.fetch_add(1, Relaxed);

    if plan.kind == Kind::Cancel {
        match ctx.api.cancel(customer.owner, order_id).await {
            Ok(status) => rec.cancel_status = Some(status.as_u16()),
            Err(e) => rec.error = Some(format!("cancel: {}", describe(&e))),
        }
    }
    let cancel_accepted = rec.cancel_status == Some(StatusCode::ACCEPTED.as_u16());

    let mut pause = ctx.params.poll_first;
    let mut token = answer.consistency_token;
    let long_poll = ctx.params.wait_s > 0;
    // A long-poll asks at once; a GET that came back without the outcome at once (404, shed)
    // pauses before the next, as polling does.
    let mut pause_first = !long_poll;
    loop {
        if pause_first {
            tokio::time::sleep(pause).await;
            pause = next_pause(pause, ctx.params.poll_max);
        }
        rec.polls += 1;
        let asked = Instant::now();
        // The token makes the first GET wait (up to 5 s) for the read model to hold the
        // order, instead of answering 404 right after the 202.
        let answer = ctx.api.order(customer.owner, order_id, token.take().as_deref(), ctx.params.wait_s).await;
        pause_first = !long_poll || asked.elapsed() < ctx.params.poll_first;
        let answer = match answer {
            Ok(a) => a,
            Err(_) => {
                rec.polls_failed += 1;
                continue;
            }
        };
        match answer.status {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => continue,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                rec.polls_throttled += 1;
                if let Some(wait) = answer.retry_after {
                    pause = pause.max(wait.min(ctx.params.poll_max * 5));
                }
                continue;
            }
            _ => {
                rec.polls_failed += 1;
                continue;
            }
        }
        let Some(order) = answer.order else {
            rec.polls_failed += 1;
            continue;
        };
        rec.last_status = Some(order.status);
        if is_done(order.status, cancel_accepted) {
            let latency = micros(due.elapsed());
            rec.post_final_us = Some(latency);
            rec.final_seen_s = Some(ctx.t0.elapsed().as_secs_f64());
            record_final(rec, &order);
            ctx.live.finals.fetch_add(1, Relaxed);
            ctx.live.post_final.lock().unwrap_or_else(|e| e.into_inner()).record(latency);
            return;
        }
    }
}

/// ×1.5 per poll, up to `max`.
pub fn next_pause(pause: Duration, max: Duration) -> Duration {
    pause.mul_f64(1.5).min(max)
}

/// Whether polling may stop at `status`. An accepted cancel turns a CONFIRMED order into a
/// CANCELLED one later (a second saga returns stock and refunds), so CONFIRMED is not final
/// for it; REJECTED is (a rejected order cannot be cancelled any more).
pub fn is_done(status: OrderStatus, cancel_accepted: bool) -> bool {
    match status {
        OrderStatus::Pending => false,
        OrderStatus::Confirmed => !cancel_accepted,
        OrderStatus::Rejected | OrderStatus::Cancelled => true,
    }
}

fn record_final(rec: &mut OrderRecord, order: &OrderView) {
    rec.final_status = Some(order.status);
    rec.reason = order.reason.clone();
    rec.total_cents = Some(order.total_cents);
    rec.history = order.history.iter().map(|h| h.status).collect();
    rec.saga_own_us = saga_own_us(order);
}

/// The order's own time from PENDING to its final status, from the server's history.
pub fn saga_own_us(order: &OrderView) -> Option<u64> {
    let at = |status: OrderStatus| {
        order.history.iter().find(|h| h.status == status).and_then(|h| chrono::DateTime::parse_from_rfc3339(&h.at).ok())
    };
    let (start, end) = (at(OrderStatus::Pending)?, at(order.status)?);
    u64::try_from((end - start).num_microseconds()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::StatusChange;

    #[test]
    fn polls_back_off_by_half_up_to_the_cap() {
        let max = Duration::from_secs(1);
        let mut p = Duration::from_millis(50);
        let mut seen = vec![p];
        for _ in 0..9 {
            p = next_pause(p, max);
            seen.push(p);
        }
        assert_eq!(seen[1], Duration::from_millis(75));
        assert_eq!(seen[2], Duration::from_micros(112_500));
        assert_eq!(*seen.last().unwrap(), max);
    }

    #[test]
    fn confirmed_is_final_unless_a_cancel_was_accepted() {
        assert!(!is_done(OrderStatus::Pending, false));
        assert!(is_done(OrderStatus::Confirmed, false));
        assert!(!is_done(OrderStatus::Confirmed, true), "the cancellation saga is still to come");
        assert!(is_done(OrderStatus::Cancelled, true));
        assert!(is_done(OrderStatus::Rejected, true));
        assert!(is_done(OrderStatus::Rejected, false));
    }

    fn order(status: OrderStatus, history: &[(OrderStatus, &str)]) -> OrderView {
        OrderView {
            status,
            reason: None,
            total_cents: 0,
            history: history.iter().map(|(s, at)| StatusChange { status: *s, at: (*at).to_owned() }).collect(),
        }
    }

    #[test]
    fn saga_own_time_runs_from_pending_to_the_final_status() {
        let o = order(
            OrderStatus::Confirmed,
            &[(OrderStatus::Pending, "2025-01-01T10:00:00.100Z"), (OrderStatus::Confirmed, "2025-01-01T10:00:00.350Z")],
        );
        assert_eq!(saga_own_us(&o), Some(250_000));
        let cancelled = order(
            OrderStatus::Cancelled,
            &[
                (OrderStatus::Pending, "2025-01-01T10:00:00+00:00"),
                (OrderStatus::Confirmed, "2025-01-01T10:00:01+00:00"),
                (OrderStatus::Cancelled, "2025-01-01T10:00:03.5+00:00"),
            ],
        );
        assert_eq!(saga_own_us(&cancelled), Some(3_500_000));
    }

    #[test]
    fn saga_own_time_is_unknown_without_both_ends_or_with_clocks_backwards() {
        assert_eq!(
            saga_own_us(&order(OrderStatus::Confirmed, &[(OrderStatus::Pending, "2025-01-01T10:00:00Z")])),
            None
        );
        let garbled = order(
            OrderStatus::Confirmed,
            &[(OrderStatus::Pending, "yesterday"), (OrderStatus::Confirmed, "2025-01-01T10:00:00Z")],
        );
        assert_eq!(saga_own_us(&garbled), None);
        let backwards = order(
            OrderStatus::Confirmed,
            &[(OrderStatus::Pending, "2025-01-01T10:00:01Z"), (OrderStatus::Confirmed, "2025-01-01T10:00:00Z")],
        );
        assert_eq!(saga_own_us(&backwards), None);
    }
}
