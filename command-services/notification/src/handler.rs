//! The consumer side: each event is planned ([`crate::plan`]), then applied — a table update
//! or one e-mail, sent at most once per event id (barring a crash between the SMTP server's
//! acceptance and the `sent` row).

use crate::mailer::{Letter, Mailer, SendError};
use crate::plan::{Action, Notice, plan};
use crate::store::{self, Contact, Delivery, OrderFacts};
use crate::templates::{self, Mail};
use async_trait::async_trait;
use domain::values::{Currency, Money};
use messaging::consumer::{Envelope, Handler, HandlerError};
use sqlx::PgPool;
use std::sync::Arc;
use tracing::Instrument;

pub struct Notifier {
    pool: PgPool,
    mailer: Arc<dyn Mailer>,
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
    pub fn new(pool: PgPool, mailer: Arc<dyn Mailer>) -> Self {
        Self { pool, mailer }
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
        if store::already_sent(&self.pool, message_id).await? {
            tracing::debug!("already sent");
            return Ok(());
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
            message_id,
            kind: notice.kind(),
            order_id: notice.order_id(),
            customer_id: &customer_id,
            recipient: &contact.email,
            subject: &mail.subject,
        };
        store::record_sent(&self.pool, &delivery).await?;
        tracing::info!(kind = notice.kind().as_str(), order_id = notice.order_id(), "e-mail sent");
        Ok(())
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
}
