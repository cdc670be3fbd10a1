//! Outgoing HTTP between services: a timeout on every call, retries with jittered backoff for
//! idempotent GETs, and errors that say which downstream failed.

use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("{service} is unavailable: {reason}")]
    Unavailable { service: &'static str, reason: String },
    #[error("{service} answered {status}")]
    Status { service: &'static str, status: StatusCode },
}

#[derive(Clone)]
pub struct Downstream {
    pub service: &'static str,
    pub base_url: String,
    http: reqwest::Client,
    attempts: u32,
}

impl Downstream {
    pub fn new(service: &'static str, base_url: &str, timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(2))
            .no_proxy()
            .build()
            .unwrap_or_default();
        Self { service, base_url: base_url.trim_end_matches('/').to_owned(), http, attempts: 3 }
    }

    /// GET a JSON resource; `Ok(None)` on 404. Retries connection errors and 5xx. The call is a
    /// client span whose `traceparent` goes with the request.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<Option<T>, CallError> {
        use tracing::Instrument;
        let span = tracing::info_span!(
            "http call",
            otel.name = %format_args!("GET {}", self.service),
            otel.kind = "client",
            peer.service = self.service,
            url.path = path,
        );
        self.get_json_once(path).instrument(span).await
    }

    async fn get_json_once<T: DeserializeOwned>(&self, path: &str) -> Result<Option<T>, CallError> {
        let url = format!("{}{}", self.base_url, path);
        let mut headers = reqwest::header::HeaderMap::new();
        crate::telemetry::inject_headers(&mut headers);
        let mut last = String::new();
        for attempt in 0..self.attempts {
            if attempt > 0 {
                let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0]) % 50;
                tokio::time::sleep(Duration::from_millis(100 * (1 << attempt) + jitter)).await;
            }
            match self.http.get(&url).headers(headers.clone()).send().await {
                Ok(r) if r.status() == StatusCode::NOT_FOUND => return Ok(None),
                Ok(r) if r.status().is_success() => {
                    return r.json::<T>().await.map(Some).map_err(|e| CallError::Unavailable {
                        service: self.service,
                        reason: format!("bad answer: {e}"),
                    });
                }
                Ok(r) if r.status().is_server_error() => last = format!("status {}", r.status()),
                Ok(r) => return Err(CallError::Status { service: self.service, status: r.status() }),
                Err(e) => last = e.to_string(),
            }
        }
        Err(CallError::Unavailable { service: self.service, reason: last })
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }
}
