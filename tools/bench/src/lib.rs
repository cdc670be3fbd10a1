//! `orders-bench`: an open-loop load generator for the whole shop, and an audit of the shop's
//! invariants after the run. `./stack bench` calls it once per rate step and merges the JSON.
//!
//! A run, in the order [`run`] does it:
//! - [`cli`]: the command line, checked.
//! - [`auth`]: Keycloak tokens of alice, bob and admin, renewed in the background.
//! - [`setup`]: the run's own customers (split between alice and bob) and products: ordinary
//!   ones, one priced above the credit limit, one with stock 1. Not timed.
//! - [`plan`] with [`mix`]: every order's due time, kind, customer and cart, from the seed.
//! - [`kafka`], [`procs`], [`pg`]: watermarks, CPU/memory and PostgreSQL's transactions at load
//!   start.
//! - [`load`]: the scheduler spawns each order at its due time; its task places, maybe
//!   cancels, and polls it to a final status; latencies count from the due time. [`lag`]
//!   samples the projectors meanwhile, and a progress line goes to stderr each second.
//! - [`kafka`], [`procs`] again after the drain (Kafka after the audit), [`pg`] after the idle
//!   wait.
//! - [`audit`] (reading [`mailpit`] for the e-mails): stock, credit, outcomes, mail.
//! - [`report`] with [`stats`]: the JSON document and the summary.
//!
//! [`api`] is the gateway client all of them share.

pub mod api;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod kafka;
pub mod lag;
pub mod load;
pub mod mailpit;
pub mod mix;
pub mod pg;
pub mod plan;
pub mod procs;
pub mod report;
pub mod setup;
pub mod stats;

use crate::api::Api;
use crate::auth::Tokens;
use crate::cli::Cli;
use crate::kafka::{Marks, Watermarks};
use crate::load::{Live, LoadParams};
use crate::mailpit::Mailpit;
use crate::report::{AuditReport, Report, Section};
use anyhow::Context;
use chrono::{SecondsFormat, Utc};
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// The first order is due this long after the clock starts, so it is not born late.
const LEAD: Duration = Duration::from_millis(100);
/// A scheduler later than this at p99 was itself a bottleneck: the report says so.
const SCHEDULER_LAG_WARN_MS: f64 = 10.0;
/// How long the stack idles after the audit (or the drain), with the run's connections closed,
/// before the processes are sampled once more ([`procs::ComponentReport::rss_mb_idle`]).
const IDLE_BEFORE_SAMPLE: Duration = Duration::from_secs(10);

/// What `main` turns into an exit status.
pub struct Outcome {
    /// Some check failed (the JSON is written all the same).
    pub audit_failed: bool,
}

