//! Every message Mailpit holds, through its HTTP API (`GET /api/v1/messages`, newest first,
//! in pages). The local stack runs Mailpit with `--max 0`, so it deletes nothing.

use crate::model::Mail;
use anyhow::Context;
use serde::Deserialize;
use std::collections::HashSet;

const PAGE: usize = 500;

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
    #[serde(rename = "To", default)]
    to: Vec<Address>,
}

#[derive(Deserialize)]
struct Address {
    #[serde(rename = "Address", default)]
    address: String,
}

pub async fn read(http: &reqwest::Client, base: &str) -> anyhow::Result<Vec<Mail>> {
    let base = base.trim_end_matches('/');
    let mut seen = HashSet::new();
    let mut mails = Vec::new();
    let mut start = 0;
    loop {
        let url = format!("{base}/api/v1/messages?start={start}&limit={PAGE}");
        let page: Page = http
            .get(&url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .with_context(|| format!("GET {url}"))?
            .json()
            .await
            .with_context(|| format!("GET {url}: not Mailpit's JSON"))?;
        let n = page.messages.len();
        for m in page.messages {
            // New mail shifts the pages while they are read: a message seen twice counts once.
            if seen.insert(m.id.clone()) {
                mails.push(Mail { id: m.id, subject: m.subject, to: m.to.into_iter().map(|a| a.address).collect() });
            }
        }
        if n < PAGE {
            return Ok(mails);
        }
        start += n;
    }
}
