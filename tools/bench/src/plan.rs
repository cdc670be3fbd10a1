//! What to send and when, decided before the clock starts: order `i` is due at `i / rate`
//! seconds, and its kind, customer and cart come from the seeded generator. Planning up front
//! keeps the timed part free of decisions and makes a run reproducible from its seed.

use crate::mix::{Kind, Mix, Rng};
use std::time::Duration;

/// Quantity of an over_stock order: far above the scarce product's stock of 1.
pub const OVER_STOCK_QUANTITY: i64 = 1000;

/// How many orders a customer may get by default: their cart prices are chosen so that this
/// many confirmed orders stay within the opening credit (see [`ORDINARY_PRICES`]).
pub const ORDERS_PER_CUSTOMER: u64 = 100;

/// Ordinary products cost between these (cents). A normal cart holds at most
/// [`MAX_LINES`] lines of quantity 1, so ≤ 800 cents: 100 orders fit in 100 000 cents of credit.
pub const ORDINARY_PRICES: (i64, i64) = (100, 400);
pub const MAX_LINES: u64 = 2;

/// Orders in a run of `duration_s` at `rate_per_s`: those due strictly before the end.
/// The epsilon keeps float noise (0.3 × 10 = 3.0000000000000004) from adding an order.
pub fn order_count(rate_per_s: f64, duration_s: f64) -> u64 {
    let n = (rate_per_s * duration_s - 1e-9).ceil();
    if n.is_finite() && n > 0.0 { n as u64 } else { 0 }
}

/// When order `i` is due, after the start of the run. Computed from `i` rather than by adding
/// up intervals, so rounding never drifts over a long run.
pub fn due_offset(i: u64, rate_per_s: f64) -> Duration {
    Duration::from_secs_f64(i as f64 / rate_per_s)
}

/// Enough customers that none gets more than [`ORDERS_PER_CUSTOMER`] orders; at least two,
/// so both customer users (alice and bob) carry load.
pub fn default_customers(orders: u64) -> usize {
    usize::try_from(orders.div_ceil(ORDERS_PER_CUSTOMER).max(2)).unwrap_or(usize::MAX)
}