pub async fn run(cli: Cli) -> anyhow::Result<Outcome> {
    cli.validate()?;
    let orders = plan::order_count(cli.rate, cli.duration);
    let customers = cli.customers.unwrap_or_else(|| plan::default_customers(orders));
    let http = api::http_client(cli.max_in_flight)?;
    let mut warnings = Vec::new();

    eprintln!("orders-bench: signing in at {}", cli.keycloak);
    let tokens = Arc::new(Tokens::sign_in(&http, &cli.keycloak).await.context("signing in to Keycloak")?);
    let api = Api::new(http.clone(), &cli.gateway, tokens.clone());
    let run_id = setup::new_run_id();
    eprintln!("orders-bench: run {run_id}: {customers} customers, {} products, then {orders} orders", cli.products + 2);
    let setup = Arc::new(setup::prepare(&api, &run_id, customers, cli.products, cli.seed).await.context("setup")?);
    let plans = plan::plan_orders(orders, &cli.mix, customers, &setup.catalog, cli.seed);
    let worst = plan::worst_case_spend(&plans, customers);
    if let Some((i, c)) = setup.customers.iter().enumerate().find(|(i, c)| worst[*i] > c.credit_limit_cents) {
        warnings.push(format!(
            "customer {} could be charged up to {} cents with a credit limit of {}: normal orders may be declined \
             (use more --customers)",
            c.id, worst[i], c.credit_limit_cents
        ));
    }

    // Let the setup's own events (registrations, accounts, products) settle before the
    // watermarks are taken, so the run's deltas are the orders' alone.
    if !lag::wait_idle(&http, &cli.projectors, Duration::from_secs(10)).await {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let watermarks = {
        let brokers = cli.brokers.clone();
        tokio::task::spawn_blocking(move || Watermarks::connect(&brokers).map(Arc::new)).await?
    };
    let marks_before = match &watermarks {
        Ok(w) => snapshot(w.clone()).await,
        Err(e) => Err(anyhow::anyhow!("{e:#}")),
    };
    let mailpit = Mailpit::new(http.clone(), &cli.mailpit);
    let mail_deleted_before = mailpit.counts().await.ok().map(|(_, deleted)| deleted);

    let pg = pg::connect(&cli.postgres).await;
    let pg_before = pg_reading(&pg).await;

    // The clock starts here: everything above is setup.
    let procs_start = procs::snapshot(&cli.procs.0);
    let procs_from = Instant::now();
    let t0 = Instant::now() + LEAD;
    let started_at = Utc::now() + LEAD;
    let live = Arc::new(Live::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let lag = (!cli.no_projection_lag)
        .then(|| tokio::spawn(lag::sample(http.clone(), cli.projectors.clone(), t0, stop_rx.clone())));
    let progress = tokio::spawn(progress(live.clone(), t0, stop_rx));
    let window = Duration::from_secs_f64(cli.duration);
    let params = LoadParams {
        rate: cli.rate,
        drain_timeout: cli.drain_timeout(),
        max_in_flight: cli.max_in_flight,
        poll_first: Duration::from_millis(cli.poll_first_ms),
        poll_max: Duration::from_millis(cli.poll_max_ms),
        wait_s: cli.wait_s,
    };
    let result = load::run(api.clone(), setup.clone(), plans.clone(), params, live.clone(), t0, window).await;
    let _ = stop_tx.send(true);
    let procs_end = procs::snapshot(&cli.procs.0);
    let procs_window_s = procs_from.elapsed().as_secs_f64();
    let _ = progress.await;
    eprintln!("{}", live.progress_line(t0.elapsed().as_secs_f64()));
    let (lag_samples, lag_failures) = match lag {
        Some(handle) => handle.await.unwrap_or_default(),
        None => (Vec::new(), 0),
    };

    let records = result.records;
    let counts = report::counts(&records);
    let checks = if cli.no_audit {
        None
    } else {
        eprintln!("orders-bench: auditing (waiting up to {} s for read models and mail)", cli.settle_timeout);
        let ctx = audit::AuditContext {
            api: &api,
            mailpit: &mailpit,
            setup: &setup,
            plans: &plans,
            settle: cli.settle_timeout(),
            run_started: started_at,
            mail_deleted_before,
        };
        Some(audit::run(&ctx, &records).await)
    };
    // After the audit when there was one: by then the read models agree with the orders, so
    // the trailing events (stock commits, payment confirmations) are on Kafka too.
    let marks_after = match &watermarks {
        Ok(w) => snapshot(w.clone()).await,
        Err(e) => Err(anyhow::anyhow!("{e:#}")),
    };
    let when = if cli.no_audit { "drain" } else { "audit" };
    let kafka = Section::of(
        "Kafka watermarks",
        (marks_before, marks_after),
        |before, after| kafka::compare(&before, &after, counts.accepted, when),
        &mut warnings,
    );

    let hz = procs::clock_ticks_per_second();
    let (mut processes, machine_cpu, client) =
        procs::compare(&procs_start, &procs_end, hz, counts.accepted, procs_window_s);
    // What the processes keep once the stack has idled a while after the run (a service that
    // gives memory back does so when it is quiet), beside what they held at the end of the load.
    // Without processes to report (`--procs` empty, as the chaos soak runs it) nothing waits.
    if let Some(report) = processes.as_mut() {
        // The run's clients are gone by then: the load's connections (after an overload, a
        // thousand or more, idle in this client's pool and held open by the gateway for it)
        // close here, as a crowd's would once it left.
        drop((api, mailpit, tokens, http));
        tokio::time::sleep(IDLE_BEFORE_SAMPLE).await;
        procs::add_idle(report, &procs::snapshot(&cli.procs.0), IDLE_BEFORE_SAMPLE.as_secs_f64());
    }
    // After the idle wait when there was one: by then every session has reported its counts.
    let pg_after = pg_reading(&pg).await;
    let when = if processes.is_some() { "idle" } else { when };
    let postgres = Section::of(
        "PostgreSQL's statistics",
        (pg_before, pg_after),
        |before, after| pg::compare(&before, &after, counts.accepted, when),
        &mut warnings,
    );
    let latency_ms = report::latencies(&records, &result.scheduler_lag);
    if latency_ms.scheduler_lag.p99.is_some_and(|p| p > SCHEDULER_LAG_WARN_MS) {
        warnings.push(format!(
            "the client fell behind its own schedule (p99 {} ms late): the figures may understate the offered rate",
            latency_ms.scheduler_lag.p99.unwrap_or_default()
        ));
    }
    if counts.client_overflow > 0 {
        warnings.push(format!("{} orders were not sent: --max-in-flight was reached", counts.client_overflow));
    }
    let projection_lag = lag::summarize(lag_samples, lag_failures, cli.duration);
    if !cli.no_projection_lag && projection_lag.is_none() {
        warnings.push(format!("the projectors' status ({}/status) could not be read", cli.projectors));
    }
    if mail_deleted_before.is_none() && !cli.no_audit {
        warnings.push("Mailpit's counters could not be read before the run".to_owned());
    }

    let throughput = report::throughput(&counts, &records, cli.duration, result.ended_s);
    let report = Report {
        bench: "orders",
        version: report::VERSION,
        run_id: run_id.clone(),
        started_at: started_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        finished_at: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
        rate: cli.rate,
        duration_s: cli.duration,
        mix: cli.mix,
        seed: cli.seed,
        config: report::ConfigReport {
            gateway: cli.gateway.clone(),
            drain_timeout_s: cli.drain_timeout,
            settle_timeout_s: cli.settle_timeout,
            max_in_flight: cli.max_in_flight,
            poll_first_ms: cli.poll_first_ms,
            poll_max_ms: cli.poll_max_ms,
            wait_s: cli.wait_s,
            projection_lag_sampled: !cli.no_projection_lag,
        },
        customers: report::CustomersReport::new(&setup, &worst),
        products: report::ProductsReport::new(&setup),
        timeline: report::timeline(&records, cli.duration),
        counts,
        latency_ms,
        throughput,
        projection_lag,
        kafka,
        postgres,
        processes,
        machine_cpu,
        client,
        audit: AuditReport::new(checks),
        warnings,
    };

    if let Some(path) = &cli.out {
        let json = serde_json::to_vec_pretty(&report)?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &cli.orders_out {
        write_orders(path, &records).with_context(|| format!("writing {}", path.display()))?;
    }
    if !report.audit.checks.is_empty() {
        eprintln!("\n{}", audit::render(&report.audit.checks));
    }
    println!("{}", report::summary(&report));
    if live.overflow.load(Relaxed) > 0 {
        eprintln!("orders-bench: the client held back orders (--max-in-flight); see counts.client_overflow");
    }
    Ok(Outcome { audit_failed: report.audit.ok == Some(false) })
}

async fn pg_reading(pool: &anyhow::Result<sqlx::PgPool>) -> anyhow::Result<pg::Transactions> {
    match pool {
        Ok(pool) => pg::snapshot(pool).await,
        Err(e) => Err(anyhow::anyhow!("{e:#}")),
    }
}

async fn snapshot(w: Arc<Watermarks>) -> anyhow::Result<Marks> {
    tokio::task::spawn_blocking(move || w.snapshot()).await?
}

/// One line a second until told to stop.
async fn progress(live: Arc<Live>, t0: Instant, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval_at(t0 + Duration::from_secs(1), Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => eprintln!("{}", live.progress_line(t0.elapsed().as_secs_f64())),
            _ = stop.changed() => return,
        }
    }
}

/// One JSON object per line, by order index.
fn write_orders(path: &std::path::Path, records: &[load::OrderRecord]) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for r in records {
        serde_json::to_writer(&mut out, r)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}
