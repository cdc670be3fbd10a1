//! The consumer side: each event is planned ([`crate::plan`]), then applied — a table update
//! or one e-mail, sent at most once per event id:
//! - an e-mail is claimed (`sending`, per event id and instance) before it is sent, so two
//!   instances given the same event (a rebalance moved its partition while the first was still
//!   at it) do not both send: the second waits (a transient error, retried) until the first
//!   has recorded it, and takes over only a claim older than [`CLAIM_LEASE`];
//! - once the SMTP server accepted it, recording it (`sent`, the claim dropped) is retried in
//!   place, and an e-mail this process sent but could not record yet is never sent again by it:
//!   a database outage right after sending does not send twice.
//!
//! What is left: a process that dies (or stalls past the lease) between the SMTP server's
//! acceptance and its `sent` row; its e-mail goes out once more when the lease has run out.

use crate::mailer::{Letter, Mailer, SendError};
use crate::plan::{Action, Notice, plan};
use crate::store::{self, Contact, Delivery, OrderFacts};
use crate::templates::{self, Mail};
use async_trait::async_trait;
use domain::values::{Currency, Money};
use messaging::consumer::{Envelope, Handler, HandlerError};
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::Instrument;

/// How long a claim keeps another instance from sending the same e-mail: far longer than a
/// send and its record take, so only a holder that died or stalled loses it.
pub const CLAIM_LEASE: Duration = Duration::from_secs(60);
/// How long recording a sent e-mail is retried in place before the event is handed back to
/// the consumer's retries (it is not sent again by this process either way).
const RECORD_PATIENCE: Duration = Duration::from_secs(20);

pub struct Notifier {
    pool: PgPool,
    mailer: Arc<dyn Mailer>,
    /// This process, in the claims it takes.
    instance: String,
    /// E-mails sent but not recorded yet, by event id: recorded, never sent again, on retry.
    unrecorded: Mutex<HashMap<String, Delivery>>,
}

impl From<SendError> for HandlerError {
    fn from(e: SendError) -> Self {
        match e {
            SendError::Undeliverable(_) => HandlerError::Permanent(e.to_string()),
            // An outage: the consumer retries with backoff, then parks it on the DLQ.
            SendError::Unavailable(_) => HandlerError::Transient(e.into()),
        }
    }
}

/// Events from different topics arrive in any order: a fact we lack may still be on its way,
/// so the consumer retries with backoff.
fn not_known_yet(what: std::fmt::Arguments<'_>) -> HandlerError {
    HandlerError::Transient(anyhow::anyhow!("{what} not known yet"))
}

fn money(cents: i64, currency: &str) -> Result<Money, HandlerError> {
    Currency::parse(currency).map(|c| Money::new(cents, c)).map_err(|e| HandlerError::Permanent(e.to_string()))
}

impl Notifier {
    /// A notifier that claims e-mails as `instance` (unique per process).
    pub fn new(pool: PgPool, mailer: Arc<dyn Mailer>, instance: impl Into<String>) -> Self {
        Self { pool, mailer, instance: instance.into(), unrecorded: Mutex::default() }
    }

    async fn contact(&self, customer_id: &str) -> Result<Contact, HandlerError> {
        store::contact(&self.pool, customer_id)
            .await?
            .ok_or_else(|| not_known_yet(format_args!("customer {customer_id}")))
    }

    async fn order(&self, order_id: &str) -> Result<OrderFacts, HandlerError> {
        store::order(&self.pool, order_id).await?.ok_or_else(|| not_known_yet(format_args!("order {order_id}")))
    }

