//! Domain <-> wire. Events go out (domain event + aggregate id -> record); commands come in
//! (record -> target aggregate id + domain command). Bad content is a permanent
//! [`DecodeError::Invalid`], so the message is parked, not retried.

use crate::DecodeError;
use crate::records::*;
use domain::customer::CustomerEvent;
use domain::order::{OrderEvent, OrderLine as DomainLine};
use domain::payment::{AccountCommand, AccountEvent};
use domain::product::{ProductCommand, ProductEvent};
use domain::values::{Currency, CustomerId, Money, OrderId, ProductId, Quantity};

fn invalid(e: impl std::fmt::Display) -> DecodeError {
    DecodeError::Invalid(e.to_string())
}

pub fn order_id(s: &str) -> Result<OrderId, DecodeError> {
    OrderId::parse(s).map_err(invalid)
}
pub fn product_id(s: &str) -> Result<ProductId, DecodeError> {
    ProductId::parse(s).map_err(invalid)
}
pub fn customer_id(s: &str) -> Result<CustomerId, DecodeError> {
    CustomerId::parse(s).map_err(invalid)
}
fn quantity(n: i32) -> Result<Quantity, DecodeError> {
    Quantity::new(i64::from(n)).map_err(invalid)
}
fn money(cents: i64, currency: &str) -> Result<Money, DecodeError> {
    Ok(Money::new(cents, Currency::parse(currency).map_err(invalid)?))
}
fn clamp_i32(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

pub fn customer_event(id: CustomerId, event: &CustomerEvent) -> Message {
    match event {
        CustomerEvent::CustomerRegistered { name, email, owner, .. } => CustomerRegistered {
            customer_id: id.to_string(),
            name: name.as_str().to_owned(),
            email: email.as_str().to_owned(),
            owner: owner.clone(),
        }
        .into(),
    }
}

pub fn product_event(id: ProductId, event: &ProductEvent) -> Message {
    let product_id = id.to_string();
    match event {
        ProductEvent::ProductCreated { sku, name, price, stock, .. } => ProductCreated {
            product_id,
            sku: sku.as_str().to_owned(),
            name: name.as_str().to_owned(),
            price_cents: price.cents,
            currency: price.currency.to_string(),
            stock: clamp_i32(*stock),
        }
        .into(),
        ProductEvent::StockAdded { quantity } => StockAdded { product_id, quantity: clamp_i32(*quantity) }.into(),
        ProductEvent::StockReserved { order_id, quantity } => {
            StockReserved { product_id, order_id: order_id.to_string(), quantity: clamp_i32(*quantity) }.into()
        }
        ProductEvent::StockReservationFailed { order_id, requested, available } => StockReservationFailed {
            product_id,
            order_id: order_id.to_string(),
            requested: clamp_i32(*requested),
            available: i64::try_from(*available).unwrap_or(i64::MAX),
        }
        .into(),
        ProductEvent::StockReleased { order_id, quantity } => {
            StockReleased { product_id, order_id: order_id.to_string(), quantity: clamp_i32(*quantity) }.into()
        }
        ProductEvent::StockCommitted { order_id, quantity } => {
            StockCommitted { product_id, order_id: order_id.to_string(), quantity: clamp_i32(*quantity) }.into()
        }
        ProductEvent::StockReturned { order_id, quantity } => {
            StockReturned { product_id, order_id: order_id.to_string(), quantity: clamp_i32(*quantity) }.into()
        }
    }
}

pub fn order_event(id: OrderId, event: &OrderEvent) -> Message {
    let order_id = id.to_string();
    match event {
        OrderEvent::OrderPlaced { customer_id, lines, total, owner, .. } => OrderPlaced {
            order_id,
            customer_id: customer_id.to_string(),
            lines: lines
                .iter()
                .map(|l| OrderLine {
                    product_id: l.product_id.to_string(),
                    quantity: clamp_i32(l.quantity.get()),
                    unit_price_cents: l.unit_price.cents,
                })
                .collect(),
            total_cents: total.cents,
            currency: total.currency.to_string(),
            owner: owner.clone(),
        }
        .into(),
        OrderEvent::OrderConfirmed => OrderConfirmed { order_id }.into(),
        OrderEvent::OrderRejected { reason } => OrderRejected { order_id, reason: reason.clone(), code: None }.into(),
        OrderEvent::OrderCancellationRequested { reason } => {
            OrderCancellationRequested { order_id, reason: reason.clone() }.into()
        }
        OrderEvent::OrderCancelled { reason } => OrderCancelled { order_id, reason: reason.clone() }.into(),
    }
}

pub fn account_event(id: CustomerId, event: &AccountEvent) -> Message {
    let customer_id = id.to_string();
    match event {
        AccountEvent::AccountOpened { credit, .. } => {
            AccountOpened { customer_id, credit_cents: credit.cents, currency: credit.currency.to_string() }.into()
        }
        AccountEvent::PaymentAuthorized { order_id, amount } => PaymentAuthorized {
            customer_id,
            order_id: order_id.to_string(),
            amount_cents: amount.cents,
            currency: amount.currency.to_string(),
        }
        .into(),
        AccountEvent::PaymentDeclined { order_id, amount, reason } => PaymentDeclined {
            customer_id,
            order_id: order_id.to_string(),
            amount_cents: amount.cents,
            currency: amount.currency.to_string(),
            reason: reason.clone(),
        }
        .into(),
        AccountEvent::PaymentConfirmed { order_id, amount } => PaymentConfirmed {
            customer_id,
            order_id: order_id.to_string(),
            amount_cents: amount.cents,
            currency: amount.currency.to_string(),
        }
        .into(),
        AccountEvent::PaymentRefunded { order_id, amount } => PaymentRefunded {
            customer_id,
            order_id: order_id.to_string(),
            amount_cents: amount.cents,
            currency: amount.currency.to_string(),
        }
        .into(),
    }
}

/// A product command addressed to one product, from `product.commands`.
pub fn product_command(message: &Message) -> Result<Option<(ProductId, ProductCommand)>, DecodeError> {
    Ok(Some(match message {
        Message::ReserveStock(c) => (
            product_id(&c.product_id)?,
            ProductCommand::ReserveStock { order_id: order_id(&c.order_id)?, quantity: quantity(c.quantity)? },
        ),
        Message::ReleaseStock(c) => {
            (product_id(&c.product_id)?, ProductCommand::ReleaseStock { order_id: order_id(&c.order_id)? })
        }
        Message::CommitStock(c) => {
            (product_id(&c.product_id)?, ProductCommand::CommitStock { order_id: order_id(&c.order_id)? })
        }
        Message::ReturnStock(c) => {
            (product_id(&c.product_id)?, ProductCommand::ReturnStock { order_id: order_id(&c.order_id)? })
        }
        _ => return Ok(None),
    }))
}

/// A payment command addressed to one customer's account, from `payment.commands`.
pub fn account_command(message: &Message) -> Result<Option<(CustomerId, AccountCommand)>, DecodeError> {
    Ok(Some(match message {
        Message::AuthorizePayment(c) => (
            customer_id(&c.customer_id)?,
            AccountCommand::Authorize { order_id: order_id(&c.order_id)?, amount: money(c.amount_cents, &c.currency)? },
        ),
        Message::RefundPayment(c) => {
            (customer_id(&c.customer_id)?, AccountCommand::Refund { order_id: order_id(&c.order_id)? })
        }
        Message::ConfirmPayment(c) => {
            (customer_id(&c.customer_id)?, AccountCommand::Confirm { order_id: order_id(&c.order_id)? })
        }
        _ => return Ok(None),
    }))
}

/// The lines of an `OrderPlaced` record, as domain values.
pub fn order_lines(placed: &OrderPlaced) -> Result<Vec<DomainLine>, DecodeError> {
    placed
        .lines
        .iter()
        .map(|l| {
            Ok(DomainLine {
                product_id: product_id(&l.product_id)?,
                quantity: quantity(l.quantity)?,
                unit_price: money(l.unit_price_cents, &placed.currency)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_with_bad_ids_are_invalid_not_panics() {
        let m: Message = ReserveStock { order_id: "nope".into(), product_id: "x".into(), quantity: 1 }.into();
        assert!(matches!(product_command(&m), Err(DecodeError::Invalid(_))));
        let m: Message = ReserveStock {
            order_id: OrderId::new().to_string(),
            product_id: ProductId::new().to_string(),
            quantity: -2,
        }
        .into();
        assert!(matches!(product_command(&m), Err(DecodeError::Invalid(_))));
    }

    #[test]
    fn events_keep_their_aggregate_as_key() {
        let id = ProductId::new();
        let m = product_event(id, &ProductEvent::StockAdded { quantity: 4 });
        assert_eq!(m.key(), id.to_string());
        assert_eq!(m.topic(), crate::Topic::ProductEvents);
    }
}
