//! What clients were promised: the load generator's `--orders-out` file (one JSON
//! `OrderRecord` a line, `tools/bench/src/load.rs`), read into [`Promise`]s. Only the lines whose
//! `POST` was answered 202 are promises; of each, only what the promise check judges is read.

use crate::model::Promise;
use anyhow::Context;
use domain::order::OrderStatus;
use serde::Deserialize;
use std::path::Path;
use uuid::Uuid;

/// A line that does not read as an order record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    /// From 1.
    pub line: usize,
    pub reason: String,
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

impl std::error::Error for Malformed {}

/// The fields of an `OrderRecord` the check needs; the others are ignored.
#[derive(Deserialize)]
struct Record {
    post: Post,
    kind: Option<Kind>,
    order_id: Option<Uuid>,
    /// The API's status (`contract::OrderStatus`: `CONFIRMED`, ...), as the client saw it.
    final_status: Option<String>,
    cancel_status: Option<u16>,
}

#[derive(Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
enum Post {
    Accepted,
    /// Refused, failed, transport error, unanswered, client overflow: nothing was promised.
    #[serde(other)]
    Other,
}

#[derive(Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
enum Kind {
    Cancel,
    #[serde(other)]
    Other,
}

/// The promises of a `--orders-out` text, in line order. Blank lines are skipped.
pub fn parse(text: &str) -> Result<Vec<Promise>, Malformed> {
    let mut promises = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let r: Record = serde_json::from_str(raw).map_err(|e| Malformed { line, reason: json_error(&e) })?;
        if r.post != Post::Accepted {
            continue;
        }
        let Some(order_id) = r.order_id else {
            return Err(Malformed { line, reason: "post is accepted but order_id is null".into() });
        };
        // A cancel with no answer, or a 5xx, may have taken effect without the client knowing:
        // the bench then stops polling at CONFIRMED.
        let cancel_unknown = r.kind == Some(Kind::Cancel) && r.cancel_status.is_none_or(|s| s >= 500);
        let final_seen = r
            .final_status
            .map(|name| {
                status(&name)
                    .ok_or_else(|| Malformed { line, reason: format!("final_status {name:?} is no order status") })
            })
            .transpose()?;
        promises.push(Promise { line, order_id: order_id.to_string(), final_seen, cancel_unknown });
    }
    Ok(promises)
}

/// serde_json's message with its position as a column of the file's line (its own "line 1"
/// would contradict the file's).
fn json_error(e: &serde_json::Error) -> String {
    let message = e.to_string();
    let position = format!(" at line {} column {}", e.line(), e.column());
    match message.strip_suffix(&position) {
        Some(m) => format!("{m} (column {})", e.column()),
        None => message,
    }
}

/// [`parse`] of a file; errors name the file (and the line).
pub fn read(path: &Path) -> anyhow::Result<Vec<Promise>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text).with_context(|| format!("{}: not an --orders-out file", path.display()))
}

