//! The run's results: the JSON document (the input of `./stack bench`, which merges one per
//! rate step) and a short summary for people. Everything here is computed from the order
//! records after the run, so the figures agree with each other by construction.

use crate::api::OrderStatus;
use crate::audit::Check;
use crate::auth::User;
use crate::kafka::KafkaReport;
use crate::lag::LagReport;
use crate::load::{OrderRecord, Post};
use crate::mix::{Kind, Mix};
use crate::pg::PgReport;
use crate::procs::{ClientReport, MachineCpuReport, ProcessesReport};
use crate::setup::{Role, Setup};
use crate::stats::{Latencies, Summary, percentile, round3};
use serde::Serialize;
use std::collections::BTreeMap;

/// Bumped when a field changes meaning or goes away (adding fields keeps it).
pub const VERSION: u32 = 1;
/// Transport error messages kept as examples.
const ERROR_SAMPLES: usize = 5;

#[derive(Debug, Serialize)]
pub struct Report {
    pub bench: &'static str,
    pub version: u32,
    pub run_id: String,
    /// When the load window opened (UTC, RFC 3339).
    pub started_at: String,
    pub finished_at: String,
    pub rate: f64,
    pub duration_s: f64,
    pub mix: Mix,
    pub seed: u64,
    pub config: ConfigReport,
    pub customers: CustomersReport,
    pub products: ProductsReport,
    pub counts: Counts,
    pub latency_ms: LatencyReport,
    pub throughput: Throughput,
    pub timeline: Vec<Second>,
    pub projection_lag: Option<LagReport>,
    pub kafka: Section<KafkaReport>,
    /// PostgreSQL's transactions per database.
    pub postgres: Section<PgReport>,
    pub processes: Option<ProcessesReport>,
    pub machine_cpu: Option<MachineCpuReport>,
    /// The load generator's own cost.
    pub client: ClientReport,
    pub audit: AuditReport,
    /// Things that make the figures less trustworthy (setup surprises, unreadable sources).
    pub warnings: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct ConfigReport {
    pub gateway: String,
    pub drain_timeout_s: f64,
    pub settle_timeout_s: f64,
    pub max_in_flight: usize,
    pub poll_first_ms: u64,
    pub poll_max_ms: u64,
    /// Long-poll seconds per GET (0: polled with backoff).
    pub wait_s: u64,
    pub projection_lag_sampled: bool,
}

#[derive(Debug, Serialize)]
pub struct CustomersReport {
    pub count: usize,
    pub by_user: BTreeMap<User, usize>,
    pub credit_limit_cents_min: Option<i64>,
    pub credit_limit_cents_max: Option<i64>,
    /// The most any one customer could be charged at once by the plan (normal + cancel carts).
    pub worst_case_spend_cents_max: i64,
}

#[derive(Debug, Serialize)]
pub struct ProductsReport {
    pub ordinary: usize,
    pub ordinary_price_cents_min: Option<i64>,
    pub ordinary_price_cents_max: Option<i64>,
    pub ordinary_initial_stock: Option<i64>,
    pub expensive_price_cents: Option<i64>,
    pub scarce_initial_stock: Option<i64>,
    pub over_stock_quantity: i64,
}

impl CustomersReport {
    pub fn new(setup: &Setup, worst_case_spend: &[i64]) -> Self {
        let mut by_user = BTreeMap::new();
        for c in &setup.customers {
            *by_user.entry(c.owner).or_default() += 1;
        }
        let limits = setup.customers.iter().map(|c| c.credit_limit_cents);
        CustomersReport {
            count: setup.customers.len(),
            by_user,
            credit_limit_cents_min: limits.clone().min(),
            credit_limit_cents_max: limits.max(),
            worst_case_spend_cents_max: worst_case_spend.iter().copied().max().unwrap_or(0),
        }
    }
}

impl ProductsReport {
    pub fn new(setup: &Setup) -> Self {
        let of = |role: Role| setup.products.iter().filter(move |p| p.role == role);
        ProductsReport {
            ordinary: of(Role::Ordinary).count(),
            ordinary_price_cents_min: of(Role::Ordinary).map(|p| p.price_cents).min(),
            ordinary_price_cents_max: of(Role::Ordinary).map(|p| p.price_cents).max(),
            ordinary_initial_stock: of(Role::Ordinary).map(|p| p.initial_stock).max(),
            expensive_price_cents: of(Role::Expensive).map(|p| p.price_cents).next(),
            scarce_initial_stock: of(Role::Scarce).map(|p| p.initial_stock).next(),
            over_stock_quantity: crate::plan::OVER_STOCK_QUANTITY,
        }
    }
}

/// Every figure at the top level is a number of orders; the `_by_…` maps break them down.
#[derive(Debug, Default, PartialEq, Serialize)]
pub struct Counts {
    /// Orders due in the window (= rate × duration).
    pub offered: u64,
    pub offered_by_kind: BTreeMap<Kind, u64>,
    /// Due while `max_in_flight` orders were open, so never sent: should stay 0, else the
    /// client was the limit.
    pub client_overflow: u64,
    pub sent: u64,
    /// Answered 202.
    pub accepted: u64,
    /// Answered 429 or 503 (the system shedding load); never retried.
    pub refused: u64,
    pub refused_by_status: BTreeMap<String, u64>,
    /// Every other POST outcome: other statuses, transport failures, no answer by the deadline.
    pub errors: u64,
    pub errors_by_status: BTreeMap<String, u64>,
    /// No HTTP answer (connect, reset, 30 s timeout).
    pub errors_transport: u64,
    /// Sent, still unanswered at the drain deadline.
    pub errors_unanswered: u64,
    /// A few distinct transport error messages (POST or cancel).
    pub error_samples: Vec<String>,
    /// Orders that reached a final status (CONFIRMED, REJECTED, CANCELLED).
    #[serde(rename = "final")]
    pub finals: u64,
    pub final_by_status: BTreeMap<&'static str, u64>,
    pub final_by_kind: BTreeMap<Kind, BTreeMap<&'static str, u64>>,
    /// Accepted orders without a final status at the end of the drain.
    pub not_final: u64,
    /// Answers to the cancel requests of accepted cancel orders, by status ("error": none).
    pub cancel_by_status: BTreeMap<String, u64>,
    /// GETs of orders while following them.
    pub polls: u64,
    pub polls_per_accepted_order: Option<f64>,
    /// Polls answered 429/503 (the gateway's per-user rate limit, or overload).
    pub polls_throttled: u64,
    /// Polls that failed otherwise (transport, 5xx).
    pub polls_failed: u64,
}

pub fn counts(records: &[OrderRecord]) -> Counts {
    let mut c = Counts::default();
    for r in records {
        c.offered += 1;
        *c.offered_by_kind.entry(r.kind).or_default() += 1;
        match r.post {
            Post::ClientOverflow => c.client_overflow += 1,
            Post::Accepted => c.accepted += 1,
            Post::Refused => {
                c.refused += 1;
                *c.refused_by_status.entry(status_key(r.post_status)).or_default() += 1;
            }
            Post::Failed => {
                c.errors += 1;
                *c.errors_by_status.entry(status_key(r.post_status)).or_default() += 1;
            }
            Post::TransportError => {
                c.errors += 1;
                c.errors_transport += 1;
            }
            Post::Unanswered => {
                c.errors += 1;
                c.errors_unanswered += 1;
            }
        }
        if r.post != Post::ClientOverflow {
            c.sent += 1;
        }
        if let Some(e) = &r.error
            && c.error_samples.len() < ERROR_SAMPLES
            && !c.error_samples.contains(e)
        {
            c.error_samples.push(e.clone());
        }
        if r.kind == Kind::Cancel && r.accepted() {
            let key = r.cancel_status.map_or_else(|| "error".to_owned(), |s| s.to_string());
            *c.cancel_by_status.entry(key).or_default() += 1;
        }
        match r.final_status {
            Some(s) => {
                c.finals += 1;
                *c.final_by_status.entry(s.name()).or_default() += 1;
                *c.final_by_kind.entry(r.kind).or_default().entry(s.name()).or_default() += 1;
            }
            None if r.accepted() => c.not_final += 1,
            None => {}
        }
        c.polls += u64::from(r.polls);
        c.polls_throttled += u64::from(r.polls_throttled);
        c.polls_failed += u64::from(r.polls_failed);
    }
    c.polls_per_accepted_order = (c.accepted > 0).then(|| round3(c.polls as f64 / c.accepted as f64));
    c
}

fn status_key(status: Option<u16>) -> String {
    status.map_or_else(|| "none".to_owned(), |s| s.to_string())
}

#[derive(Debug, Serialize)]
pub struct LatencyReport {
    /// Due time → 202 of the POST.
    pub post_202: Summary,
    /// Due time → the poll that first showed the final status (every final order). Includes
    /// the polling granularity: up to `poll_max_ms` late at the tail.
    pub post_final: Summary,
    /// The order's own history, PENDING at → CONFIRMED at (confirmed orders): the saga's time.
    pub saga_own: Summary,
    /// The same for rejected orders (PENDING at → REJECTED at).
    pub saga_own_rejected: Summary,
    /// Due time → the scheduler spawning the order: the client's lateness (should stay ≈ 0).
    pub scheduler_lag: Summary,
    pub note: &'static str,
}

pub fn latencies(records: &[OrderRecord], scheduler_lag: &Latencies) -> LatencyReport {
    let (mut post_202, mut post_final, mut saga, mut saga_rejected) =
        (Latencies::new(), Latencies::new(), Latencies::new(), Latencies::new());
    for r in records {
        if let Some(us) = r.post_202_us {
            post_202.record(us);
        }
        if let Some(us) = r.post_final_us {
            post_final.record(us);
        }
        match (r.final_status, r.saga_own_us) {
            (Some(OrderStatus::Confirmed), Some(us)) => saga.record(us),
            (Some(OrderStatus::Rejected), Some(us)) => saga_rejected.record(us),
            _ => {}
        }
    }
    LatencyReport {
        post_202: post_202.summary(),
        post_final: post_final.summary(),
        saga_own: saga.summary(),
        saga_own_rejected: saga_rejected.summary(),
        scheduler_lag: scheduler_lag.summary(),
        note: "all from each order's due time (coordinated omission: queueing in the client or the system \
               counts). post_final is observed by polling (first GET poll_first_ms after the 202, then x1.5 up \
               to poll_max_ms), so it can exceed the true time by a third of itself, at most poll_max_ms; \
               saga_own comes from the order's own history (server clocks, ms resolution)",
    }
}

#[derive(Debug, PartialEq, Serialize)]
pub struct Throughput {
    pub window_s: f64,
    pub offered_per_s: f64,
    pub accepted_per_s: f64,
    /// Final orders (all of them are due in the window) / the window.
    pub final_per_s: f64,
    /// Every accepted order became final within the drain.
    pub all_accepted_final: bool,
    /// Nothing refused, failed, or held back by the client.
    pub all_offered_accepted: bool,
    /// Both of the above: the system kept up with the offered rate. post_final's p99 counts
    /// every order, the last seconds' stragglers included.
    pub sustained: bool,
    /// From the end of the window to the last final status seen: how long the backlog took
    /// to clear (0 if nothing was left); null when it never cleared (orders left not final).
    pub drain_s: Option<f64>,
    /// From the start of the window until the last order's task ended (drain included).
    pub ended_s: f64,
}

pub fn throughput(c: &Counts, records: &[OrderRecord], window_s: f64, ended_s: f64) -> Throughput {
    let per_s = |n: u64| round3(n as f64 / window_s);
    let all_accepted_final = c.not_final == 0;
    let all_offered_accepted = c.accepted == c.offered;
    let last_final = records.iter().filter_map(|r| r.final_seen_s).fold(0.0, f64::max);
    Throughput {
        window_s,
        offered_per_s: per_s(c.offered),
        accepted_per_s: per_s(c.accepted),
        final_per_s: per_s(c.finals),
        all_accepted_final,
        all_offered_accepted,
        sustained: all_accepted_final && all_offered_accepted,
        drain_s: all_accepted_final.then(|| round3((last_final - window_s).max(0.0))),
        ended_s: round3(ended_s),
    }
}

/// One second of the run. `offered` … `p99_post_final_ms` are about the orders *due* in that
/// second; `finals_seen` counts the final statuses *observed* in it (so the drain shows too).
#[derive(Debug, Default, PartialEq, Serialize)]
pub struct Second {
    pub t_s: u64,
    pub offered: u64,
    pub accepted: u64,
    pub refused: u64,
    pub errors: u64,
    #[serde(rename = "final")]
    pub finals: u64,
    /// Accepted, but not final by the end of the drain.
    pub not_final: u64,
    pub p99_post_202_ms: Option<f64>,
    pub p99_post_final_ms: Option<f64>,
    pub finals_seen: u64,
}

pub fn timeline(records: &[OrderRecord], window_s: f64) -> Vec<Second> {
    let last_seen = records.iter().filter_map(|r| r.final_seen_s).fold(0.0, f64::max);
    let len = (window_s.ceil() as usize).max(last_seen.floor() as usize + 1);
    let mut seconds: Vec<Second> = (0..len).map(|t| Second { t_s: t as u64, ..Second::default() }).collect();
    let mut latencies: Vec<Vec<u64>> = vec![Vec::new(); len];
    let mut accepting: Vec<Vec<u64>> = vec![Vec::new(); len];
    for r in records {
        let t = (r.due_s.floor() as usize).min(len - 1);
        let s = &mut seconds[t];
        s.offered += 1;
        match r.post {
            Post::Accepted => s.accepted += 1,
            Post::Refused => s.refused += 1,
            Post::ClientOverflow => {}
            Post::Failed | Post::TransportError | Post::Unanswered => s.errors += 1,
        }
        if let Some(us) = r.post_202_us {
            accepting[t].push(us);
        }
        if let Some(us) = r.post_final_us {
            s.finals += 1;
            latencies[t].push(us);
        } else if r.accepted() {
            s.not_final += 1;
        }
        if let Some(seen) = r.final_seen_s {
            seconds[(seen.floor() as usize).min(len - 1)].finals_seen += 1;
        }
    }
    let p99_ms = |mut l: Vec<u64>| percentile(&mut l, 0.99).map(|us| round3(us as f64 / 1000.0));
    for ((s, l), a) in seconds.iter_mut().zip(latencies).zip(accepting) {
        s.p99_post_final_ms = p99_ms(l);
        s.p99_post_202_ms = p99_ms(a);
    }
    seconds
}

/// Figures read from a server (Kafka's watermarks, PostgreSQL's statistics), or why there are
/// none.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Section<T> {
    Report(T),
    Unavailable { error: String },
}

