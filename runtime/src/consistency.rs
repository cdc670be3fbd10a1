//! Read-your-writes. A command answer carries `X-Consistency-Token: <stream>:<id>:<version>`:
//! the stream (`v_<stream>` in the read model), the aggregate id and the event-store version the
//! write reached. A query given the token waits, bounded by [`WAIT_LIMIT`], until the read model
//! document has applied that version; it then answers `X-Consistency: fresh`, or, when the wait
//! runs out, what it has with `X-Consistency: stale`. A token for another document is ignored.
//!
//! Here: the token, its headers and the bounds, which the gateway uses too. The waiting reads
//! themselves are MongoDB queries, in `readstore::query`.

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::Response;
use std::fmt;
use std::time::Duration;

pub const TOKEN_HEADER: HeaderName = HeaderName::from_static("x-consistency-token");
pub const STATE_HEADER: HeaderName = HeaderName::from_static("x-consistency");
/// The longest a query waits for its token.
pub const WAIT_LIMIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// Names the read model's version field `v_<stream>`.
    pub stream: String,
    pub aggregate_id: String,
    pub version: i64,
}

impl Token {
    pub fn new(stream: &str, aggregate_id: impl fmt::Display, version: i64) -> Self {
        Self { stream: stream.to_owned(), aggregate_id: aggregate_id.to_string(), version }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        let mut parts = raw.trim().splitn(3, ':');
        let (stream, id, version) = (parts.next()?, parts.next()?, parts.next()?);
        let valid = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid(stream) || !valid(id) {
            return None;
        }
        Some(Self::new(stream, id, version.parse().ok().filter(|v| *v > 0)?))
    }

    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        headers.get(TOKEN_HEADER).and_then(|v| v.to_str().ok()).and_then(Self::parse)
    }

    /// The header a command answer carries.
    pub fn header(&self) -> (HeaderName, HeaderValue) {
        let value = HeaderValue::try_from(self.to_string()).unwrap_or_else(|_| HeaderValue::from_static(""));
        (TOKEN_HEADER, value)
    }

    /// The read model's version field, `v_<stream>`.
    pub fn field(&self) -> String {
        format!("v_{}", self.stream)
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.stream, self.aggregate_id, self.version)
    }
}

/// Whether a query saw the write its token names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    Fresh,
    Stale,
}

impl Freshness {
    pub fn as_str(self) -> &'static str {
        match self {
            Freshness::Fresh => "fresh",
            Freshness::Stale => "stale",
        }
    }

    /// Mark a response; `None` (no token, or one for another document) leaves it alone.
    pub fn mark(freshness: Option<Self>, mut response: Response) -> Response {
        if let Some(f) = freshness {
            response.headers_mut().insert(STATE_HEADER, HeaderValue::from_static(f.as_str()));
        }
        response
    }
}

/// The longest a long-poll may hold a request (`GET /api/orders/{id}?wait=`): the service's
/// limit, and what the gateway adds to a forwarded call's timeout.
pub const LONG_POLL_MAX: Duration = Duration::from_secs(25);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_reject_garbage() {
        let t = Token::new("order", "0190-ab", 3);
        assert_eq!(Token::parse(&t.to_string()), Some(t));
        for bad in ["", "order", "order:x", "order:x:0", "order:x:-1", "order:x:y", "or der:x:1", ":x:1"] {
            assert_eq!(Token::parse(bad), None, "{bad:?}");
        }
    }
}
