//! Waits for writes known to take a while to show in a read model (a settled order waits for
//! its projector): [`Shown`] serves every request waiting on one read model with one lookup of
//! all the documents due, at most every [`Shown`]'s tick, so the read model is asked about as
//! often at 100 waiting requests as at one.

use crate::query::reached_by;
use crate::readmodel::ActiveCollection;
use futures::TryStreamExt;
use mongodb::bson::{Bson, Document, doc};
use runtime::consistency::Token;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

/// The longest pause between two looks for one document: a read model far behind is not asked
/// ever more often by the requests waiting on it.
pub const SLOWEST_PACE: Duration = Duration::from_millis(500);

/// Documents asked for in one lookup at most; more due wait for the next tick.
const LOOKUP_MAX: usize = 500;

/// The requests waiting for documents of one read model, and the task that looks for them.
/// Dropping it ends the task; requests still waiting then get nothing.
pub struct Shown {
    shared: Arc<Shared>,
    task: tokio::task::AbortHandle,
}

struct Shared {
    coll: ActiveCollection,
    waits: Mutex<Vec<Wait>>,
    arrived: Notify,
    delay: ShowDelay,
    /// The shortest time between two lookups.
    tick: Duration,
    /// The pause after a look that did not find a document, growing by half each time.
    pace: Duration,
    lookups: AtomicU64,
}

struct Wait {
    token: Token,
    since: Instant,
    /// When it was first looked for.
    first: Duration,
    next: Instant,
    pace: Duration,
    looked: bool,
    /// Taken when answered.
    reply: Option<oneshot::Sender<Document>>,
}

impl Shown {
    /// Start looking, in the current Tokio runtime. A document is looked for first after
    /// `delay`'s first look, then after `pace`, each pause half as long again as the one before
    /// up to [`SLOWEST_PACE`]; lookups are `tick` apart at least.
    pub fn new(coll: ActiveCollection, delay: ShowDelay, tick: Duration, pace: Duration) -> Self {
        let shared = Arc::new(Shared {
            coll,
            waits: Mutex::default(),
            arrived: Notify::new(),
            delay,
            tick,
            pace,
            lookups: AtomicU64::new(0),
        });
        let task = tokio::spawn(look(shared.clone())).abort_handle();
        Self { shared, task }
    }

    /// Wait at most `limit` until the document `token` names has reached its version: the
    /// document once it got there (so the caller need not read it again), `None` if it did not
    /// (a lookup that fails counts as not there yet; the caller's own read then tells).
    pub async fn until_shown(&self, token: &Token, limit: Duration) -> Option<Document> {
        let (reply, answer) = oneshot::channel();
        let since = Instant::now();
        let first = self.shared.delay.first_look();
        let wait = Wait {
            token: token.clone(),
            since,
            first,
            next: since + first,
            pace: self.shared.pace,
            looked: false,
            reply: Some(reply),
        };
        self.shared.lock().push(wait);
        self.shared.arrived.notify_one();
        tokio::time::timeout(limit, answer).await.ok().and_then(Result::ok)
    }

    /// Lookups made so far (each for every document due at the time).
    pub fn lookups(&self) -> u64 {
        self.shared.lookups.load(Ordering::Relaxed)
    }
}