impl<T> Section<T> {
    /// The report made of two readings, or the first reading's error (a warning too).
    pub fn of<R>(
        what: &str,
        readings: (anyhow::Result<R>, anyhow::Result<R>),
        report: impl FnOnce(R, R) -> T,
        warnings: &mut Vec<String>,
    ) -> Self {
        match readings {
            (Ok(before), Ok(after)) => Section::Report(report(before, after)),
            (Err(e), _) | (_, Err(e)) => {
                warnings.push(format!("{what} could not be read: {e:#}"));
                Section::Unavailable { error: format!("{e:#}") }
            }
        }
    }
}

#[derive(Debug, Serialize)]
pub struct AuditReport {
    /// Null when the audit was skipped (`--no-audit`).
    pub ok: Option<bool>,
    pub checks: Vec<Check>,
}

impl AuditReport {
    pub fn new(checks: Option<Vec<Check>>) -> Self {
        match checks {
            None => AuditReport { ok: None, checks: Vec::new() },
            Some(checks) => AuditReport { ok: Some(checks.iter().all(|c| c.ok)), checks },
        }
    }
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".to_owned(), |v| format!("{v:.1}"))
}

fn latency_line(name: &str, s: &Summary) -> String {
    format!(
        "  {name:<11} p50 {:>8}  p90 {:>8}  p99 {:>8}  p99.9 {:>8}  max {:>8} ms  (n={})",
        ms(s.p50),
        ms(s.p90),
        ms(s.p99),
        ms(s.p99_9),
        ms(s.max),
        s.count
    )
}

