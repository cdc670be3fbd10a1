//! The real SMTP path against Mailpit. Ignored by default:
//! `cargo test -p notification-service --test smtp -- --ignored` (server from `SHOP_TEST_SMTP`,
//! default the local stack's `127.0.0.1:1025`).

use notification_service::mailer::{Letter, Mailer, Smtp};
use notification_service::templates::Mail;

#[tokio::test]
#[ignore = "needs an SMTP server (Mailpit)"]
async fn the_smtp_server_accepts_a_letter() {
    let addr = std::env::var("SHOP_TEST_SMTP").unwrap_or_else(|_| "127.0.0.1:1025".into());
    let smtp = Smtp::new(&addr).unwrap();
    let mail = Mail { subject: "Your order o-smtp-test is confirmed".into(), body: "Hello Alice,\n".into() };
    let letter = Letter { event_id: "smtp-test", to_name: "Alice", to_email: "alice@example.com", mail: &mail };
    smtp.send(&letter).await.unwrap();
}

/// The receiving end of "e-mail once": a send repeated after a crash (the server accepted the
/// e-mail, the process died before its sent log recorded it) carries the same Message-ID, and
/// the stack's Mailpit (`--ignore-duplicate-ids`) keeps one copy. A real mailbox provider does
/// the same by Message-ID; this shows the local stack keeps that promise too.
#[tokio::test]
#[ignore = "needs the running stack (Mailpit)"]
async fn an_email_sent_twice_lands_once() {
    use std::time::{Duration, Instant};
    let smtp = Smtp::new(&runtime::config::local("mailpit_smtp")).unwrap();
    let to = format!("once-{}@example.com", uuid::Uuid::new_v4().simple());
    let (event, other) = (uuid::Uuid::new_v4().to_string(), uuid::Uuid::new_v4().to_string());
    let twice = Mail { subject: "Sent twice".into(), body: "Hello Alice,\n".into() };
    let letter = Letter { event_id: &event, to_name: "Alice", to_email: &to, mail: &twice };
    smtp.send(&letter).await.expect("first send");
    smtp.send(&letter).await.expect("the repeated send is accepted too");
    // Another event's e-mail, sent after both copies: once it is there, so is every copy kept.
    let next = Mail { subject: "Another event".into(), body: "Hello Alice,\n".into() };
    smtp.send(&Letter { event_id: &other, mail: &next, ..letter }).await.expect("another e-mail");

    let mailpit =
        mailpit::Mailpit::new(reqwest::Client::new(), &format!("http://{}", runtime::config::local("mailpit")));
    let deadline = Instant::now() + Duration::from_secs(20);
    let found = loop {
        let found = mailpit.search(&format!("to:\"{to}\"")).await.expect("Mailpit");
        if found.iter().any(|m| m.subject == "Another event") {
            break found;
        }
        assert!(Instant::now() < deadline, "the e-mails to {to} did not arrive");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let copies = found.iter().filter(|m| m.subject == "Sent twice").count();
    assert_eq!(copies, 1, "one e-mail sent twice: {copies} copies in the mailbox");
}
