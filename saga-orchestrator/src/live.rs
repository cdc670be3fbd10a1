//! Live saga changes for the operators' dashboard: after each commit the orchestrator publishes
//! which sagas moved (id, status, step) on an in-process broadcast, and `GET /sagas/live` streams
//! them as server-sent events (`event: saga`, JSON data), with a comment every 15 s to keep the
//! connection open. A subscriber too slow for the channel gets `event: lagged` (how many it
//! missed) and should read the list again. Changes are published after the commit: what an
//! event announces is in the saga table (`GET /sagas`) when it arrives.

use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use runtime::http::ApiError;
use runtime::identity::Caller;
use serde::Serialize;
use std::convert::Infallible;
use std::sync::LazyLock;
use std::time::Duration;
use tokio::sync::broadcast;

/// Changes a subscriber may fall behind by before it is told it lagged.
const BUFFER: usize = 4096;

static CHANGES: LazyLock<broadcast::Sender<Change>> = LazyLock::new(|| broadcast::channel(BUFFER).0);

/// One saga that moved.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub id: String,
    pub status: &'static str,
    pub step: String,
}

/// Announce committed changes. With nobody listening (the usual case) the changes are not even
/// built: this runs after every commit of the orchestrator.
pub fn publish(changes: impl IntoIterator<Item = Change>) {
    if CHANGES.receiver_count() == 0 {
        return;
    }
    for change in changes {
        let _ = CHANGES.send(change);
    }
}

/// `GET /sagas/live` (admin).
pub async fn stream(caller: Caller) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    caller.require_privileged()?;
    let events = futures::stream::unfold(CHANGES.subscribe(), |mut rx| async move {
        let event = match rx.recv().await {
            Ok(change) => Event::default().event("saga").json_data(&change).unwrap_or_default(),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                Event::default().event("lagged").data(missed.to_string())
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok(event), rx))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