/// A few lines for people; the JSON has the rest.
pub fn summary(r: &Report) -> String {
    let c = &r.counts;
    let t = &r.throughput;
    let finals: Vec<String> = c.final_by_status.iter().map(|(s, n)| format!("{s} {n}")).collect();
    let mut lines = vec![
        format!(
            "orders-bench {}: {} orders/s for {} s, mix {}, {} customers",
            r.run_id, r.rate, r.duration_s, r.mix, r.customers.count
        ),
        format!(
            "  offered {}  accepted {}  refused {}  errors {}  client overflow {}",
            c.offered, c.accepted, c.refused, c.errors, c.client_overflow
        ),
        format!("  final {} ({})  not final {}", c.finals, finals.join(", "), c.not_final),
        latency_line("POST→202", &r.latency_ms.post_202),
        latency_line("POST→final", &r.latency_ms.post_final),
        latency_line("saga own", &r.latency_ms.saga_own),
        format!(
            "  throughput {:.2} final/s (offered {:.2}/s); sustained: {}; drain {}",
            t.final_per_s,
            t.offered_per_s,
            if t.sustained { "yes" } else { "no" },
            t.drain_s.map_or("did not clear".to_owned(), |d| format!("{d:.1} s")),
        ),
    ];
    if let Some(lag) = &r.projection_lag {
        lines.push(format!("  projection lag: max {} events, p99 {}", lag.max_total_lag, lag.p99_total_lag));
    }
    if let Section::Report(k) = &r.kafka {
        lines.push(format!(
            "  kafka: {} offsets ({} per order), {} transactions ({} per order)",
            k.total_delta,
            k.delta_per_order.map_or("-".to_owned(), |v| format!("{v:.1}")),
            k.transactions,
            k.transactions_per_order.map_or("-".to_owned(), |v| format!("{v:.2}")),
        ));
    }
    if let Section::Report(p) = &r.postgres {
        let mut busiest: Vec<_> = p.databases.iter().filter_map(|(n, d)| Some((n, d.per_order?))).collect();
        busiest.sort_by(|a, b| b.1.total_cmp(&a.1));
        let each = busiest.iter().map(|(n, v)| format!("{n} {v:.1}")).collect::<Vec<_>>().join(", ");
        lines.push(format!(
            "  postgres: {} transactions ({} per order: {each})",
            p.transactions,
            p.per_order.map_or("-".to_owned(), |v| format!("{v:.1}")),
        ));
    }
    if let Some(p) = &r.processes {
        lines.push(format!(
            "  cpu: listed processes {:.0} ms ({} ms/order)",
            p.total.cpu_ms,
            p.total.cpu_ms_per_order.map_or("-".to_owned(), |v| format!("{v:.1}"))
        ));
        let jit: Vec<String> = p
            .components
            .iter()
            .filter_map(|(name, c)| c.jit_cpu_ms.filter(|ms| *ms > 0.0).map(|ms| format!("{name} {ms:.0} ms")))
            .collect();
        if !jit.is_empty() {
            lines.push(format!("  of which JIT compiling, at least: {}", jit.join(", ")));
        }
    }
    let inconclusive = r.audit.checks.iter().filter(|c| !c.conclusive).count();
    lines.push(match r.audit.ok {
        None => "  audit: skipped".to_owned(),
        Some(ok) => format!(
            "  audit: {} ({} of {} checks passed{})",
            if ok { "ok" } else { "FAILED" },
            r.audit.checks.iter().filter(|c| c.ok).count(),
            r.audit.checks.len(),
            if inconclusive > 0 { format!(", {inconclusive} inconclusive") } else { String::new() }
        ),
    });
    for w in &r.warnings {
        lines.push(format!("  warning: {w}"));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn rec(index: u64, due_s: f64, post: Post, status: Option<OrderStatus>, final_us: Option<u64>) -> OrderRecord {
        OrderRecord {
            index,
            kind: Kind::Normal,
            customer: 0,
            due_s,
            expected_total_cents: 100,
            post,
            post_status: match post {
                Post::Accepted => Some(202),
                Post::Refused => Some(429),
                Post::Failed => Some(500),
                _ => None,
            },
            post_202_us: (post == Post::Accepted).then_some(2_000),
            order_id: Some(Uuid::from_u128(u128::from(index))),
            cancel_status: None,
            error: None,
            final_status: status,
            last_status: status,
            post_final_us: final_us,
            final_seen_s: final_us.map(|us| due_s + us as f64 / 1e6),
            reason: None,
            total_cents: Some(100),
            history: vec![],
            saga_own_us: final_us.map(|us| us / 2),
            polls: 3,
            polls_throttled: 0,
            polls_failed: 0,
        }
    }

    fn sample() -> Vec<OrderRecord> {
        vec![
            rec(0, 0.0, Post::Accepted, Some(OrderStatus::Confirmed), Some(100_000)),
            rec(1, 0.5, Post::Accepted, Some(OrderStatus::Rejected), Some(300_000)),
            rec(2, 1.0, Post::Refused, None, None),
            rec(3, 1.5, Post::Accepted, None, None),
            rec(4, 2.0, Post::Failed, None, None),
            rec(5, 2.5, Post::ClientOverflow, None, None),
            rec(6, 2.9, Post::Accepted, Some(OrderStatus::Confirmed), Some(2_500_000)),
        ]
    }

    #[test]
    fn counts_sort_every_order_into_exactly_one_post_outcome() {
        let c = counts(&sample());
        assert_eq!(c.offered, 7);
        assert_eq!(c.sent, 6);
        assert_eq!(c.accepted, 4);
        assert_eq!(c.refused, 1);
        assert_eq!(c.refused_by_status["429"], 1);
        assert_eq!(c.errors, 1);
        assert_eq!(c.errors_by_status["500"], 1);
        assert_eq!(c.client_overflow, 1);
        assert_eq!(c.accepted + c.refused + c.errors + c.client_overflow, c.offered);
        assert_eq!(c.finals, 3);
        assert_eq!(c.final_by_status["CONFIRMED"], 2);
        assert_eq!(c.final_by_kind[&Kind::Normal]["REJECTED"], 1);
        assert_eq!(c.not_final, 1);
        assert_eq!(c.polls_per_accepted_order, Some(5.25));
    }

    #[test]
    fn the_top_level_counts_are_plain_numbers_for_the_wrapper() {
        let json = serde_json::to_value(counts(&sample())).unwrap();
        for key in ["offered", "client_overflow", "sent", "accepted", "refused", "errors", "final", "not_final"] {
            assert!(json[key].is_u64(), "counts.{key} = {}", json[key]);
        }
        assert_eq!(json["final_by_kind"]["normal"]["CONFIRMED"], 2);
    }

    #[test]
    fn throughput_is_not_sustained_when_anything_was_refused_or_left_open() {
        let records = sample();
        let t = throughput(&counts(&records), &records, 3.0, 6.0);
        assert_eq!(t.final_per_s, 1.0);
        assert!(!t.all_accepted_final && !t.all_offered_accepted && !t.sustained);
        assert_eq!(t.drain_s, None, "an order was never final: the backlog never cleared");
        let clean: Vec<OrderRecord> = records.into_iter().filter(|r| r.final_status.is_some()).collect();
        let t = throughput(&counts(&clean), &clean, 3.0, 6.0);
        assert!(t.sustained);
        assert_eq!(t.drain_s, Some(2.4), "the last final was seen at 5.4 s");
    }

    #[test]
    fn the_timeline_buckets_by_due_second_and_shows_finals_seen_during_the_drain() {
        let tl = timeline(&sample(), 3.0);
        assert_eq!(tl.len(), 6, "finals were still seen in second 5");
        assert_eq!((tl[0].offered, tl[0].accepted, tl[0].finals), (2, 2, 2));
        assert_eq!(tl[0].p99_post_final_ms, Some(300.0));
        assert_eq!(tl[0].p99_post_202_ms, Some(2.0));
        assert_eq!((tl[1].offered, tl[1].refused, tl[1].accepted, tl[1].finals, tl[1].not_final), (2, 1, 1, 0, 1));
        assert_eq!(tl[1].p99_post_final_ms, None);
        assert_eq!(tl[1].p99_post_202_ms, Some(2.0), "the accepted one of second 1");
        assert_eq!((tl[2].offered, tl[2].errors), (3, 1));
        assert_eq!(tl[5].finals_seen, 1);
        assert_eq!(tl.iter().map(|s| s.finals_seen).sum::<u64>(), 3);
        assert_eq!(tl.iter().map(|s| s.offered).sum::<u64>(), 7);
    }

    #[test]
    fn latency_report_keeps_saga_times_apart_by_outcome() {
        let l = latencies(&sample(), &Latencies::new());
        assert_eq!(l.post_202.count, 4);
        assert_eq!(l.post_final.count, 3);
        assert_eq!(l.saga_own.count, 2);
        assert_eq!(l.saga_own_rejected.count, 1);
        assert_eq!(l.scheduler_lag.count, 0);
    }

    #[test]
    fn a_skipped_audit_reports_null_not_success() {
        let skipped = serde_json::to_value(AuditReport::new(None)).unwrap();
        assert_eq!(skipped["ok"], serde_json::Value::Null);
    }
}
