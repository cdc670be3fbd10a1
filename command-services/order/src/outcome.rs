//! Waiting for an order's outcome instead of polling: `GET /orders/{id}?wait=<seconds>` answers
//! once the order is settled (see [`domain::order::Order::is_settled`]) and the read model shows
//! the version that settled it, or when the wait runs out (then with what the read model holds).
//!
//! The event store decides whether the order is settled; the read model only has to catch up
//! to that version (the consistency token's wait). A waiter is woken the moment an order
//! command settles its order, by whichever instance of the service handled the command: that
//! instance wakes its own waiters at once and announces the order on PostgreSQL's [`CHANNEL`]
//! ([`announce`], after the commit), which every instance hears ([`eventstore::notify`]). An
//! announcement lost with a crash between commit and announcement, or sent while an instance
//! was not listening, is made up for by a re-check of the event store every [`RECHECK`] (and
//! every waiter looks again when its instance starts listening again). Waiters are bounded
//! ([`MAX_WAITERS`]): beyond that a request answers at once, as without `wait`.
//!
//! An announcement names the version that settled the order when the announcing instance knows
//! it (`<id>@<version>`): a waiter that saw an older version unsettled takes that as the answer
//! instead of looking at the event store again. Without a version (or one no newer than what the
//! waiter saw) it looks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// How often a waiter looks at the event store without being woken.
pub const RECHECK: Duration = Duration::from_secs(1);
/// The PostgreSQL channel settled orders are announced on: payload, the order ids, comma
/// separated, each with `@<version>` when the version that settled it is known.
pub const CHANNEL: &str = "order_settled";
/// Requests waiting at once.
pub const MAX_WAITERS: usize = 10_000;

/// Orders someone waits for, and how to wake them.
#[derive(Clone, Default)]
pub struct Outcomes {
    waiting: Arc<Mutex<HashMap<String, Arc<Waiting>>>>,
    waiters: Arc<AtomicUsize>,
}

/// The waiters of one order: how to wake them, and the version that settled the order if the
/// wake-up said (0: it did not).
#[derive(Default)]
struct Waiting {
    notify: Notify,
    settled_at: AtomicI64,
}

impl Outcomes {
    /// Order `id` may have settled (at `version`, if known): wake whoever waits for it.
    pub fn settled(&self, id: &str, version: Option<i64>) {
        let waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
        if let Some(waiting) = waiting {
            waiting.settled_at.store(version.unwrap_or(0), Ordering::Release);
            waiting.notify.notify_waiters();
        }
    }

    /// Start waiting for order `id`; `None` when too many requests wait already.
    pub fn watch(&self, id: &str) -> Option<Watch> {
        if self.waiters.fetch_add(1, Ordering::AcqRel) >= MAX_WAITERS {
            self.waiters.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner()).entry(id.to_owned()).or_default().clone();
        Some(Watch { outcomes: self.clone(), id: id.to_owned(), waiting })
    }

    /// Wake every waiter, to look again (notifications may have been missed).
    pub fn recheck_all(&self) {
        let waiting: Vec<Arc<Waiting>> =
            self.waiting.lock().unwrap_or_else(|e| e.into_inner()).drain().map(|(_, n)| n).collect();
        for waiting in waiting {
            waiting.notify.notify_waiters();
        }
    }

    /// Requests waiting now.
    pub fn waiters(&self) -> usize {
        self.waiters.load(Ordering::Acquire)
    }

