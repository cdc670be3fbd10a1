//! The e-mails the notification service sent, as Mailpit's web API lists them, and what each
//! subject says (its kind and order id: the subjects are in
//! `command-services/notification/src/templates.rs`).

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use uuid::Uuid;

/// Messages per page: a few hundred kB of JSON.
const PAGE: usize = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MailKind {
    OrderConfirmed,
    OrderRejected,
    OrderCancelled,
    PaymentReceived,
}

impl MailKind {
    pub const ALL: [MailKind; 4] =
        [MailKind::OrderConfirmed, MailKind::OrderRejected, MailKind::OrderCancelled, MailKind::PaymentReceived];
}

/// The kind and order of a notification's subject; None for any other mail.
pub fn classify(subject: &str) -> Option<(MailKind, Uuid)> {
    let id = subject.split_whitespace().find_map(|w| Uuid::try_parse(w).ok())?;
    let kind = if subject.starts_with("Payment received for order ") {
        MailKind::PaymentReceived
    } else if !subject.starts_with("Your order ") {
        return None;
    } else if subject.ends_with(" is confirmed") {
        MailKind::OrderConfirmed
    } else if subject.ends_with(" is cancelled") {
        MailKind::OrderCancelled
    } else if subject.ends_with(" could not be completed") {
        MailKind::OrderRejected
    } else {
        return None;
    };
    Some((kind, id))
}

#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    messages: Vec<Message>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(rename = "ID")]
    id: String,
    #[serde(rename = "Subject", default)]
    subject: String,
    /// RFC 3339; parsed leniently (a message whose time cannot be read is kept).
    #[serde(rename = "Created", default)]
    created: String,
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

pub struct Mailpit {
    http: reqwest::Client,
    base: String,
}

impl Mailpit {
    pub fn new(http: reqwest::Client, base: &str) -> Self {
        Mailpit { http, base: base.trim_end_matches('/').to_owned() }
    }

    /// (messages held, messages deleted since Mailpit started). Mailpit keeps only the newest
    /// 500 messages unless started with `--max 0`: deletions during a run mean some of its
    /// mail may be gone, which the audit must say.
    pub async fn counts(&self) -> anyhow::Result<(u64, u64)> {
        let url = format!("{}/api/v1/info", self.base);
        let info: Info = self.http.get(&url).send().await?.error_for_status()?.json().await.context("Mailpit info")?;
        Ok((info.messages, info.runtime.map_or(0, |r| r.deleted)))
    }

    /// The subjects of the messages received since `since`. Pages newest first and stops at
    /// the first page that reaches back before `since`, so mail of earlier runs is mostly not
    /// read at all. A message seen twice (new mail shifts the pages while they are read) is
    /// counted once.
    pub async fn subjects_since(&self, since: DateTime<Utc>) -> anyhow::Result<Vec<String>> {
        let mut seen = HashSet::new();
        let mut subjects = Vec::new();
        let mut start = 0;
        loop {
            let url = format!("{}/api/v1/messages?start={start}&limit={PAGE}", self.base);
            let page: Page = self
                .http
                .get(&url)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await
                .with_context(|| format!("GET {url}"))?;
            let n = page.messages.len();
            let mut reached_older = false;
            for m in page.messages {
                let created = DateTime::parse_from_rfc3339(&m.created).ok();
                if created.is_some_and(|c| c < since) {
                    reached_older = true;
                    continue;
                }
                if seen.insert(m.id) {
                    subjects.push(m.subject);
                }
            }
            if n < PAGE || reached_older {
                return Ok(subjects);
            }
            start += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0195f2a4-7c1e-7d40-8000-000000000001";

    #[test]
    fn every_notification_subject_is_classified_with_its_order() {
        let id = Uuid::parse_str(ID).unwrap();
        assert_eq!(classify(&format!("Your order {ID} is confirmed")), Some((MailKind::OrderConfirmed, id)));
        assert_eq!(classify(&format!("Your order {ID} is cancelled")), Some((MailKind::OrderCancelled, id)));
        assert_eq!(classify(&format!("Your order {ID} could not be completed")), Some((MailKind::OrderRejected, id)));
        assert_eq!(classify(&format!("Payment received for order {ID}")), Some((MailKind::PaymentReceived, id)));
    }

    #[test]
    fn other_mail_is_not_classified() {
        assert_eq!(classify("Welcome to the shop"), None);
        assert_eq!(classify(&format!("Your order {ID} has shipped")), None);
        assert_eq!(classify("Your order 12345 is confirmed"), None, "no order id");
    }
}