/// The status the API names `name` (its names are the domain's [`OrderStatus::as_str`]).
fn status(name: &str) -> Option<OrderStatus> {
    [OrderStatus::Pending, OrderStatus::Confirmed, OrderStatus::Rejected, OrderStatus::Cancelled]
        .into_iter()
        .find(|s| s.as_str() == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines as `orders-bench --orders-out` writes them (every `OrderRecord` field).
    const FILE: &str = r#"{"index":0,"kind":"normal","customer":3,"due_s":0.0,"expected_total_cents":2400,"post":"accepted","post_status":202,"post_202_us":8123,"order_id":"0195f3a2-7c4e-7d21-9a1b-3c5d7e9f0a11","cancel_status":null,"error":null,"final_status":"CONFIRMED","last_status":"CONFIRMED","post_final_us":412345,"final_seen_s":0.41,"reason":null,"total_cents":2400,"history":["PENDING","CONFIRMED"],"saga_own_us":380211,"polls":2,"polls_throttled":0,"polls_failed":0}
{"index":1,"kind":"normal","customer":4,"due_s":0.025,"expected_total_cents":1200,"post":"refused","post_status":503,"post_202_us":null,"order_id":null,"cancel_status":null,"error":null,"final_status":null,"last_status":null,"post_final_us":null,"final_seen_s":null,"reason":null,"total_cents":null,"history":[],"saga_own_us":null,"polls":0,"polls_throttled":0,"polls_failed":0}

{"index":2,"kind":"cancel","customer":5,"due_s":0.05,"expected_total_cents":1200,"post":"accepted","post_status":202,"post_202_us":9001,"order_id":"0195f3a2-7c4e-7d21-9a1b-3c5d7e9f0a13","cancel_status":null,"error":"cancel: timeout: operation timed out","final_status":null,"last_status":"PENDING","post_final_us":null,"final_seen_s":null,"reason":null,"total_cents":null,"history":[],"saga_own_us":null,"polls":7,"polls_throttled":1,"polls_failed":0}
{"index":3,"kind":"over_credit","customer":6,"due_s":0.075,"expected_total_cents":990000,"post":"accepted","post_status":202,"post_202_us":7000,"order_id":"0195f3a2-7c4e-7d21-9a1b-3c5d7e9f0a14","cancel_status":null,"error":null,"final_status":"REJECTED","last_status":"REJECTED","post_final_us":300000,"final_seen_s":0.38,"reason":"payment declined","total_cents":990000,"history":["PENDING","REJECTED"],"saga_own_us":250000,"polls":2,"polls_throttled":0,"polls_failed":0}
{"index":4,"kind":"cancel","customer":7,"due_s":0.1,"expected_total_cents":1200,"post":"accepted","post_status":202,"post_202_us":6000,"order_id":"0195f3a2-7c4e-7d21-9a1b-3c5d7e9f0a15","cancel_status":202,"error":null,"final_status":"CANCELLED","last_status":"CANCELLED","post_final_us":900000,"final_seen_s":1.0,"reason":"cancelled by the customer","total_cents":1200,"history":["PENDING","CONFIRMED","CANCELLED"],"saga_own_us":850000,"polls":4,"polls_throttled":0,"polls_failed":0}
"#;

    #[test]
    fn accepted_lines_are_promises_with_what_the_client_saw() {
        let p = parse(FILE).unwrap();
        let promise = |line, id: &str, final_seen, cancel_unknown| Promise {
            line,
            order_id: format!("0195f3a2-7c4e-7d21-9a1b-3c5d7e9f0a{id}"),
            final_seen,
            cancel_unknown,
        };
        assert_eq!(
            p,
            vec![
                promise(1, "11", Some(OrderStatus::Confirmed), false),
                promise(4, "13", None, true),
                promise(5, "14", Some(OrderStatus::Rejected), false),
                promise(6, "15", Some(OrderStatus::Cancelled), false),
            ]
        );
    }

    #[test]
    fn a_malformed_line_is_named() {
        let text = "{\"post\":\"refused\",\"order_id\":null}\n{\"post\":\"accepted\",\"order_id\":\"nope\"}\n";
        let e = parse(text).unwrap_err();
        assert_eq!(e.to_string(), "line 2: UUID parsing failed: invalid character: found `n` at 0 (column 36)");
        let e = parse("{\"post\":\"accepted\",\"order_id\":null}").unwrap_err();
        assert_eq!(e.to_string(), "line 1: post is accepted but order_id is null");
        assert_eq!(parse("[]").unwrap_err().line, 1);
        let e = parse("{\"post\":\"accepted\",\"order_id\":\"0195f3a2-7c4e-7d21-9a1b-3c5d7e9f0a11\",\"final_status\":\"Confirmed\"}")
            .unwrap_err();
        assert_eq!(e.to_string(), "line 1: final_status \"Confirmed\" is no order status");
    }

    #[test]
    fn a_missing_file_is_named() {
        let e = read(Path::new("/nonexistent/orders.jsonl")).unwrap_err();
        assert!(format!("{e:#}").contains("/nonexistent/orders.jsonl"), "{e:#}");
    }
}