impl Drop for Shown {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Wait>> {
        self.waits.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The looking task: sleep until a wait is due (and a tick after the last lookup), look for
/// every due document at once, answer the waits it found, and pace the others.
async fn look(shared: Arc<Shared>) {
    let start = Instant::now();
    let mut last = start.checked_sub(shared.tick).unwrap_or(start);
    loop {
        let next = {
            let mut waits = shared.lock();
            waits.retain(|w| w.reply.as_ref().is_some_and(|r| !r.is_closed()));
            waits.iter().map(|w| w.next).min()
        };
        let Some(next) = next else {
            shared.arrived.notified().await;
            continue;
        };
        tokio::select! {
            () = tokio::time::sleep_until(next.max(last + shared.tick)) => {}
            // A new wait may be due sooner.
            () = shared.arrived.notified() => continue,
        }
        let now = Instant::now();
        let ids: HashSet<String> = {
            let waits = shared.lock();
            let due = waits.iter().filter(|w| w.next <= now).map(|w| w.token.aggregate_id.clone());
            let mut ids = HashSet::new();
            for id in due {
                if ids.len() == LOOKUP_MAX {
                    break;
                }
                ids.insert(id);
            }
            ids
        };
        last = now;
        if ids.is_empty() {
            continue;
        }
        shared.lookups.fetch_add(1, Ordering::Relaxed);
        let found = match lookup(&shared.coll, &ids).await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(error = %e, documents = ids.len(), "read-model lookup for waiting requests failed");
                HashMap::new()
            }
        };
        let now = Instant::now();
        shared.lock().retain_mut(|w| {
            if !ids.contains(&w.token.aggregate_id) || w.next > last {
                return true;
            }
            match found.get(&w.token.aggregate_id).filter(|d| reached_by(&w.token, Some(d))) {
                Some(doc) => {
                    // Found at the first look: it may have been there earlier, so look a
                    // little sooner next time; found later: that is how long it took.
                    let took = if w.looked { now - w.since } else { w.first.mul_f64(0.75) };
                    shared.delay.shown_after(took);
                    if let Some(reply) = w.reply.take() {
                        let _ = reply.send(doc.clone());
                    }
                    false
                }
                None => {
                    w.looked = true;
                    w.next = now + w.pace;
                    w.pace = w.pace.mul_f64(1.5).min(SLOWEST_PACE);
                    true
                }
            }
        });
    }
}

/// The documents with these ids, by id.
async fn lookup(coll: &ActiveCollection, ids: &HashSet<String>) -> mongodb::error::Result<HashMap<String, Document>> {
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let filter = doc! { "_id": { "$in": ids } };
    let docs: Vec<Document> = coll.get().await?.find(filter).await?.try_collect().await?;
    Ok(docs
        .into_iter()
        .filter_map(|d| match d.get("_id") {
            Some(Bson::String(id)) => Some((id.clone(), d)),
            _ => None,
        })
        .collect())
}

/// How long writes recently took to show in a read model, so that [`Shown`] first looks about
/// when the document is there instead of several times before: a moving average of the times
/// reported, starting at `initial`, kept between `floor` and [`SLOWEST_PACE`].
pub struct ShowDelay {
    micros: AtomicU64,
    floor: Duration,
}

impl ShowDelay {
    pub fn new(initial: Duration, floor: Duration) -> Self {
        let micros = u64::try_from(initial.as_micros()).unwrap_or(u64::MAX);
        Self { micros: AtomicU64::new(micros), floor }
    }

    /// When to look first.
    pub fn first_look(&self) -> Duration {
        Duration::from_micros(self.micros.load(Ordering::Relaxed)).clamp(self.floor, SLOWEST_PACE)
    }

    /// A write took `took` to show (or was found after that long).
    pub fn shown_after(&self, took: Duration) {
        let took = u64::try_from(took.clamp(self.floor, SLOWEST_PACE).as_micros()).unwrap_or(u64::MAX);
        // One eighth of the way to each new sample; races between requests lose a sample at most.
        let old = self.micros.load(Ordering::Relaxed);
        let new = if took >= old { old + (took - old) / 8 } else { old - (old - took) / 8 };
        self.micros.store(new, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_look_follows_the_delays_reported_within_bounds() {
        let delay = ShowDelay::new(Duration::from_millis(60), Duration::from_millis(10));
        assert_eq!(delay.first_look(), Duration::from_millis(60));
        for _ in 0..100 {
            delay.shown_after(Duration::from_millis(200));
        }
        let first = delay.first_look();
        assert!(first > Duration::from_millis(190) && first <= Duration::from_millis(200), "{first:?}");
        for _ in 0..100 {
            delay.shown_after(Duration::from_secs(30));
        }
        let first = delay.first_look();
        assert!(
            first > Duration::from_millis(490) && first <= SLOWEST_PACE,
            "never later than the slowest pace: {first:?}"
        );
        for _ in 0..200 {
            delay.shown_after(Duration::ZERO);
        }
        assert!(delay.first_look() >= Duration::from_millis(10), "never before the floor");
        assert!(delay.first_look() < Duration::from_millis(12));
    }
}