    /// Orders with someone waiting for them now.
    pub fn orders_watched(&self) -> usize {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl eventstore::notify::Receiver for Outcomes {
    fn received(&self, payload: &str) {
        for named in payload.split(',').filter(|named| !named.is_empty()) {
            match named.split_once('@') {
                Some((id, version)) => self.settled(id, version.parse().ok()),
                None => self.settled(named, None),
            }
        }
    }

    fn listening(&self) {
        self.recheck_all();
    }
}

/// Tell every instance (this one too) that orders may have settled, each at the version that
/// settled it if known. Call after the commit that settled them; a failure costs the waiters
/// elsewhere only their next re-check.
pub async fn announce(pool: &sqlx::PgPool, orders: &[(String, Option<i64>)]) {
    if orders.is_empty() {
        return;
    }
    // Well under PostgreSQL's 8000-byte payload limit: order ids are 36 bytes, versions a few.
    for chunk in orders.chunks(150) {
        let payload: Vec<String> = chunk
            .iter()
            .map(|(id, version)| match version {
                Some(v) => format!("{id}@{v}"),
                None => id.clone(),
            })
            .collect();
        if let Err(e) =
            sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(payload.join(",")).execute(pool).await
        {
            tracing::warn!(error = %e, "announcing settled orders failed; other instances re-check");
        }
    }
}

/// One request's interest in one order; dropping it forgets the order once nobody waits.
pub struct Watch {
    outcomes: Outcomes,
    id: String,
    waiting: Arc<Waiting>,
}

impl Watch {
    /// Completes on the next [`Outcomes::settled`] of this order after the call (or at once if
    /// the order's entry was already woken and removed: look again then), or after `timeout`.
    /// The version that settled the order, if the wake-up said.
    pub async fn woken(&mut self, timeout: Duration) -> Option<i64> {
        let current = self.waiting.clone();
        let notified = current.notify.notified();
        tokio::pin!(notified);
        // Registered before the check below, so a wake-up in between is not lost.
        notified.as_mut().enable();
        let removed = {
            let mut waiting = self.outcomes.waiting.lock().unwrap_or_else(|e| e.into_inner());
            match waiting.get(&self.id) {
                Some(n) if Arc::ptr_eq(n, &self.waiting) => false,
                _ => {
                    // Woken and removed before this wait: take a fresh entry for the next one.
                    self.waiting = waiting.entry(self.id.clone()).or_default().clone();
                    true
                }
            }
        };
        if !removed {
            if tokio::time::timeout(timeout, notified).await.is_err() {
                return None;
            }
            // Woken: the next wait is for the next wake-up (the caller looks after this one).
            let mut waiting = self.outcomes.waiting.lock().unwrap_or_else(|e| e.into_inner());
            self.waiting = waiting.entry(self.id.clone()).or_default().clone();
        }
        Some(current.settled_at.load(Ordering::Acquire)).filter(|v| *v > 0)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.outcomes.waiters.fetch_sub(1, Ordering::AcqRel);
        let mut waiting = self.outcomes.waiting.lock().unwrap_or_else(|e| e.into_inner());
        // Ours, and only the map's reference besides ours: nobody else waits for the order.
        if waiting.get(&self.id).is_some_and(|n| Arc::ptr_eq(n, &self.waiting) && Arc::strong_count(n) == 2) {
            waiting.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch_all<const N: usize>(outcomes: &Outcomes, ids: [&str; N]) -> [Watch; N] {
        ids.map(|id| outcomes.watch(id).unwrap())
    }

    #[tokio::test]
    async fn a_settled_order_wakes_its_waiters_and_is_forgotten() {
        let outcomes = Outcomes::default();
        let mut a = outcomes.watch("o1").unwrap();
        let mut b = outcomes.watch("o1").unwrap();
        let other = outcomes.watch("o2").unwrap();
        assert_eq!((outcomes.waiters(), outcomes.orders_watched()), (3, 2));
        let waiting = tokio::spawn(async move {
            let began = tokio::time::Instant::now();
            tokio::join!(a.woken(Duration::from_secs(30)), b.woken(Duration::from_secs(30)));
            began.elapsed()
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        outcomes.settled("o1", None);
        let waited = waiting.await.unwrap();
        assert!(waited < Duration::from_secs(5), "woken, not timed out: {waited:?}");
        assert_eq!((outcomes.waiters(), outcomes.orders_watched()), (1, 1), "o1's watches are gone");
        drop(other);
        assert_eq!((outcomes.waiters(), outcomes.orders_watched()), (0, 0));
    }

    #[tokio::test]
    async fn a_wake_up_between_two_waits_is_not_lost() {
        let outcomes = Outcomes::default();
        let mut w = outcomes.watch("o1").unwrap();
        outcomes.settled("o1", None); // before the waiter waits
        let began = tokio::time::Instant::now();
        w.woken(Duration::from_secs(30)).await;
        assert!(began.elapsed() < Duration::from_secs(5), "the earlier wake-up counts");
        // The next wait waits again (until woken or timed out).
        let began = tokio::time::Instant::now();
        w.woken(Duration::from_millis(100)).await;
        assert!(began.elapsed() >= Duration::from_millis(100));
    }

    #[tokio::test]
    async fn an_announcement_wakes_each_order_it_names_and_listening_again_wakes_all() {
        use eventstore::notify::Receiver;
        let outcomes = Outcomes::default();
        let [mut a, mut b, mut c] = watch_all(&outcomes, ["o1", "o2", "o3"]);
        outcomes.received("o1,o2");
        let began = tokio::time::Instant::now();
        tokio::join!(a.woken(Duration::from_secs(30)), b.woken(Duration::from_secs(30)));
        assert!(began.elapsed() < Duration::from_secs(5), "both named orders woken");
        // The session listens again: what was announced meanwhile is lost, so everyone looks.
        outcomes.listening();
        let began = tokio::time::Instant::now();
        c.woken(Duration::from_secs(30)).await;
        assert!(began.elapsed() < Duration::from_secs(5), "o3 woken to look again");
    }

    #[tokio::test]
    async fn a_wake_up_says_the_version_that_settled_the_order_when_the_announcement_did() {
        use eventstore::notify::Receiver;
        let outcomes = Outcomes::default();
        let [mut a, mut b, mut c] = watch_all(&outcomes, ["o1", "o2", "o3"]);
        outcomes.received("o1@7,o2,o3@x");
        let woken = tokio::join!(
            a.woken(Duration::from_secs(30)),
            b.woken(Duration::from_secs(30)),
            c.woken(Duration::from_secs(30))
        );
        assert_eq!(woken, (Some(7), None, None), "a version only where one was announced");
        // A re-check of everyone says nothing of versions, nor does a wait that timed out.
        outcomes.recheck_all();
        assert_eq!(a.woken(Duration::from_secs(30)).await, None, "the re-check's wake-up");
        assert_eq!(a.woken(Duration::from_millis(20)).await, None);
        // A wake-up before the wait began counts, with its version, once.
        outcomes.settled("o1", Some(11));
        assert_eq!(a.woken(Duration::from_secs(30)).await, Some(11));
        let began = tokio::time::Instant::now();
        assert_eq!(a.woken(Duration::from_millis(100)).await, None);
        assert!(began.elapsed() >= Duration::from_millis(100), "waited for a new wake-up");
    }

    #[test]
    fn waiters_are_bounded() {
        let outcomes = Outcomes::default();
        let held: Vec<_> = (0..MAX_WAITERS).map(|i| outcomes.watch(&format!("o{}", i % 7)).unwrap()).collect();
        assert!(outcomes.watch("one more").is_none());
        drop(held);
        assert!(outcomes.watch("one more").is_some());
    }
}
