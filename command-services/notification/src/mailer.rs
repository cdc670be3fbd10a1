//! Outgoing e-mail. [`Mailer`] is what the handler needs; [`Smtp`] delivers over plain SMTP
//! (Mailpit in the local stack), so tests can hand the handler another one.

use crate::templates::Mail;
use anyhow::Context;
use async_trait::async_trait;
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use std::time::Duration;

/// The sender of every e-mail.
pub const FROM: &str = "shop@example.com";

/// One e-mail, addressed.
#[derive(Debug, Clone)]
pub struct Letter<'a> {
    /// Id of the event that caused it; becomes the `Message-ID`, so that a duplicate that slips
    /// through (crash between SMTP and our `sent` row) is recognisable downstream.
    pub event_id: &'a str,
    pub to_name: &'a str,
    pub to_email: &'a str,
    pub mail: &'a Mail,
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// It will never go out as it is: a bad address, or the server refused it for good (5xx).
    #[error("undeliverable: {0}")]
    Undeliverable(String),
    /// The server cannot take it now (down, busy, timed out, 4xx): try again later.
    #[error("smtp unavailable: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait Mailer: Send + Sync {
    /// Resolves once the server accepted the e-mail.
    async fn send(&self, letter: &Letter<'_>) -> Result<(), SendError>;
}

pub struct Smtp {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Smtp {
    /// Plain SMTP (no TLS, no auth) to `host:port`. Nothing is dialled until the first send.
    pub fn new(addr: &str) -> anyhow::Result<Self> {
        let (host, port) = addr.rsplit_once(':').with_context(|| format!("SMTP address {addr:?} is not host:port"))?;
        let port: u16 = port.parse().with_context(|| format!("SMTP port in {addr:?}"))?;
        let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(port)
            // lettre waits 60 s by default; an outage should turn into a quick retry instead.
            .timeout(Some(Duration::from_secs(10)))
            .build();
        Ok(Self { transport, from: Mailbox::new(Some("Shop".into()), FROM.parse()?) })
    }
}

#[async_trait]
impl Mailer for Smtp {
    async fn send(&self, letter: &Letter<'_>) -> Result<(), SendError> {
        let message = build(&self.from, letter)?;
        self.transport.send(message).await.map(drop).map_err(|e| {
            if e.is_permanent() {
                SendError::Undeliverable(e.to_string())
            } else {
                SendError::Unavailable(e.to_string())
            }
        })
    }
}

/// The RFC 5322 message for a letter.
pub fn build(from: &Mailbox, letter: &Letter<'_>) -> Result<Message, SendError> {
    let address: Address = letter
        .to_email
        .parse()
        .map_err(|e| SendError::Undeliverable(format!("recipient {:?}: {e}", letter.to_email)))?;
    Message::builder()
        .message_id(Some(format!("<{}@notification.shop>", letter.event_id)))
        .from(from.clone())
        .to(Mailbox::new(Some(letter.to_name.to_owned()), address))
        .subject(letter.mail.subject.as_str())
        .header(ContentType::TEXT_PLAIN)
        .body(letter.mail.body.clone())
        .map_err(|e| SendError::Undeliverable(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter<'a>(to_email: &'a str, mail: &'a Mail) -> Letter<'a> {
        Letter { event_id: "0195f2a4-7c1e-7d40-8000-0000000000aa", to_name: "Alice Doe", to_email, mail }
    }

    #[test]
    fn a_letter_becomes_a_plain_text_message_from_the_shop() {
        let mail = Mail { subject: "Your order o1 is confirmed".into(), body: "Hello Alice,\n".into() };
        let from = Mailbox::new(Some("Shop".into()), FROM.parse().unwrap());
        let message = build(&from, &letter("alice@example.com", &mail)).unwrap();
        let text = String::from_utf8(message.formatted()).unwrap();
        assert!(text.contains("From: Shop <shop@example.com>"), "{text}");
        assert!(text.contains("To: \"Alice Doe\" <alice@example.com>"), "{text}");
        assert!(text.contains("Subject: Your order o1 is confirmed"), "{text}");
        assert!(text.contains("Message-ID: <0195f2a4-7c1e-7d40-8000-0000000000aa@notification.shop>"), "{text}");
        assert!(text.contains("Content-Type: text/plain"), "{text}");
        assert!(text.contains("Hello Alice,"), "{text}");
    }

    #[test]
    fn a_bad_address_is_undeliverable_not_retried() {
        let mail = Mail { subject: "s".into(), body: "b".into() };
        let from = Mailbox::new(None, FROM.parse().unwrap());
        assert!(matches!(build(&from, &letter("not an address", &mail)), Err(SendError::Undeliverable(_))));
    }

    #[tokio::test]
    async fn an_unreachable_server_is_an_outage_to_retry() {
        // Nothing listens on port 1 of the loopback: the connection is refused at once.
        let smtp = Smtp::new("127.0.0.1:1").unwrap();
        let mail = Mail { subject: "s".into(), body: "b".into() };
        let result = smtp.send(&letter("alice@example.com", &mail)).await;
        assert!(matches!(result, Err(SendError::Unavailable(_))), "{result:?}");
    }

    // The transport's connection pool spawns its janitor task, hence a runtime.
    #[tokio::test]
    async fn the_smtp_address_must_be_host_and_port() {
        assert!(Smtp::new("127.0.0.1:1025").is_ok());
        assert!(Smtp::new("mailpit").is_err());
        assert!(Smtp::new("mailpit:smtp").is_err());
    }
}
