//! Live saga changes for the operators' dashboard, from every instance of the orchestrator.
//!
//! A transaction that moves sagas announces them before it commits ([`announce`]: one
//! `pg_notify` on [`CHANNEL`] per JSON array of `{id, status, step}`, each array well under
//! PostgreSQL's 8000-byte limit, all in one statement). PostgreSQL delivers an announcement iff
//! its transaction commits, after the commit and in commit order, to every session listening
//! on the channel. Each instance has one such session ([`listen`]) that passes the changes on
//! to its [`Feed`], an in-process broadcast, and `GET /sagas/live` streams that feed as
//! server-sent events (`event: saga`, JSON data), with a comment every 15 s to keep the
//! connection open. What an event announces is in the saga table (`GET /sagas`) when it
//! arrives.
//!
//! `event: lagged` says changes may have been missed and the list should be read again. Its
//! data is how many a subscriber too slow for the feed missed, or `reconnected` when the
//! instance's session started listening (again): what was committed while it was not
//! listening is never delivered.

use crate::saga::Status;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use runtime::http::ApiError;
use runtime::identity::Caller;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// The PostgreSQL channel every instance announces its changes on and listens to.
pub const CHANNEL: &str = "saga_changes";

/// Largest announcement, in bytes. PostgreSQL refuses a payload of 8000 bytes or more, and
/// the refusal would fail the transaction. Some 60 to 70 changes (UUID order ids) fit.
const MAX_PAYLOAD: usize = 6000;

/// Changes a subscriber may fall behind by before it is told it lagged.
const BUFFER: usize = 4096;

/// One saga that moved: the data of an `event: saga`, and an element of an announcement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub id: String,
    pub status: Status,
    pub step: String,
}

/// What a subscriber of the feed is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    Saga(Change),
    /// Changes may have been missed. `Some(n)`: this subscriber fell `n` behind the feed;
    /// `None`: the instance's session started listening (again).
    Lagged(Option<u64>),
}

/// This instance's live changes: what its session on [`CHANNEL`] receives, for every
/// subscriber. Clones share the feed.
#[derive(Debug, Clone)]
pub struct Feed {
    sender: broadcast::Sender<Update>,
}

impl Default for Feed {
    fn default() -> Self {
        Self { sender: broadcast::channel(BUFFER).0 }
    }
}

impl Feed {
    /// The updates from now on.
    pub fn subscribe(&self) -> impl Stream<Item = Update> + Send + use<> {
        futures::stream::unfold(self.sender.subscribe(), |mut rx| async move {
            let update = match rx.recv().await {
                Ok(update) => update,
                Err(broadcast::error::RecvError::Lagged(missed)) => Update::Lagged(Some(missed)),
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            Some((update, rx))
        })
    }

    /// Pass an announcement on. With nobody subscribed (the usual case) it is not even read.
    fn forward(&self, payload: &str) {
        if self.sender.receiver_count() == 0 {
            return;
        }
        match serde_json::from_str::<Vec<Change>>(payload) {
            Ok(changes) => {
                for change in changes {
                    let _ = self.sender.send(Update::Saga(change));
                }
            }
            Err(e) => tracing::warn!(error = %e, "unreadable saga announcement ignored"),
        }
    }

    fn lagged(&self) {
        let _ = self.sender.send(Update::Lagged(None));
    }
}

/// Announce the sagas a transaction moved, in that transaction (before its commit): one
/// statement, however many there are.
pub async fn announce(tx: &mut PgConnection, changes: impl IntoIterator<Item = Change>) -> anyhow::Result<()> {
    let payloads = payloads(changes)?;
    if payloads.is_empty() {
        return Ok(());
    }
    sqlx::query("SELECT pg_notify($1, payload) FROM UNNEST($2::text[]) AS payload")
        .bind(CHANNEL)
        .bind(&payloads)
        .execute(tx)
        .await?;
    Ok(())
}

/// The changes as JSON arrays of at most [`MAX_PAYLOAD`] bytes each, in order.
fn payloads(changes: impl IntoIterator<Item = Change>) -> serde_json::Result<Vec<String>> {
    let mut payloads = Vec::new();
    let mut current = String::new();
    for change in changes {
        let item = serde_json::to_string(&change)?;
        if item.len() + "[]".len() > MAX_PAYLOAD {
            // Only an absurd order id gets here; the dashboard misses it rather than the
            // transaction failing.
            tracing::warn!(bytes = item.len(), "saga change too long to announce");
            continue;
        }
        if !current.is_empty() && current.len() + ",]".len() + item.len() > MAX_PAYLOAD {
            current.push(']');
            payloads.push(std::mem::take(&mut current));
        }
        current.push(if current.is_empty() { '[' } else { ',' });
        current.push_str(&item);
    }
    if !current.is_empty() {
        current.push(']');
        payloads.push(current);
    }
    Ok(payloads)
}

/// Listen on [`CHANNEL`] with a session of its own on `database_url` and pass every
/// announcement on to `feed`, until `shutdown` (see [`eventstore::notify`]); each time the
/// session starts listening, subscribers are told they may have lagged.
pub async fn listen(database_url: String, feed: Feed, shutdown: CancellationToken) {
    eventstore::notify::listen(database_url, CHANNEL, feed, shutdown).await;
}

impl eventstore::notify::Receiver for Feed {
    fn received(&self, payload: &str) {
        self.forward(payload);
    }

