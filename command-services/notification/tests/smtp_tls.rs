//! The mailer over STARTTLS with a login, against the local stack's Mailpit, which offers
//! STARTTLS with the certificate of the stack's CA (`<data>/tls/ca.crt`). Needs the stack:
//! `cargo test -p notification-service -- --ignored` (data folder from `SHOP_STACK_DATA`,
//! default `.stack-data`).

use notification_service::mailer::{Letter, Mailer, SendError, Smtp};
use notification_service::templates::Mail;
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn ca() -> PathBuf {
    let data = std::env::var_os("SHOP_STACK_DATA").map_or_else(|| repo().join(".stack-data"), PathBuf::from);
    let ca = data.join("tls/ca.crt");
    assert!(ca.exists(), "no {} (./stack up makes it)", ca.display());
    ca
}

fn smtp() -> String {
    runtime::config::local("mailpit_smtp")
}

async fn send(addr: &str, to: &str, subject: &str) -> Result<(), SendError> {
    let mail = Mail { subject: subject.into(), body: "sent over STARTTLS\n".into() };
    let letter = Letter { event_id: &uuid::Uuid::new_v4().to_string(), to_name: "TLS Test", to_email: to, mail: &mail };
    Smtp::new(addr).expect("mailer").send(&letter).await
}

#[tokio::test]
#[ignore = "needs the running stack (Mailpit)"]
async fn starttls_with_a_login_delivers_and_an_unknown_ca_is_refused() {
    let to = format!("tls-{}@example.com", uuid::Uuid::new_v4().simple());
    let secure = format!("smtp://shop:secret@{}?tls=required&ca_file={}", smtp(), ca().display());
    send(&secure, &to, "over STARTTLS").await.expect("delivered over STARTTLS");

    let mailpit =
        mailpit::Mailpit::new(reqwest::Client::new(), &format!("http://{}", runtime::config::local("mailpit")));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found = mailpit.search(&format!("to:\"{to}\"")).await.expect("Mailpit");
        if found.iter().any(|m| m.subject == "over STARTTLS") {
            break;
        }
        assert!(Instant::now() < deadline, "the e-mail to {to} did not arrive");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Without the stack's CA the server's certificate is not trusted: nothing is sent, and the
    // mailer says why (a temporary failure, so the notification is tried again later).
    let untrusted = format!("smtp://shop:secret@{}?tls=required", smtp());
    let refused = send(&untrusted, &to, "must not arrive").await.expect_err("an untrusted certificate");
    let text = refused.to_string();
    assert!(text.to_lowercase().contains("certificate"), "{text}");
}
