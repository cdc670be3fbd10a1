//! How far the read models trail the event topics during the run: the projectors' `GET /status`
//! once a second, summed over the projections.

use crate::stats::{percentile, round3};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

#[derive(Deserialize)]
struct Status {
    projections: Vec<Projection>,
}

#[derive(Deserialize)]
struct Projection {
    lag: i64,
    #[serde(default)]
    behind_ms: i64,
}

/// The projectors answer only callers with a token (see `runtime::identity`): the bench calls as
/// a service, with the stack's key.
async fn read(http: &reqwest::Client, url: &str) -> Result<Status, reqwest::Error> {
    let mut request = http.get(url).timeout(Duration::from_secs(5));
    if let Ok(key) = runtime::identity::CallerKey::from_env() {
        request = request
            .header(reqwest::header::AUTHORIZATION, key.authorization(&runtime::identity::Caller::Internal, "bench"));
    }
    request.send().await?.error_for_status()?.json().await
}

/// Waits (up to `limit`) until the projections have applied everything, so the setup's own
/// events are not counted as the run's. False if they did not, or the status could not be read.
pub async fn wait_idle(http: &reqwest::Client, projectors: &str, limit: Duration) -> bool {
    let url = format!("{}/status", projectors.trim_end_matches('/'));
    let deadline = Instant::now() + limit;
    loop {
        match read(http, &url).await {
            Ok(s) if s.projections.iter().all(|p| p.lag <= 0) => return true,
            Ok(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(250)).await,
            _ => return false,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    /// Seconds since the start of the run.
    pub t_s: f64,
    /// Committed events not applied yet, over all projections.
    pub total_lag: i64,
    /// The projectors' `behind_ms` of the projection furthest behind: now − the occurrence
    /// time of its last applied event while it lags, so after an idle spell it shows the idle
    /// time, not a delay. Kept per sample only, for that reason.
    pub max_behind_ms: i64,
}

/// Samples until `stop` turns true. A sample that takes longer than a second delays the next
/// one rather than piling requests onto a struggling service.
pub async fn sample(
    http: reqwest::Client,
    projectors: String,
    t0: Instant,
    mut stop: watch::Receiver<bool>,
) -> (Vec<Sample>, u32) {
    let url = format!("{}/status", projectors.trim_end_matches('/'));
    let mut samples = Vec::new();
    let mut failures = 0;
    let mut tick = tokio::time::interval_at(t0, Duration::from_secs(1));
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        if *stop.borrow() {
            break;
        }
        match read(&http, &url).await {
            Ok(s) => samples.push(Sample {
                t_s: round3(t0.elapsed().as_secs_f64()),
                total_lag: s.projections.iter().map(|p| p.lag.max(0)).sum(),
                max_behind_ms: s.projections.iter().map(|p| p.behind_ms).max().unwrap_or(0),
            }),
            Err(_) => failures += 1,
        }
    }
    (samples, failures)
}

#[derive(Debug, Clone, Serialize)]
pub struct LagReport {
    /// Over the samples taken during the load window.
    pub max_total_lag: i64,
    pub p99_total_lag: i64,
    /// Over every sample, the drain included.
    pub max_total_lag_incl_drain: i64,
    pub samples_ok: usize,
    pub samples_failed: u32,
    pub samples: Vec<Sample>,
    pub note: &'static str,
}

/// None when no sample could be read (the projectors were unreachable): the report says null.
pub fn summarize(samples: Vec<Sample>, failures: u32, window_s: f64) -> Option<LagReport> {
    if samples.is_empty() {
        return None;
    }
    let mut in_window: Vec<u64> =
        samples.iter().filter(|s| s.t_s <= window_s).map(|s| u64::try_from(s.total_lag).unwrap_or(0)).collect();
    Some(LagReport {
        max_total_lag: in_window.iter().copied().max().map_or(0, |v| v as i64),
        p99_total_lag: percentile(&mut in_window, 0.99).map_or(0, |v| v as i64),
        max_total_lag_incl_drain: samples.iter().map(|s| s.total_lag).max().unwrap_or(0),
        samples_ok: samples.len(),
        samples_failed: failures,
        samples,
        note: "projectors GET /status once a second; lag = committed events not yet applied, summed over the \
               projections (transaction markers excluded); each sample costs the projectors a Kafka query",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t_s: f64, total_lag: i64, max_behind_ms: i64) -> Sample {
        Sample { t_s, total_lag, max_behind_ms }
    }

    #[test]
    fn no_samples_means_no_report() {
        assert!(summarize(vec![], 3, 10.0).is_none());
    }

    #[test]
    fn window_figures_leave_the_drain_out_but_the_overall_max_does_not() {
        let r = summarize(vec![s(1.0, 5, 10), s(2.0, 9, 40), s(3.0, 2, 0), s(12.0, 50, 900)], 1, 10.0).unwrap();
        assert_eq!(r.max_total_lag, 9);
        assert_eq!(r.p99_total_lag, 9);
        assert_eq!(r.max_total_lag_incl_drain, 50);
        assert_eq!((r.samples_ok, r.samples_failed), (4, 1));
    }
}