    /// Who gets the e-mail for `notice`, and what it says.
    async fn compose(&self, notice: &Notice<'_>) -> Result<(String, Contact, Mail), HandlerError> {
        Ok(match *notice {
            Notice::OrderConfirmed { order_id } => {
                let order = self.order(order_id).await?;
                let contact = self.contact(&order.customer_id).await?;
                let total = money(order.total_cents, &order.currency)?;
                let mail = templates::order_confirmed(&contact.name, order_id, total);
                (order.customer_id, contact, mail)
            }
            Notice::OrderRejected { order_id, reason } => {
                let order = self.order(order_id).await?;
                let contact = self.contact(&order.customer_id).await?;
                let total = money(order.total_cents, &order.currency)?;
                let mail = templates::order_rejected(&contact.name, order_id, total, reason);
                (order.customer_id, contact, mail)
            }
            Notice::OrderCancelled { order_id, reason } => {
                let order = self.order(order_id).await?;
                let contact = self.contact(&order.customer_id).await?;
                let total = money(order.total_cents, &order.currency)?;
                let mail = templates::order_cancelled(&contact.name, order_id, total, reason);
                (order.customer_id, contact, mail)
            }
            Notice::PaymentConfirmed { order_id, customer_id, amount_cents, currency } => {
                let contact = self.contact(customer_id).await?;
                let mail = templates::payment_confirmed(&contact.name, order_id, money(amount_cents, currency)?);
                (customer_id.to_owned(), contact, mail)
            }
        })
    }

    async fn notify(&self, message_id: &str, notice: &Notice<'_>) -> Result<(), HandlerError> {
        let unrecorded = self.unrecorded.lock().expect("unrecorded").get(message_id).cloned();
        if let Some(delivery) = unrecorded {
            return self.record(delivery).await;
        }
        if store::already_sent(&self.pool, message_id).await? {
            tracing::debug!("already sent");
            return Ok(());
        }
        if !store::claim(&self.pool, message_id, &self.instance, CLAIM_LEASE).await? {
            return Err(HandlerError::Transient(anyhow::anyhow!("another instance is sending this e-mail")));
        }
        let (customer_id, contact, mail) = self.compose(notice).await?;
        let letter = Letter { event_id: message_id, to_name: &contact.name, to_email: &contact.email, mail: &mail };
        let span = tracing::info_span!(
            "send e-mail",
            otel.kind = "client",
            peer.service = "smtp",
            kind = notice.kind().as_str()
        );
        self.mailer.send(&letter).instrument(span).await?;
        let delivery = Delivery {
            message_id: message_id.to_owned(),
            kind: notice.kind(),
            order_id: notice.order_id().to_owned(),
            customer_id,
            recipient: contact.email,
            subject: mail.subject,
        };
        self.unrecorded.lock().expect("unrecorded").insert(message_id.to_owned(), delivery.clone());
        tracing::info!(kind = notice.kind().as_str(), order_id = notice.order_id(), "e-mail sent");
        self.record(delivery).await
    }

    /// Record a sent e-mail, retrying in place for [`RECORD_PATIENCE`]; then it is forgotten
    /// here, or left for the consumer's next attempt (which records it without sending).
    async fn record(&self, delivery: Delivery) -> Result<(), HandlerError> {
        let start = Instant::now();
        let mut pause = Duration::from_millis(100);
        loop {
            match store::record_sent(&self.pool, &delivery).await {
                Ok(()) => {
                    self.unrecorded.lock().expect("unrecorded").remove(&delivery.message_id);
                    return Ok(());
                }
                Err(e) if start.elapsed() < RECORD_PATIENCE => {
                    tracing::warn!(error = %e, message_id = delivery.message_id, "recording a sent e-mail; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[async_trait]
impl Handler for Notifier {
    #[tracing::instrument(skip_all, fields(message_id = %envelope.message_id, record = envelope.message.full_name()))]
    async fn handle(&self, envelope: &Envelope) -> Result<(), HandlerError> {
        match plan(&envelope.message) {
            Action::RememberContact { customer_id, name, email } => {
                store::remember_contact(&self.pool, customer_id, name, email).await?;
            }
            Action::RememberOrder { order_id, customer_id, total_cents, currency } => {
                store::remember_order(&self.pool, order_id, customer_id, total_cents, currency).await?;
            }
            Action::Notify(notice) => self.notify(&envelope.message_id, &notice).await?,
            Action::Ignore => {}
        }
        Ok(())
    }

    /// A batch's keys at once, each key's messages in order (an order's, or a customer's on
    /// the payment topic): an e-mail waits for its SMTP round trip, and one after the other the
    /// service sent fewer than the shop makes at 100 orders/s (minutes behind after a minute of
    /// it). Claims and the sent log keep each e-mail single, however the batch is cut.
    async fn handle_batch(&self, batch: &[messaging::consumer::Delivery]) -> Result<(), HandlerError> {
        messaging::consumer::per_key(self, batch).await
    }
}