/// The run's products as the planner sees them: prices by index, and which index plays which role.
#[derive(Debug, Clone)]
pub struct Catalog {
    pub prices: Vec<i64>,
    pub ordinary: Vec<usize>,
    pub expensive: usize,
    pub scarce: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line {
    /// Index into the catalog.
    pub product: usize,
    pub quantity: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedOrder {
    pub index: u64,
    pub kind: Kind,
    /// Index into the run's customers.
    pub customer: usize,
    pub lines: Vec<Line>,
    /// What the order service should price it at, from the catalog's prices.
    pub total_cents: i64,
}

/// Every order of the run. Customers take turns (order `i` goes to customer `i mod customers`),
/// so the load, and the spending, is spread evenly.
pub fn plan_orders(count: u64, mix: &Mix, customers: usize, catalog: &Catalog, seed: u64) -> Vec<PlannedOrder> {
    let mut rng = Rng::new(seed);
    let customers = customers.max(1) as u64;
    (0..count)
        .map(|index| {
            let kind = mix.pick(rng.below(mix.total()));
            let lines = match kind {
                Kind::Normal | Kind::Cancel => ordinary_cart(&mut rng, &catalog.ordinary),
                Kind::OverCredit => vec![Line { product: catalog.expensive, quantity: 1 }],
                Kind::OverStock => vec![Line { product: catalog.scarce, quantity: OVER_STOCK_QUANTITY }],
            };
            let total_cents = lines.iter().map(|l| catalog.prices[l.product] * l.quantity).sum();
            PlannedOrder { index, kind, customer: (index % customers) as usize, lines, total_cents }
        })
        .collect()
}

/// One or two distinct ordinary products, one of each.
fn ordinary_cart(rng: &mut Rng, ordinary: &[usize]) -> Vec<Line> {
    let n = ordinary.len() as u64;
    let first = rng.below(n);
    let mut lines = vec![Line { product: ordinary[first as usize], quantity: 1 }];
    if n > 1 && rng.below(MAX_LINES) == 1 {
        // Any other product: offset by 1..n so the two lines never name the same product.
        let second = (first + 1 + rng.below(n - 1)) % n;
        lines.push(Line { product: ordinary[second as usize], quantity: 1 });
    }
    lines
}

/// The most each customer could be charged at once: normal and cancel carts (a cancelled
/// order may be confirmed, and charged, before its refund). Compared with the credit limit to
/// warn before the run when normal orders could be declined for credit.
pub fn worst_case_spend(plans: &[PlannedOrder], customers: usize) -> Vec<i64> {
    let mut spend = vec![0; customers];
    for p in plans.iter().filter(|p| matches!(p.kind, Kind::Normal | Kind::Cancel)) {
        spend[p.customer] += p.total_cents;
    }
    spend
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        // 0..4 ordinary, 4 expensive, 5 scarce.
        Catalog { prices: vec![100, 200, 300, 400, 100_001, 100], ordinary: vec![0, 1, 2, 3], expensive: 4, scarce: 5 }
    }

    #[test]
    fn order_count_covers_the_orders_due_before_the_end() {
        assert_eq!(order_count(10.0, 20.0), 200);
        assert_eq!(order_count(0.3, 10.0), 3, "float noise must not add an order");
        assert_eq!(order_count(2.5, 1.0), 3, "due at 0, 0.4 and 0.8 s");
        assert_eq!(order_count(0.0, 10.0), 0);
    }

    #[test]
    fn order_i_is_due_at_i_over_rate_without_drift() {
        assert_eq!(due_offset(0, 10.0), Duration::ZERO);
        assert_eq!(due_offset(15, 10.0), Duration::from_millis(1500));
        let late = due_offset(999_999, 3.0);
        assert!((late.as_secs_f64() - 333_333.0).abs() < 1e-6, "{late:?}");
    }

    #[test]
    fn default_customers_keeps_each_within_the_per_customer_budget() {
        assert_eq!(default_customers(0), 2);
        assert_eq!(default_customers(200), 2);
        assert_eq!(default_customers(201), 3);
        assert_eq!(default_customers(150_000), 1500);
    }

    #[test]
    fn planned_orders_follow_their_kind_and_total_their_lines() {
        let mix: Mix = Mix::DEFAULT.parse().unwrap();
        let plans = plan_orders(2000, &mix, 7, &catalog(), 1);
        assert_eq!(plans.len(), 2000);
        for p in &plans {
            assert_eq!(p.customer, (p.index % 7) as usize);
            let sum: i64 = p.lines.iter().map(|l| catalog().prices[l.product] * l.quantity).sum();
            assert_eq!(p.total_cents, sum);
            match p.kind {
                Kind::Normal | Kind::Cancel => {
                    assert!((1..=2).contains(&p.lines.len()));
                    assert!(p.lines.iter().all(|l| l.product < 4 && l.quantity == 1));
                    if let [a, b] = p.lines.as_slice() {
                        assert_ne!(a.product, b.product, "two lines never name one product");
                    }
                }
                Kind::OverCredit => assert_eq!(p.lines, [Line { product: 4, quantity: 1 }]),
                Kind::OverStock => assert_eq!(p.lines, [Line { product: 5, quantity: OVER_STOCK_QUANTITY }]),
            }
        }
        let normal = plans.iter().filter(|p| p.kind == Kind::Normal).count();
        assert!((1600..1800).contains(&normal), "about 85% normal, got {normal}");
    }

    #[test]
    fn the_same_seed_plans_the_same_run() {
        let mix: Mix = Mix::DEFAULT.parse().unwrap();
        assert_eq!(plan_orders(100, &mix, 3, &catalog(), 9), plan_orders(100, &mix, 3, &catalog(), 9));
        assert_ne!(plan_orders(100, &mix, 3, &catalog(), 9), plan_orders(100, &mix, 3, &catalog(), 10));
    }

    #[test]
    fn a_full_customer_stays_within_the_opening_credit() {
        let mix: Mix = "normal=1".parse().unwrap();
        let expensive = Catalog { prices: vec![400, 400, 1, 1], ordinary: vec![0, 1], expensive: 2, scarce: 3 };
        let plans = plan_orders(ORDERS_PER_CUSTOMER, &mix, 1, &expensive, 3);
        let spend = worst_case_spend(&plans, 1);
        assert!(spend[0] <= 100_000, "{spend:?}");
    }

    #[test]
    fn worst_case_spend_counts_normal_and_cancel_carts_only() {
        let plans = vec![
            PlannedOrder { index: 0, kind: Kind::Normal, customer: 0, lines: vec![], total_cents: 300 },
            PlannedOrder { index: 1, kind: Kind::Cancel, customer: 0, lines: vec![], total_cents: 200 },
            PlannedOrder { index: 2, kind: Kind::OverCredit, customer: 0, lines: vec![], total_cents: 100_001 },
            PlannedOrder { index: 3, kind: Kind::OverStock, customer: 1, lines: vec![], total_cents: 100_000 },
            PlannedOrder { index: 4, kind: Kind::Normal, customer: 1, lines: vec![], total_cents: 150 },
        ];
        assert_eq!(worst_case_spend(&plans, 2), [500, 150]);
    }
}