    fn listening(&self) {
        self.lagged();
    }
}

/// `GET /sagas/live` (admin).
pub async fn stream(
    State(feed): State<Feed>,
    caller: Caller,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    caller.require_privileged()?;
    let events = feed.subscribe().map(|update| Ok(event(&update)));
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

fn event(update: &Update) -> Event {
    match update {
        Update::Saga(change) => Event::default().event("saga").json_data(change).unwrap_or_default(),
        Update::Lagged(Some(missed)) => Event::default().event("lagged").data(missed.to_string()),
        Update::Lagged(None) => Event::default().event("lagged").data("reconnected"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(i: usize) -> Change {
        Change { id: format!("{i:032x}"), status: Status::Running, step: "authorize_payment".into() }
    }

    #[test]
    fn announcements_are_json_arrays_under_the_limit_with_every_change_in_order() {
        let changes: Vec<Change> = (0..500).map(change).collect();
        let payloads = payloads(changes.clone()).unwrap();
        assert!(payloads.len() > 1, "500 changes need more than one announcement");
        assert!(
            payloads.iter().all(|p| p.len() <= MAX_PAYLOAD),
            "{:?}",
            payloads.iter().map(String::len).collect::<Vec<_>>()
        );
        // Each but the last is full: one more change would not have fitted.
        let item = serde_json::to_string(&changes[0]).unwrap().len();
        assert!(payloads[..payloads.len() - 1].iter().all(|p| p.len() + 1 + item > MAX_PAYLOAD));
        let read: Vec<Change> = payloads.iter().flat_map(|p| serde_json::from_str::<Vec<Change>>(p).unwrap()).collect();
        assert_eq!(read, changes);
    }

    #[test]
    fn nothing_to_announce_is_no_announcement_and_an_oversized_change_is_left_out() {
        assert!(payloads([]).unwrap().is_empty());
        let huge = Change { id: "x".repeat(MAX_PAYLOAD), ..change(0) };
        let payloads = payloads([change(1), huge, change(2)]).unwrap();
        assert_eq!(payloads, [serde_json::to_string(&[change(1), change(2)]).unwrap()]);
    }

    #[test]
    fn the_wire_shape_is_the_dashboards() {
        let json = serde_json::to_value(change(7)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"id": "00000000000000000000000000000007", "status": "RUNNING", "step": "authorize_payment"})
        );
    }

    #[tokio::test]
    async fn an_announcement_reaches_every_subscriber_and_a_slow_one_is_told_it_lagged() {
        let feed = Feed::default();
        let (mut first, mut second) = (Box::pin(feed.subscribe()), Box::pin(feed.subscribe()));
        feed.forward(&serde_json::to_string(&[change(1), change(2)]).unwrap());
        feed.forward("not json");
        feed.lagged();
        for updates in [&mut first, &mut second] {
            assert_eq!(updates.next().await, Some(Update::Saga(change(1))));
            assert_eq!(updates.next().await, Some(Update::Saga(change(2))));
            assert_eq!(updates.next().await, Some(Update::Lagged(None)));
        }
        let changes: Vec<Change> = (0..BUFFER + 3).map(change).collect();
        feed.forward(&serde_json::to_string(&changes).unwrap());
        assert_eq!(first.next().await, Some(Update::Lagged(Some(3))));
        assert_eq!(first.next().await, Some(Update::Saga(change(3))));
    }
}
