//! Hearing what other instances committed: one PostgreSQL session per instance that `LISTEN`s
//! on a channel and hands every notification to a [`Receiver`]. PostgreSQL delivers a
//! `NOTIFY` iff its transaction commits, after the commit and in commit order, to every session
//! listening on the channel. What is committed while a session is not listening is never
//! delivered: each time the session starts listening (again) the receiver is told
//! ([`Receiver::listening`]) so that it can look again at what it waits for.

use sqlx::Executor;
use sqlx::postgres::PgListener;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The first pause before listening again after the session failed; it doubles with each
/// failure in a row, up to [`PAUSE_MAX`].
const PAUSE_MIN: Duration = Duration::from_millis(500);
const PAUSE_MAX: Duration = Duration::from_secs(30);

/// How long the session may hear nothing before it asks the server whether it is still there:
/// a connection that died without a word (a failover, a NAT forgetting it) would otherwise
/// leave the instance deaf for good. It must answer within [`CHECK_TIMEOUT`].
const IDLE_CHECK: Duration = Duration::from_secs(60);
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// What an instance does with what it hears.
pub trait Receiver: Send + Sync + 'static {
    /// One notification's payload.
    fn received(&self, payload: &str);
    /// The session started listening (again): notifications may have been missed.
    fn listening(&self);
}

/// Listen on `channel` with a session of its own on `database_url` and pass every
/// notification on to `receiver`, until `shutdown`. A failed session is logged and started
/// again after a pause.
pub async fn listen(database_url: String, channel: &'static str, receiver: impl Receiver, shutdown: CancellationToken) {
    let mut pause = PAUSE_MIN;
    loop {
        let error = tokio::select! {
            () = shutdown.cancelled() => return,
            error = session(&database_url, channel, &receiver, &mut pause) => error,
        };
        tracing::warn!(error = format!("{error:#}"), channel, retry_in = ?pause, "listening for notifications failed");
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(pause) => {},
        }
        pause = (pause * 2).min(PAUSE_MAX);
    }
}

/// One session: connect, listen, forward until it fails. Once listening, the pause before the
/// next session is back to its least.
async fn session(database_url: &str, channel: &str, receiver: &impl Receiver, pause: &mut Duration) -> anyhow::Error {
    let mut listener = match PgListener::connect(database_url).await {
        Ok(listener) => listener,
        Err(e) => return e.into(),
    };
    // A lost connection ends the session, so that connecting again pauses like any failure.
    listener.eager_reconnect(false);
    if let Err(e) = listener.listen(channel).await {
        return e.into();
    }
    *pause = PAUSE_MIN;
    receiver.listening();
    loop {
        // Waiting for a notification may be cancelled: sqlx keeps a message half read.
        match tokio::time::timeout(IDLE_CHECK, listener.try_recv()).await {
            Ok(Ok(Some(notification))) => receiver.received(notification.payload()),
            Ok(Ok(None)) => return anyhow::anyhow!("connection lost"),
            Ok(Err(e)) => return e.into(),
            // Notifications that arrive meanwhile are kept for the next `try_recv`.
            Err(_idle) => match tokio::time::timeout(CHECK_TIMEOUT, listener.execute("SELECT 1")).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return e.into(),
                Err(_) => return anyhow::anyhow!("no answer from the server within {CHECK_TIMEOUT:?}"),
            },
        }
    }
}
