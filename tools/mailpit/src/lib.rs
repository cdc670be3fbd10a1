//! Mailpit's HTTP API as the tools and tests read it: every message received (since a time),
//! a search (Mailpit's own syntax, e.g. `to:"a@example.com"`), and how many messages it holds
//! and has deleted. Pages are read newest first; new mail shifts them while they are read, so a
//! message seen twice counts once. The local stack runs Mailpit with `--max 0`: it deletes
//! nothing.

use anyhow::Context;
use chrono::{DateTime, FixedOffset, Utc};
use serde::Deserialize;
use std::collections::HashSet;

/// Messages per page: a few hundred kB of JSON.
const PAGE: usize = 500;

/// One message as Mailpit lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Mail {
    /// Mailpit's own id.
    pub id: String,
    /// The `Message-ID` header.
    pub message_id: String,
    pub subject: String,
    /// The recipients' addresses.
    pub to: Vec<String>,
    /// When Mailpit received it; none if Mailpit's time does not parse.
    pub created: Option<DateTime<FixedOffset>>,
}

#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    messages: Vec<Listed>,
}

#[derive(Deserialize)]
struct Listed {
    #[serde(rename = "ID")]
    id: String,
    #[serde(rename = "MessageID", default)]
    message_id: String,
    #[serde(rename = "Subject", default)]
    subject: String,
    #[serde(rename = "To", default)]
    to: Vec<Address>,
    #[serde(rename = "Created", default)]
    created: String,
}

#[derive(Deserialize)]
struct Address {
    #[serde(rename = "Address", default)]
    address: String,
}

impl From<Listed> for Mail {
    fn from(m: Listed) -> Self {
        Mail {
            created: DateTime::parse_from_rfc3339(&m.created).ok(),
            id: m.id,
            message_id: m.message_id,
            subject: m.subject,
            to: m.to.into_iter().map(|a| a.address).collect(),
        }
    }
}

#[derive(Deserialize)]
struct Info {
    #[serde(rename = "Messages", default)]
    messages: u64,
    #[serde(rename = "RuntimeStats")]
    runtime: Option<Runtime>,
}

#[derive(Deserialize)]
struct Runtime {
    #[serde(rename = "MessagesDeleted", default)]
    deleted: u64,
}

#[derive(Debug, Clone)]
pub struct Mailpit {
    http: reqwest::Client,
    base: String,
}

impl Mailpit {
    /// `base`: Mailpit's web address, e.g. `http://127.0.0.1:8025`.
    pub fn new(http: reqwest::Client, base: &str) -> Self {
        Mailpit { http, base: base.trim_end_matches('/').to_owned() }
    }

    /// (messages held, messages deleted since Mailpit started). Mailpit keeps only the newest
    /// 500 messages unless started with `--max 0`: deletions during a run mean some mail may be
    /// gone, which an audit must say.
    pub async fn counts(&self) -> anyhow::Result<(u64, u64)> {
        let url = format!("{}/api/v1/info", self.base);
        let info: Info = self.get(&url).await?;
        Ok((info.messages, info.runtime.map_or(0, |r| r.deleted)))
    }

    /// Every message received since `since` (all of them without), newest first. Stops at the
    /// first page that reaches back before `since`, so older mail is mostly not read at all.
    pub async fn messages(&self, since: Option<DateTime<Utc>>) -> anyhow::Result<Vec<Mail>> {
        self.pages(&format!("{}/api/v1/messages?", self.base), since).await
    }

    /// The messages a search finds, newest first.
    pub async fn search(&self, query: &str) -> anyhow::Result<Vec<Mail>> {
        let mut url = reqwest::Url::parse(&format!("{}/api/v1/search", self.base)).context("Mailpit's address")?;
        url.query_pairs_mut().append_pair("query", query);
        self.pages(&format!("{url}&"), None).await
    }

    async fn pages(&self, prefix: &str, since: Option<DateTime<Utc>>) -> anyhow::Result<Vec<Mail>> {
        let mut seen = HashSet::new();
        let mut mails = Vec::new();
        let mut start = 0;
        loop {
            let page: Page = self.get(&format!("{prefix}start={start}&limit={PAGE}")).await?;
            let n = page.messages.len();
            let mut reached_older = false;
            for m in page.messages.into_iter().map(Mail::from) {
                if since.is_some_and(|s| m.created.is_some_and(|c| c < s)) {
                    reached_older = true;
                    continue;
                }
                if seen.insert(m.id.clone()) {
                    mails.push(m);
                }
            }
            if n < PAGE || reached_older {
                return Ok(mails);
            }
            start += n;
        }
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, url: &str) -> anyhow::Result<T> {
        self.http
            .get(url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .with_context(|| format!("GET {url}"))?
            .json()
            .await
            .with_context(|| format!("GET {url}: not Mailpit's JSON"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listed_message_keeps_its_ids_subject_recipients_and_time() {
        let page: Page = serde_json::from_str(
            r#"{"messages": [{"ID": "a1", "MessageID": "m1@x", "Subject": "Hi", "Created": "2026-12-05T10:00:00.5Z",
                "To": [{"Name": "A", "Address": "a@example.com"}]}, {"ID": "a2", "Created": "garbled"}]}"#,
        )
        .unwrap();
        let mails: Vec<Mail> = page.messages.into_iter().map(Mail::from).collect();
        assert_eq!(mails[0].message_id, "m1@x");
        assert_eq!(mails[0].to, ["a@example.com"]);
        assert_eq!(mails[0].created.map(|c| c.timestamp_millis()), Some(1_796_464_800_500));
        assert_eq!((mails[1].subject.as_str(), mails[1].created), ("", None));
    }
}
