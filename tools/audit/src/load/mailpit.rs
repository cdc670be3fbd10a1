//! Every message Mailpit holds (the `mailpit` crate pages through them). The local stack runs
//! Mailpit with `--max 0`, so it deletes nothing.

use crate::model::Mail;

pub async fn read(http: &reqwest::Client, base: &str) -> anyhow::Result<Vec<Mail>> {
    let mails = mailpit::Mailpit::new(http.clone(), base).messages(None).await?;
    Ok(mails.into_iter().map(|m| Mail { id: m.id, subject: m.subject, to: m.to }).collect())
}
