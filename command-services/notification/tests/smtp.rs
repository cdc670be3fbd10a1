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
