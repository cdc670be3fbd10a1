//! Admission: new orders are refused (503 with `Retry-After`) while the shop is behind, so an
//! overload is turned away at the door instead of queued until the saga's step timeouts
//! reject the orders it already took.
//!
//! "Behind" is measured where it shows: how long orders take from being placed to being settled
//! by the saga (the order id is a UUIDv7, so its placement time travels with every command).
//! Like CoDel, the decision looks at the *shortest* settle time seen in each interval: a burst
//! that drains quickly leaves some orders fast and is let in; a standing queue makes even the
//! fastest order of an interval slow. While the shortest time of the last interval exceeds the
//! target, and that interval saw at least [`MIN_SAMPLES`] orders (a queue, not one straggler
//! such as an order finished by a step timeout), new orders are refused; the next interval
//! decides again. An interval in which no
//! order settles opens the door: the shop is idle, or has drained what it was behind on (or is
//! stuck, which refusing would not mend).
//!
//! Two stages are watched, each with its own [`Admission`]: the saga (placed → settled, seen by
//! the handler of the saga's order commands) and the read side (placed → settled and shown by
//! the read model, seen by long-polls, `GET /orders/{id}?wait=`). The door is open only while
//! both are. Each instance decides on what it sees itself (its share of `order.commands`, its
//! long-polls), a sample of the same pipeline the other instances see.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Longest tolerated settle time of the fastest order in an interval (well below the saga's
/// step timeout, so what is admitted finishes); [`TARGET_VAR`] overrides it.
pub const TARGET: Duration = Duration::from_secs(2);
pub const TARGET_VAR: &str = "SHOP_ADMISSION_TARGET_MS";
/// How long each decision holds.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// Orders an interval must see to close the door.
pub const MIN_SAMPLES: u32 = 5;

#[derive(Debug)]
pub struct Admission {
    target: Duration,
    interval: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    started: Instant,
    /// Shortest settle time seen in the current interval, and how many were seen.
    shortest: Option<Duration>,
    samples: u32,
    /// The last interval's decision.
    behind: bool,
}

impl Admission {
    /// [`TARGET`], or the milliseconds in [`TARGET_VAR`].
    pub fn from_env() -> anyhow::Result<Self> {
        let target = match std::env::var(TARGET_VAR).ok().filter(|v| !v.trim().is_empty()) {
            None => TARGET,
            Some(raw) => match raw.trim().parse::<u64>() {
                Ok(ms) if ms > 0 => Duration::from_millis(ms),
                _ => anyhow::bail!("{TARGET_VAR} must be a whole number of milliseconds above 0, not {raw:?}"),
            },
        };
        Ok(Self::new(target, INTERVAL))
    }
}

impl Admission {
    pub fn new(target: Duration, interval: Duration) -> Self {
        Self {
            target,
            interval,
            state: Mutex::new(State { started: Instant::now(), shortest: None, samples: 0, behind: false }),
        }
    }

    /// An order placed at `placed` (ms since the epoch) got through this stage now.
    pub fn passed(&self, placed_ms: u64) {
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
        let took = Duration::from_millis(u64::try_from(now_ms).unwrap_or(u64::MAX).saturating_sub(placed_ms));
        self.observe(took, Instant::now());
    }

    /// Whether a new order may come in now.
    pub fn admits(&self) -> bool {
        !self.behind_at(Instant::now())
    }

    fn observe(&self, took: Duration, now: Instant) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        self.roll(&mut s, now);
        s.shortest = Some(s.shortest.map_or(took, |t| t.min(took)));
        s.samples += 1;
    }

    fn behind_at(&self, now: Instant) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        self.roll(&mut s, now);
        s.behind
    }

    /// Close the interval if it is over: its shortest time decides the next.
    fn roll(&self, s: &mut State, now: Instant) {
        if now.duration_since(s.started) < self.interval {
            return;
        }
        s.behind = s.samples >= MIN_SAMPLES && s.shortest.take().is_some_and(|shortest| shortest > self.target);
        (s.shortest, s.samples, s.started) = (None, 0, now);
    }
}

/// The placement time (ms since the epoch) in a UUIDv7 order id.
pub fn placed_ms(order_id: &uuid::Uuid) -> Option<u64> {
    let (secs, nanos) = order_id.get_timestamp()?.to_unix();
    Some(secs * 1000 + u64::from(nanos / 1_000_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_millis(100);

    #[test]
    fn a_standing_queue_closes_the_door_and_a_drained_one_opens_it() {
        let a = Admission::new(Duration::from_secs(2), T);
        let t0 = Instant::now();
        assert!(!a.behind_at(t0), "open at the start");
        // One straggler is no queue.
        a.observe(Duration::from_secs(9), t0);
        assert!(!a.behind_at(t0 + T));
        let t0 = t0 + T;
        // Every order of an interval slow: closed for the next one.
        for i in 0..MIN_SAMPLES {
            a.observe(Duration::from_secs(3 + u64::from(i)), t0 + T / 4);
        }
        a.observe(Duration::from_secs(5), t0 + T / 2);
        assert!(!a.behind_at(t0 + T / 2), "the interval is not over yet");
        assert!(a.behind_at(t0 + T), "refusing");
        // The backlog drains: still slow, still closed.
        for _ in 0..MIN_SAMPLES {
            a.observe(Duration::from_secs(4), t0 + T + T / 2);
        }
        assert!(a.behind_at(t0 + T * 2));
        // Then nothing settles (drained, or idle): open.
        assert!(!a.behind_at(t0 + T * 3));
        // One fast order among slow ones keeps it open.
        for _ in 0..MIN_SAMPLES {
            a.observe(Duration::from_secs(4), t0 + T * 3);
        }
        a.observe(Duration::from_millis(300), t0 + T * 3);
        assert!(!a.behind_at(t0 + T * 4));
    }

    #[test]
    fn the_placement_time_comes_from_the_order_id() {
        let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        let id = uuid::Uuid::now_v7();
        let placed = placed_ms(&id).unwrap();
        assert!(placed >= before && placed <= before + 1_000, "{placed} vs {before}");
        assert_eq!(placed_ms(&uuid::Uuid::new_v4()), None);
    }
}
