//! Product: price and stock. Stock identity, at all times:
//! `received = available + reserved + sold`, and none of them is ever negative.
//!
//! Reservations are keyed by order, which makes the saga's commands idempotent: a second
//! `ReserveStock` for the same order decides nothing, and so do release and commit of a
//! reservation that is no longer held.

use crate::values::{Money, Name, OrderId, ProductId, Quantity, Sku};
use crate::{Aggregate, DomainEvent};
use imbl::OrdMap;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Product {
    pub id: Option<ProductId>,
    pub sku: Sku,
    pub name: Name,
    pub price: Money,
    /// All stock ever received: initial stock plus deliveries.
    pub received: u64,
    pub available: u64,
    pub reserved: u64,
    pub sold: u64,
    /// What happened to each order's reservation; kept so repeated commands are no-ops. A
    /// persistent map: the copy each command decides on shares it instead of copying every entry.
    pub reservations: OrdMap<OrderId, Reservation>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub quantity: u32,
    pub state: ReservationState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReservationState {
    Held,
    Failed,
    Released,
    Committed,
    /// Sold, then given back by a cancellation.
    Returned,
}

#[derive(Debug, Clone)]
pub enum ProductCommand {
    Create {
        product_id: ProductId,
        sku: Sku,
        name: Name,
        price: Money,
        stock: u32,
    },
    AddStock {
        quantity: Quantity,
    },
    ReserveStock {
        order_id: OrderId,
        quantity: Quantity,
    },
    ReleaseStock {
        order_id: OrderId,
    },
    CommitStock {
        order_id: OrderId,
    },
    /// Put sold items of a cancelled order back on the shelf.
    ReturnStock {
        order_id: OrderId,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ProductEvent {
    ProductCreated { product_id: ProductId, sku: Sku, name: Name, price: Money, stock: u32 },
    StockAdded { quantity: u32 },
    StockReserved { order_id: OrderId, quantity: u32 },
    StockReservationFailed { order_id: OrderId, requested: u32, available: u64 },
    StockReleased { order_id: OrderId, quantity: u32 },
    StockCommitted { order_id: OrderId, quantity: u32 },
    StockReturned { order_id: OrderId, quantity: u32 },
}

impl DomainEvent for ProductEvent {
    fn event_type(&self) -> &'static str {
        match self {
            ProductEvent::ProductCreated { .. } => "ProductCreated",
            ProductEvent::StockAdded { .. } => "StockAdded",
            ProductEvent::StockReserved { .. } => "StockReserved",
            ProductEvent::StockReservationFailed { .. } => "StockReservationFailed",
            ProductEvent::StockReleased { .. } => "StockReleased",
            ProductEvent::StockCommitted { .. } => "StockCommitted",
            ProductEvent::StockReturned { .. } => "StockReturned",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProductError {
    #[error("product {0} already exists")]
    AlreadyExists(ProductId),
    #[error("product does not exist")]
    NotFound,
    #[error("stock would exceed {max}")]
    StockOverflow { max: u64 },
}

/// No product may hold more than this many items, so sums never overflow.
pub const MAX_STOCK: u64 = 1_000_000_000;

impl Aggregate for Product {
    const TYPE: &'static str = "Product";
    type Command = ProductCommand;
    type Event = ProductEvent;
    type Error = ProductError;

    fn decide(&self, command: ProductCommand) -> Result<Vec<ProductEvent>, ProductError> {
        use ProductCommand as C;
        use ProductEvent as E;
        if let C::Create { product_id, sku, name, price, stock } = command {
            return match self.id {
                Some(id) => Err(ProductError::AlreadyExists(id)),
                None => Ok(vec![E::ProductCreated { product_id, sku, name, price, stock }]),
            };
        }
        if self.id.is_none() {
            return Err(ProductError::NotFound);
        }
        Ok(match command {
            C::Create { .. } => unreachable!("handled above"),
            C::AddStock { quantity } => {
                if self.received + u64::from(quantity.get()) > MAX_STOCK {
                    return Err(ProductError::StockOverflow { max: MAX_STOCK });
                }
                vec![E::StockAdded { quantity: quantity.get() }]
            }
            C::ReserveStock { order_id, quantity } => {
                if self.reservations.contains_key(&order_id) {
                    vec![]
                } else if u64::from(quantity.get()) <= self.available {
                    vec![E::StockReserved { order_id, quantity: quantity.get() }]
                } else {
                    vec![E::StockReservationFailed { order_id, requested: quantity.get(), available: self.available }]
                }
            }
            C::ReleaseStock { order_id } => match self.reservations.get(&order_id) {
                Some(Reservation { quantity, state: ReservationState::Held }) => {
                    vec![E::StockReleased { order_id, quantity: *quantity }]
                }
                _ => vec![],
            },
            C::CommitStock { order_id } => match self.reservations.get(&order_id) {
                Some(Reservation { quantity, state: ReservationState::Held }) => {
                    vec![E::StockCommitted { order_id, quantity: *quantity }]
                }
                _ => vec![],
            },
            C::ReturnStock { order_id } => match self.reservations.get(&order_id) {
                Some(Reservation { quantity, state: ReservationState::Committed }) => {
                    vec![E::StockReturned { order_id, quantity: *quantity }]
                }
                // Not sold (still held): a cancellation before the commit releases instead.
                Some(Reservation { quantity, state: ReservationState::Held }) => {
                    vec![E::StockReleased { order_id, quantity: *quantity }]
                }
                _ => vec![],
            },
        })
    }

    fn apply(&mut self, event: ProductEvent) {
        use ProductEvent as E;
        match event {
            E::ProductCreated { product_id, sku, name, price, stock } => {
                self.id = Some(product_id);
                self.sku = sku;
                self.name = name;
                self.price = price;
                self.received = u64::from(stock);
                self.available = u64::from(stock);
            }
            E::StockAdded { quantity } => {
                self.received += u64::from(quantity);
                self.available += u64::from(quantity);
            }
            E::StockReserved { order_id, quantity } => {
                self.available -= u64::from(quantity);
                self.reserved += u64::from(quantity);
                self.reservations.insert(order_id, Reservation { quantity, state: ReservationState::Held });
            }
            E::StockReservationFailed { order_id, requested, .. } => {
                self.reservations
                    .insert(order_id, Reservation { quantity: requested, state: ReservationState::Failed });
            }
            E::StockReleased { order_id, quantity } => {
                self.reserved -= u64::from(quantity);
                self.available += u64::from(quantity);
                self.reservations.insert(order_id, Reservation { quantity, state: ReservationState::Released });
            }
            E::StockCommitted { order_id, quantity } => {
                self.reserved -= u64::from(quantity);
                self.sold += u64::from(quantity);
                self.reservations.insert(order_id, Reservation { quantity, state: ReservationState::Committed });
            }
            E::StockReturned { order_id, quantity } => {
                self.sold -= u64::from(quantity);
                self.available += u64::from(quantity);
                self.reservations.insert(order_id, Reservation { quantity, state: ReservationState::Returned });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::given;
    use crate::values::Currency;
    use proptest::prelude::*;

    fn created(stock: u32) -> Product {
        given(vec![ProductEvent::ProductCreated {
            product_id: ProductId::new(),
            sku: Sku::parse("MUG-1").unwrap(),
            name: Name::parse("name", "Mug").unwrap(),
            price: Money::new(1200, Currency::EUR),
            stock,
        }])
    }

    fn qty(n: i64) -> Quantity {
        Quantity::new(n).unwrap()
    }

    /// Snapshots stored while the reservations were a `BTreeMap` read back as they were, and a
    /// product is written in that same shape: a JSON object keyed by order id.
    #[test]
    fn reservations_keep_their_stored_shape() {
        let (a, b) = (OrderId::new(), OrderId::new());
        let mut old = std::collections::BTreeMap::new();
        old.insert(a, Reservation { quantity: 2, state: ReservationState::Held });
        old.insert(b, Reservation { quantity: 1, state: ReservationState::Committed });
        let mut stored = serde_json::to_value(created(10)).unwrap();
        stored["reservations"] = serde_json::to_value(&old).unwrap();

        let product: Product = serde_json::from_value(stored.clone()).unwrap();
        assert_eq!(product.reservations.len(), 2);
        assert_eq!(product.reservations.get(&b).map(|r| r.state), Some(ReservationState::Committed));
        assert_eq!(serde_json::to_value(&product).unwrap(), stored);
    }

    #[test]
    fn reserves_when_enough_stock_and_fails_otherwise() {
        let p = created(5);
        let order = OrderId::new();
        let events = p.decide(ProductCommand::ReserveStock { order_id: order, quantity: qty(5) }).unwrap();
        assert_eq!(events, vec![ProductEvent::StockReserved { order_id: order, quantity: 5 }]);
        let other = OrderId::new();
        let events = p.decide(ProductCommand::ReserveStock { order_id: other, quantity: qty(6) }).unwrap();
        assert_eq!(events, vec![ProductEvent::StockReservationFailed { order_id: other, requested: 6, available: 5 }]);
    }

    #[test]
    fn repeated_commands_decide_nothing() {
        let order = OrderId::new();
        let (p, _) = created(5).execute(ProductCommand::ReserveStock { order_id: order, quantity: qty(2) }).unwrap();
        assert!(p.decide(ProductCommand::ReserveStock { order_id: order, quantity: qty(2) }).unwrap().is_empty());
        let (p, ev) = p.execute(ProductCommand::ReleaseStock { order_id: order }).unwrap();
        assert_eq!(ev.len(), 1);
        assert!(p.decide(ProductCommand::ReleaseStock { order_id: order }).unwrap().is_empty());
        // A reservation released by compensation is never committed, nor reserved again.
        assert!(p.decide(ProductCommand::CommitStock { order_id: order }).unwrap().is_empty());
        assert!(p.decide(ProductCommand::ReserveStock { order_id: order, quantity: qty(1) }).unwrap().is_empty());
        assert_eq!((p.available, p.reserved, p.sold), (5, 0, 0));
    }

    #[test]
    fn commit_moves_reserved_to_sold() {
        let order = OrderId::new();
        let (p, _) = created(5).execute(ProductCommand::ReserveStock { order_id: order, quantity: qty(3) }).unwrap();
        let (p, _) = p.execute(ProductCommand::CommitStock { order_id: order }).unwrap();
        assert_eq!((p.available, p.reserved, p.sold, p.received), (2, 0, 3, 5));
    }

    #[test]
    fn returned_stock_goes_back_on_the_shelf_once() {
        let order = OrderId::new();
        let (p, _) = created(5).execute(ProductCommand::ReserveStock { order_id: order, quantity: qty(3) }).unwrap();
        let (p, _) = p.execute(ProductCommand::CommitStock { order_id: order }).unwrap();
        let (p, ev) = p.execute(ProductCommand::ReturnStock { order_id: order }).unwrap();
        assert_eq!(ev, vec![ProductEvent::StockReturned { order_id: order, quantity: 3 }]);
        assert_eq!((p.available, p.reserved, p.sold), (5, 0, 0));
        assert!(p.decide(ProductCommand::ReturnStock { order_id: order }).unwrap().is_empty());
    }

    #[test]
    fn commands_on_missing_product_are_rejected() {
        let err = Product::default().decide(ProductCommand::AddStock { quantity: qty(1) });
        assert_eq!(err, Err(ProductError::NotFound));
    }

    fn command() -> impl Strategy<Value = ProductCommand> {
        let order = (0u8..6).prop_map(|n| OrderId(uuid::Uuid::from_u128(u128::from(n) + 1)));
        prop_oneof![
            (1i64..50).prop_map(|n| ProductCommand::AddStock { quantity: Quantity::new(n).unwrap() }),
            (order.clone(), 1i64..30)
                .prop_map(|(o, n)| ProductCommand::ReserveStock { order_id: o, quantity: Quantity::new(n).unwrap() }),
            order.clone().prop_map(|o| ProductCommand::ReleaseStock { order_id: o }),
            order.clone().prop_map(|o| ProductCommand::CommitStock { order_id: o }),
            order.prop_map(|o| ProductCommand::ReturnStock { order_id: o }),
        ]
    }

    proptest! {
        #[test]
        fn stock_identity_holds_for_any_command_sequence(
            initial in 0u32..100,
            commands in proptest::collection::vec(command(), 0..60),
        ) {
            let mut p = created(initial);
            for c in commands {
                if let Ok((next, _)) = p.execute(c) {
                    p = next;
                }
                prop_assert_eq!(p.received, p.available + p.reserved + p.sold);
                let held: u64 = p.reservations.values()
                    .filter(|r| r.state == ReservationState::Held)
                    .map(|r| u64::from(r.quantity)).sum();
                prop_assert_eq!(held, p.reserved);
            }
        }
    }
}
