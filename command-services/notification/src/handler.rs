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
use std::collections::{HashMap, HashSet};
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

/// One message of a batch as this service sees it.
struct Item<'a> {
    message_id: &'a str,
    key: &'a str,
    action: Action<'a>,
    span: tracing::Span,
}

/// What the tables know of the orders and customers a batch's e-mails are about.
#[derive(Default)]
struct Facts {
    orders: HashMap<String, OrderFacts>,
    contacts: HashMap<String, Contact>,
}

impl Facts {
    fn order(&self, order_id: &str) -> Result<&OrderFacts, HandlerError> {
        self.orders.get(order_id).ok_or_else(|| not_known_yet(format_args!("order {order_id}")))
    }

    fn contact(&self, customer_id: &str) -> Result<&Contact, HandlerError> {
        self.contacts.get(customer_id).ok_or_else(|| not_known_yet(format_args!("customer {customer_id}")))
    }

    /// Who gets the e-mail for `notice` (customer id and contact), and what it says.
    fn compose(&self, notice: &Notice<'_>) -> Result<(String, Contact, Mail), HandlerError> {
        let about_order = |order_id: &str| -> Result<(&OrderFacts, &Contact, Money), HandlerError> {
            let order = self.order(order_id)?;
            Ok((order, self.contact(&order.customer_id)?, money(order.total_cents, &order.currency)?))
        };
        Ok(match *notice {
            Notice::OrderConfirmed { order_id } => {
                let (order, contact, total) = about_order(order_id)?;
                (order.customer_id.clone(), contact.clone(), templates::order_confirmed(&contact.name, order_id, total))
            }
            Notice::OrderRejected { order_id, reason } => {
                let (order, contact, total) = about_order(order_id)?;
                let mail = templates::order_rejected(&contact.name, order_id, total, reason);
                (order.customer_id.clone(), contact.clone(), mail)
            }
            Notice::OrderCancelled { order_id, reason } => {
                let (order, contact, total) = about_order(order_id)?;
                let mail = templates::order_cancelled(&contact.name, order_id, total, reason);
                (order.customer_id.clone(), contact.clone(), mail)
            }
            Notice::PaymentConfirmed { order_id, customer_id, amount_cents, currency } => {
                let contact = self.contact(customer_id)?;
                let mail = templates::payment_confirmed(&contact.name, order_id, money(amount_cents, currency)?);
                (customer_id.to_owned(), contact.clone(), mail)
            }
        })
    }
}

impl Notifier {
    /// A notifier that claims e-mails as `instance` (unique per process).
    pub fn new(pool: PgPool, mailer: Arc<dyn Mailer>, instance: impl Into<String>) -> Self {
        Self { pool, mailer, instance: instance.into(), unrecorded: Mutex::default() }
    }

