//! Outgoing e-mail. [`Mailer`] is what the handler needs; [`Smtp`] delivers over SMTP (Mailpit
//! in the local stack), so tests can hand the handler another one.
//!
//! The server (`SHOP_SMTP_ADDR`) is `host:port` for plain SMTP without a login (the local
//! stack), or a URL: `smtp://user:password@host:587?tls=required` (STARTTLS, refused without it),
//! `?tls=opportunistic` (STARTTLS when offered), `smtps://…:465` (TLS from the first byte);
//! `&ca_file=/etc/shop/ca.crt` adds a root the server's certificate may chain to (the system's
//! roots are trusted too). A URL without a login takes it from `SHOP_SMTP_USERNAME` and
//! `SHOP_SMTP_PASSWORD` when they are set.

use crate::templates::Mail;
use anyhow::Context;
use async_trait::async_trait;
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
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
    /// A transport to `addr` (see the module's documentation). Nothing is dialled until the
    /// first send.
    pub fn new(addr: &str) -> anyhow::Result<Self> {
        Self::with_env(addr, |name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    fn with_env(addr: &str, env: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let builder = if addr.contains("://") {
            let url = url::Url::parse(addr).with_context(|| format!("SMTP address {:?}", redacted(addr)))?;
            let host = url.host_str().with_context(|| format!("SMTP address {:?} has no host", redacted(addr)))?;
            let query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
            let param = |key: &str| query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
            let mut tls = TlsParameters::builder(host.to_owned());
            if let Some(file) = param("ca_file") {
                let pem = std::fs::read(file).with_context(|| format!("SMTP ca_file {file}"))?;
                tls = tls.add_root_certificate(Certificate::from_pem(&pem).context("SMTP ca_file")?);
            }
            let tls = tls.build().context("SMTP TLS settings")?;
            let (tls, default_port) = match (url.scheme(), param("tls")) {
                ("smtp", None) => (Tls::None, 25),
                ("smtp", Some("required")) => (Tls::Required(tls), 587),
                ("smtp", Some("opportunistic")) => (Tls::Opportunistic(tls), 587),
                ("smtps", None) => (Tls::Wrapper(tls), 465),
                (scheme, mode) => anyhow::bail!(
                    "SMTP address {:?}: smtp:// (with ?tls=required or ?tls=opportunistic) or smtps://, not {scheme}:// {}",
                    redacted(addr),
                    mode.map(|m| format!("with tls={m}")).unwrap_or_default()
                ),
            };
            let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
                .port(url.port().unwrap_or(default_port))
                .tls(tls);
            let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
            let login = match url.username() {
                "" => env(USERNAME_VAR).map(|user| (user, env(PASSWORD_VAR).unwrap_or_default())),
                user => Some((decode(user), decode(url.password().unwrap_or_default()))),
            };
            if let Some((user, password)) = login {
                builder = builder.credentials(Credentials::new(user, password));
            }
            builder
        } else {
            let (host, port) =
                addr.rsplit_once(':').with_context(|| format!("SMTP address {addr:?} is not host:port or a URL"))?;
            let port: u16 = port.parse().with_context(|| format!("SMTP port in {addr:?}"))?;
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host).port(port)
        };
        // lettre waits 60 s by default; an outage should turn into a quick retry instead.
        let transport = builder.timeout(Some(Duration::from_secs(10))).build();
        Ok(Self { transport, from: Mailbox::new(Some("Shop".into()), FROM.parse()?) })
    }
}

/// The variables a URL without a login takes it from.
pub const USERNAME_VAR: &str = "SHOP_SMTP_USERNAME";
pub const PASSWORD_VAR: &str = "SHOP_SMTP_PASSWORD";

/// `addr` with its password replaced by `***`.
fn redacted(addr: &str) -> String {
    match url::Url::parse(addr) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some("***"));
            url.to_string()
        }
        _ => addr.to_owned(),
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
    async fn the_smtp_address_is_host_and_port_or_a_url() {
        let none = |_: &str| None;
        assert!(Smtp::with_env("127.0.0.1:1025", none).is_ok());
        assert!(Smtp::with_env("mailpit", none).is_err());
        assert!(Smtp::with_env("mailpit:smtp", none).is_err());
        for good in [
            "smtp://relay:25",
            "smtp://u:p@relay:587?tls=required",
            "smtp://relay?tls=opportunistic",
            "smtps://u:p@relay",
        ] {
            assert!(Smtp::with_env(good, none).is_ok(), "{good}");
        }
        for (bad, says) in [
            ("smtps://u:secret@relay?tls=required", "smtps://"),
            ("smtp://u:secret@relay?tls=always", "tls=always"),
            ("imap://u:secret@relay", "not imap://"),
            ("smtp://u:secret@relay?tls=required&ca_file=/nonexistent/ca.crt", "ca_file"),
        ] {
            let error = format!("{:#}", Smtp::with_env(bad, none).err().expect(bad));
            assert!(error.contains(says), "{bad}: {error}");
            assert!(!error.contains("secret"), "{bad}: the password shows: {error}");
        }
    }
}
