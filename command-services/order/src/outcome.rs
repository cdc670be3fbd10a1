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

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// How often a waiter looks at the event store without being woken.
pub const RECHECK: Duration = Duration::from_secs(1);
/// The PostgreSQL channel settled orders are announced on: payload, the order ids, comma
/// separated.
pub const CHANNEL: &str = "order_settled";
/// Requests waiting at once.
pub const MAX_WAITERS: usize = 10_000;

/// Orders someone waits for, and how to wake them.
#[derive(Clone, Default)]
pub struct Outcomes {
    waiting: Arc<Mutex<HashMap<String, Arc<Notify>>>>,
    waiters: Arc<AtomicUsize>,
}

impl Outcomes {
    /// Order `id` may have settled: wake whoever waits for it.
    pub fn settled(&self, id: &str) {
        let notify = self.waiting.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
        if let Some(notify) = notify {
            notify.notify_waiters();
        }
    }

    /// Start waiting for order `id`; `None` when too many requests wait already.
    pub fn watch(&self, id: &str) -> Option<Watch> {
        if self.waiters.fetch_add(1, Ordering::AcqRel) >= MAX_WAITERS {
            self.waiters.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let notify = self.waiting.lock().unwrap_or_else(|e| e.into_inner()).entry(id.to_owned()).or_default().clone();
        Some(Watch { outcomes: self.clone(), id: id.to_owned(), notify })
    }

    /// Wake every waiter, to look again (notifications may have been missed).
    pub fn recheck_all(&self) {
        let waiting: Vec<Arc<Notify>> =
            self.waiting.lock().unwrap_or_else(|e| e.into_inner()).drain().map(|(_, n)| n).collect();
        for notify in waiting {
            notify.notify_waiters();
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
        for id in payload.split(',').filter(|id| !id.is_empty()) {
            self.settled(id);
        }
    }

    fn listening(&self) {
        self.recheck_all();
    }
}

/// Tell every instance (this one too) that orders `ids` may have settled. Call after the
/// commit that settled them; a failure costs the waiters elsewhere only their next re-check.
pub async fn announce(pool: &sqlx::PgPool, ids: &[String]) {
    if ids.is_empty() {
        return;
    }
    // Well under PostgreSQL's 8000-byte payload limit: order ids are 36 bytes.
    for chunk in ids.chunks(150) {
        if let Err(e) = sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(chunk.join(",")).execute(pool).await
        {
            tracing::warn!(error = %e, "announcing settled orders failed; other instances re-check");
        }
    }
}

/// One request's interest in one order; dropping it forgets the order once nobody waits.
pub struct Watch {
    outcomes: Outcomes,
    id: String,
    notify: Arc<Notify>,
}

impl Watch {
    /// Completes on the next [`Outcomes::settled`] of this order after the call (or at once if
    /// the order's entry was already woken and removed: look again then).
    pub async fn woken(&mut self, timeout: Duration) {
        let notify = self.notify.clone();
        let notified = notify.notified();
        tokio::pin!(notified);
        // Registered before the check below, so a wake-up in between is not lost.
        notified.as_mut().enable();
        let removed = {
            let mut waiting = self.outcomes.waiting.lock().unwrap_or_else(|e| e.into_inner());
            match waiting.get(&self.id) {
                Some(n) if Arc::ptr_eq(n, &self.notify) => false,
                _ => {
                    // Woken and removed before this wait: take a fresh entry for the next one.
                    self.notify = waiting.entry(self.id.clone()).or_default().clone();
                    true
                }
            }
        };
        if !removed {
            let _ = tokio::time::timeout(timeout, notified).await;
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.outcomes.waiters.fetch_sub(1, Ordering::AcqRel);
        let mut waiting = self.outcomes.waiting.lock().unwrap_or_else(|e| e.into_inner());
        // Ours, and only the map's reference besides ours: nobody else waits for the order.
        if waiting.get(&self.id).is_some_and(|n| Arc::ptr_eq(n, &self.notify) && Arc::strong_count(n) == 2) {
            waiting.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        outcomes.settled("o1");
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
        outcomes.settled("o1"); // before the waiter waits
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
        let (mut a, mut b, mut c) =
            (outcomes.watch("o1").unwrap(), outcomes.watch("o2").unwrap(), outcomes.watch("o3").unwrap());
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

    #[test]
    fn waiters_are_bounded() {
        let outcomes = Outcomes::default();
        let held: Vec<_> = (0..MAX_WAITERS).map(|i| outcomes.watch(&format!("o{}", i % 7)).unwrap()).collect();
        assert!(outcomes.watch("one more").is_none());
        drop(held);
        assert!(outcomes.watch("one more").is_some());
    }
}