    /// Apply a batch with a few statements whatever its size: the facts it brings, then its
    /// e-mails (which of them were sent, claims, the facts they need, each read at once), sent
    /// per key in order with the keys at once, and recorded together. Facts first is safe: they
    /// never change, so learning one early changes nothing. The first error is returned once
    /// the e-mails that could go out went out and are recorded (the consumer then hands each
    /// message to [`Handler::handle`], which finds those in `sent`).
    async fn apply(&self, items: &[Item<'_>]) -> Result<(), HandlerError> {
        let mut contacts = Vec::new();
        let mut orders = Vec::new();
        let mut notices: Vec<(&Item<'_>, &Notice<'_>)> = Vec::new();
        for item in items {
            match &item.action {
                Action::RememberContact { customer_id, name, email } => contacts.push((*customer_id, *name, *email)),
                Action::RememberOrder { order_id, customer_id, total_cents, currency } => orders.push((
                    *order_id,
                    OrderFacts {
                        customer_id: (*customer_id).to_owned(),
                        total_cents: *total_cents,
                        currency: (*currency).to_owned(),
                    },
                )),
                // A message delivered twice in one batch is one e-mail.
                Action::Notify(notice) if !notices.iter().any(|(n, _)| n.message_id == item.message_id) => {
                    notices.push((item, notice));
                }
                Action::Notify(_) | Action::Ignore => {}
            }
        }
        store::remember_contacts(&self.pool, &contacts).await?;
        store::remember_orders(&self.pool, &orders).await?;
        if notices.is_empty() {
            return Ok(());
        }
        // E-mails this process sent but could not record yet: recorded now, never sent again.
        let mut delivered: Vec<Delivery> = Vec::new();
        {
            let unrecorded = self.unrecorded.lock().expect("unrecorded");
            notices.retain(|(item, _)| match unrecorded.get(item.message_id) {
                Some(delivery) => {
                    delivered.push(delivery.clone());
                    false
                }
                None => true,
            });
        }
        let ids: Vec<&str> = notices.iter().map(|(item, _)| item.message_id).collect();
        let sent = store::already_sent(&self.pool, &ids).await?;
        notices.retain(|(item, _)| !sent.contains(item.message_id));
        let ids: Vec<&str> = notices.iter().map(|(item, _)| item.message_id).collect();
        let ours = if ids.is_empty() {
            HashSet::new()
        } else {
            store::claim(&self.pool, &ids, &self.instance, CLAIM_LEASE).await?
        };
        let mut first_error = None;
        if notices.iter().any(|(item, _)| !ours.contains(item.message_id)) {
            first_error = Some(HandlerError::Transient(anyhow::anyhow!("another instance is sending this e-mail")));
        }
        notices.retain(|(item, _)| ours.contains(item.message_id));
        let facts = self.facts(notices.iter().map(|(_, notice)| *notice)).await?;

        // Each key's e-mails in order, the keys at once.
        let mut keys: Vec<(&str, Vec<(&Item<'_>, &Notice<'_>)>)> = Vec::new();
        for (item, notice) in notices {
            match keys.iter_mut().find(|(k, _)| *k == item.key) {
                Some((_, list)) => list.push((item, notice)),
                None => keys.push((item.key, vec![(item, notice)])),
            }
        }
        let runs = keys.into_iter().map(|(_, list)| {
            let facts = &facts;
            async move {
                let mut done = Vec::new();
                for (item, notice) in list {
                    match self.send(item.message_id, notice, facts).instrument(item.span.clone()).await {
                        Ok(delivery) => done.push(delivery),
                        Err(e) => return (done, Some(e)),
                    }
                }
                (done, None)
            }
        });
        for (done, error) in futures::future::join_all(runs).await {
            delivered.extend(done);
            first_error = first_error.or(error);
        }
        self.record(delivered).await?;
        first_error.map_or(Ok(()), Err)
    }

    /// The orders and contacts `notices` need, in two reads.
    async fn facts<'n>(&self, notices: impl Iterator<Item = &'n Notice<'n>> + Clone) -> Result<Facts, HandlerError> {
        let order_ids: Vec<&str> =
            notices.clone().filter(|n| !matches!(n, Notice::PaymentConfirmed { .. })).map(|n| n.order_id()).collect();
        let orders = if order_ids.is_empty() { HashMap::new() } else { store::orders(&self.pool, &order_ids).await? };
        let mut customer_ids: Vec<&str> = orders.values().map(|o| o.customer_id.as_str()).collect();
        customer_ids.extend(notices.filter_map(|n| match n {
            Notice::PaymentConfirmed { customer_id, .. } => Some(*customer_id),
            _ => None,
        }));
        let contacts =
            if customer_ids.is_empty() { HashMap::new() } else { store::contacts(&self.pool, &customer_ids).await? };
        Ok(Facts { orders, contacts })
    }

    /// Send one claimed e-mail; once the SMTP server accepted it, it is remembered as
    /// unrecorded until [`Notifier::record`] wrote it down.
    async fn send(&self, message_id: &str, notice: &Notice<'_>, facts: &Facts) -> Result<Delivery, HandlerError> {
        let (customer_id, contact, mail) = facts.compose(notice)?;
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
        Ok(delivery)
    }

    /// Record sent e-mails, retrying in place for [`RECORD_PATIENCE`]; then they are forgotten
    /// here, or left for the consumer's next attempt (which records them without sending).
    async fn record(&self, deliveries: Vec<Delivery>) -> Result<(), HandlerError> {
        if deliveries.is_empty() {
            return Ok(());
        }
        let start = Instant::now();
        let mut pause = Duration::from_millis(100);
        loop {
            match store::record_sent(&self.pool, &deliveries).await {
                Ok(()) => {
                    let mut unrecorded = self.unrecorded.lock().expect("unrecorded");
                    for d in &deliveries {
                        unrecorded.remove(&d.message_id);
                    }
                    return Ok(());
                }
                Err(e) if start.elapsed() < RECORD_PATIENCE => {
                    tracing::warn!(error = %e, count = deliveries.len(), "recording sent e-mails; retrying");
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
        let item = Item {
            message_id: &envelope.message_id,
            key: envelope.message.key(),
            action: plan(&envelope.message),
            span: tracing::Span::current(),
        };
        self.apply(std::slice::from_ref(&item)).await
    }

    /// A batch in a few statements, its e-mails sent per key in order and the keys at once:
    /// an e-mail waits for its SMTP round trip, and one after the other the service sent fewer
    /// than the shop makes at 100 orders/s. Claims and the sent log keep each e-mail single,
    /// however the batch is cut.
    async fn handle_batch(&self, batch: &[messaging::consumer::Delivery]) -> Result<(), HandlerError> {
        let items: Vec<Item<'_>> = batch
            .iter()
            .map(|d| Item {
                message_id: &d.envelope.message_id,
                key: d.envelope.message.key(),
                action: plan(&d.envelope.message),
                span: d.span.clone(),
            })
            .collect();
        self.apply(&items).await
    }
}
