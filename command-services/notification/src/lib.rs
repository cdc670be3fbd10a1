//! Notification service: it knows only events. It learns contacts (`CustomerRegistered`) and
//! orders (`OrderPlaced`) into its own tables, and sends one e-mail per `OrderConfirmed`,
//! `OrderRejected` and `PaymentConfirmed`, deduplicated by event id.
//!
//! - [`plan`]: event → action, pure.
//! - [`templates`]: subject and body per e-mail, pure.
//! - [`handler`]: applies a plan: table updates, or look up facts → send → record in `sent`.
//! - [`mailer`]: SMTP delivery behind the [`mailer::Mailer`] trait.
//! - [`store`]: the tables (`migrations/`) and their queries.
//! - [`notifications`]: `GET /notifications?order_id=`, the sent log of one order.

pub mod handler;
pub mod mailer;
pub mod notifications;
pub mod plan;
pub mod store;
pub mod templates;

use axum::Router;
use axum::routing::get;
use messaging::consumer::ConsumerConfig;
use runtime::Settings;
use schemas::Topic;
use service_kit::Wiring;
use sqlx::PgPool;
use std::sync::Arc;

/// Kafka consumer group of this service.
pub const GROUP: &str = "notification";

/// Where the events this service reacts to travel.
pub const TOPICS: [Topic; 3] = [Topic::CustomerEvents, Topic::OrderEvents, Topic::PaymentEvents];

pub fn app(pool: PgPool) -> Router {
    Router::new().route("/notifications", get(notifications::list)).with_state(pool)
}

/// The service, connected and consuming; HTTP is served by [`Service::run_until_stopped`].
pub struct Service {
    wiring: Wiring,
    pool: PgPool,
}

impl Service {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let mut wiring = Wiring::connect(settings, &[], &TOPICS).await?;
        let pool = wiring.database(false).await?;
        store::migrate(&pool).await?;
        let mailer = Arc::new(mailer::Smtp::new(&wiring.settings.smtp_addr)?);
        // This process in the e-mail claims: its address, pid and start, unique across restarts.
        let instance = format!(
            "{}#{}@{}",
            wiring.settings.advertise_url,
            std::process::id(),
            chrono::Utc::now().timestamp_millis()
        );
        let notifier = Arc::new(handler::Notifier::new(pool.clone(), mailer, instance));
        // One consumer per topic, all in the same group: while an e-mail waits (retrying) for a
        // contact or order it does not know yet, the topic carrying that fact keeps flowing.
        // One consumer over all three topics would stall the fact behind the retries.
        // An SMTP outage or a fact still on its way is waited out for minutes before parking.
        // No answer waits for an e-mail: `notification.gather_ms` (default 0: off) lets the broker
        // gather a topic's events for that long per fetch (see bench-results/broker-gathering/).
        let gather = std::time::Duration::from_millis(wiring.settings.value("notification.gather_ms", 0)?);
        for topic in TOPICS {
            let mut config = ConsumerConfig::new(&wiring.settings.kafka_brokers, GROUP, &[topic]);
            config.max_attempts = 30;
            config.fetch_wait = gather;
            wiring.spawn_consumer_with(config, notifier.clone());
        }
        Ok(Self { wiring, pool })
    }

    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.wiring.serve(app(self.pool)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use service_kit::testing::lazy_pool;
    use tower::ServiceExt;

    async fn status_of(uri: &str) -> (StatusCode, serde_json::Value) {
        let response = app(lazy_pool()).oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 64 * 1024).await.unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn listing_needs_an_order_id() {
        let (status, body) = status_of("/notifications").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body["error"].as_str().unwrap().contains("order_id"), "{body}");
    }

    #[tokio::test]
    async fn listing_rejects_unknown_parameters() {
        let (status, body) = status_of("/notifications?order_id=o1&customer=c1").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body["error"].is_string(), "{body}");
    }
}
