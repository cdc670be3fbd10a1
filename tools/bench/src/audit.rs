//! After the drain: does the shop's state add up to what the bench placed?
//!
//! 1. every accepted order reached a final status;
//! 2. each product's stock: initial = available + reserved + sold, nothing reserved at rest,
//!    sold = the quantities of the run's CONFIRMED orders (the products are the run's own);
//! 3. each customer's credit: limit − available = the totals of its CONFIRMED orders;
//! 4. each order's outcome fits its kind, and its total its prices;
//! 5. each final order got exactly its e-mails.
//!
//! The arithmetic is pure (`check_*` take the observations); [`run`] gathers them, giving the
//! read models and the mail a bounded time to catch up before judging.

use crate::api::{Api, CustomerView, OrderStatus, ProductView};
use crate::load::{OrderRecord, Post};
use crate::mailpit::{MailKind, Mailpit, classify};
use crate::mix::Kind;
use crate::plan::PlannedOrder;
use crate::setup::{Customer, Product, Setup};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tokio::time::Instant;
use uuid::Uuid;

/// Offenders listed per check; the counts cover all of them.
const LIST: usize = 10;
const READS_IN_FLIGHT: usize = 16;

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    /// False when the data could not decide (e.g. Mailpit pruned mail during the run); `ok`
    /// then says whether what could be judged was right.
    pub conclusive: bool,
    pub detail: String,
    /// Up to ten examples of what failed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub offenders: Vec<Value>,
}

impl Check {
    fn new(name: &'static str, ok: bool, detail: String, offenders: Vec<Value>) -> Self {
        Check { name, ok, conclusive: true, detail, offenders }
    }
}

/// Orders whose POST got no answer may or may not exist: stock and credit can be off by them.
fn in_doubt(records: &[OrderRecord]) -> usize {
    records.iter().filter(|r| matches!(r.post, Post::TransportError | Post::Unanswered)).count()
}

fn doubt_note(records: &[OrderRecord]) -> String {
    let doubt = in_doubt(records);
    let open = records.iter().filter(|r| r.accepted() && r.final_status.is_none()).count();
    let mut notes = Vec::new();
    if doubt > 0 {
        notes.push(format!("{doubt} orders whose POST got no answer may exist and count"));
    }
    if open > 0 {
        notes.push(format!("{open} accepted orders were not final"));
    }
    if notes.is_empty() { String::new() } else { format!(" (caveat: {})", notes.join("; ")) }
}

/// 1. Every accepted order final.
pub fn check_all_final(records: &[OrderRecord]) -> Check {
    let accepted: Vec<&OrderRecord> = records.iter().filter(|r| r.accepted()).collect();
    let open: Vec<&&OrderRecord> = accepted.iter().filter(|r| r.final_status.is_none()).collect();
    let offenders = open
        .iter()
        .take(LIST)
        .map(|r| json!({ "order_id": r.order_id, "kind": r.kind, "last_status": r.last_status, "due_s": r.due_s }))
        .collect();
    Check::new(
        "all_accepted_orders_final",
        open.is_empty(),
        format!("{} of {} accepted orders final, {} not", accepted.len() - open.len(), accepted.len(), open.len()),
        offenders,
    )
}

/// Units sold per product (by catalog index): the lines of the CONFIRMED orders.
pub fn expected_sold(records: &[OrderRecord], plans: &[PlannedOrder], products: usize) -> Vec<i64> {
    let mut sold = vec![0; products];
    for r in records.iter().filter(|r| r.final_status == Some(OrderStatus::Confirmed)) {
        for line in &plans[r.index as usize].lines {
            sold[line.product] += line.quantity;
        }
    }
    sold
}

/// What is wrong with one product's stock, if anything.
pub fn stock_problems(initial: i64, seen: &ProductView, expected_sold: i64) -> Vec<String> {
    let (reserved, sold) = (seen.reserved.unwrap_or(0), seen.sold.unwrap_or(0));
    let mut problems = Vec::new();
    if seen.reserved.is_none() || seen.sold.is_none() {
        problems.push("reserved/sold not shown (not read as admin?)".to_owned());
    }
    if seen.available + reserved + sold != initial {
        problems.push(format!("available {} + reserved {reserved} + sold {sold} ≠ initial {initial}", seen.available));
    }
    if reserved != 0 {
        problems.push(format!("{reserved} still reserved at rest"));
    }
    if sold != expected_sold {
        problems.push(format!("sold {sold}, but the confirmed orders hold {expected_sold}"));
    }
    problems
}

/// 2. Stock of every product of the run.
pub fn check_stock(products: &[Product], seen: &[Option<ProductView>], sold: &[i64], caveat: &str) -> Check {
    let mut offenders = Vec::new();
    let mut bad = 0;
    for ((p, seen), sold) in products.iter().zip(seen).zip(sold) {
        let problems = match seen {
            Some(v) => stock_problems(p.initial_stock, v, *sold),
            None => vec!["not found in the catalog read model".to_owned()],
        };
        if !problems.is_empty() {
            bad += 1;
            if offenders.len() < LIST {
                offenders.push(json!({ "product_id": p.id, "sku": p.sku, "problems": problems }));
            }
        }
    }
    Check::new(
        "stock_adds_up",
        bad == 0,
        format!("{} of {} products consistent{caveat}", products.len() - bad, products.len()),
        offenders,
    )
}

/// Charged per customer (by index): the totals of the CONFIRMED orders (the service's own
/// totals where seen).
pub fn expected_spend(records: &[OrderRecord], customers: usize) -> Vec<i64> {
    let mut spend = vec![0; customers];
    for r in records.iter().filter(|r| r.final_status == Some(OrderStatus::Confirmed)) {
        spend[r.customer] += r.total_cents.unwrap_or(r.expected_total_cents);
    }
    spend
}

/// What is wrong with one customer's credit, if anything.
pub fn credit_problem(seen: &CustomerView, spent: i64) -> Option<String> {
    let used = seen.credit_limit_cents - seen.credit_available_cents;
    (used != spent).then(|| {
        format!(
            "limit {} − available {} = {used}, but the confirmed orders total {spent}",
            seen.credit_limit_cents, seen.credit_available_cents
        )
    })
}

/// 3. Credit of every customer of the run.
pub fn check_credit(customers: &[Customer], seen: &[Option<CustomerView>], spend: &[i64], caveat: &str) -> Check {
    let mut offenders = Vec::new();
    let mut bad = 0;
    for ((c, seen), spent) in customers.iter().zip(seen).zip(spend) {
        let problem = match seen {
            Some(v) => credit_problem(v, *spent),
            None => Some("not found in the customers read model".to_owned()),
        };
        if let Some(problem) = problem {
            bad += 1;
            if offenders.len() < LIST {
                offenders.push(json!({ "customer_id": c.id, "owner": c.owner, "problem": problem }));
            }
        }
    }
    Check::new(
        "credit_adds_up",
        bad == 0,
        format!("{} of {} customers consistent{caveat}", customers.len() - bad, customers.len()),
        offenders,
    )
}

/// How an order's outcome relates to its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Expected,
    /// Not the kind's usual outcome, but accounted for (e.g. a cancel that could not be sent).
    Explained(&'static str),
    Unexpected(String),
}

pub fn judge_outcome(kind: Kind, status: OrderStatus, reason: Option<&str>, cancel_status: Option<u16>) -> Outcome {
    let has_reason = reason.is_some_and(|r| !r.trim().is_empty());
    match (kind, status) {
        (Kind::Normal, OrderStatus::Confirmed) => Outcome::Expected,
        (Kind::OverCredit | Kind::OverStock, OrderStatus::Rejected) if has_reason => Outcome::Expected,
        (Kind::OverCredit | Kind::OverStock, OrderStatus::Rejected) => {
            Outcome::Unexpected("REJECTED without a reason".into())
        }
        (Kind::Cancel, OrderStatus::Cancelled) if cancel_status == Some(202) => Outcome::Expected,
        (Kind::Cancel, OrderStatus::Rejected) if cancel_status == Some(409) && has_reason => {
            Outcome::Explained("rejected before the cancel arrived (cancel answered 409)")
        }
        (Kind::Cancel, OrderStatus::Confirmed) if cancel_status != Some(202) => {
            Outcome::Explained("the cancel was not accepted, so the order stayed confirmed")
        }
        (kind, status) => Outcome::Unexpected(format!(
            "{kind} order ended {}{}",
            status.name(),
            cancel_status.map_or(String::new(), |c| format!(" (cancel answered {c})"))
        )),
    }
}

/// 4. Outcomes fit the kinds; the service's totals fit the catalog's prices.
pub fn check_outcomes(records: &[OrderRecord]) -> Check {
    let mut table: BTreeMap<String, BTreeMap<&'static str, u64>> = BTreeMap::new();
    let (mut unexpected, mut explained, mut wrong_total) = (0, 0, 0);
    let mut offenders = Vec::new();
    for r in records {
        let Some(status) = r.final_status else { continue };
        *table.entry(r.kind.to_string()).or_default().entry(status.name()).or_default() += 1;
        let outcome = judge_outcome(r.kind, status, r.reason.as_deref(), r.cancel_status);
        let mut problem = match outcome {
            Outcome::Expected => None,
            Outcome::Explained(_) => {
                explained += 1;
                None
            }
            Outcome::Unexpected(why) => {
                unexpected += 1;
                Some(why)
            }
        };
        if let Some(total) = r.total_cents.filter(|t| *t != r.expected_total_cents) {
            wrong_total += 1;
            problem.get_or_insert_with(|| format!("total {total}, prices say {}", r.expected_total_cents));
        }
        if let Some(problem) = problem.filter(|_| offenders.len() < LIST) {
            offenders.push(json!({ "order_id": r.order_id, "kind": r.kind, "status": status.name(),
                                   "reason": r.reason, "problem": problem }));
        }
    }
    let table: Vec<String> = table
        .iter()
        .map(|(kind, by)| {
            let by: Vec<String> = by.iter().map(|(s, n)| format!("{s} {n}")).collect();
            format!("{kind}: {}", by.join(", "))
        })
        .collect();
    Check::new(
        "outcomes_match_kinds",
        unexpected == 0 && wrong_total == 0,
        format!(
            "{unexpected} unexpected, {explained} explained, {wrong_total} wrong totals; {}",
            if table.is_empty() { "no final orders".to_owned() } else { table.join("; ") }
        ),
        offenders,
    )
}

/// The e-mails a final order should have caused, by kind: one for its outcome, and the
/// payment mail when it was paid (it was confirmed at some point, even if cancelled later).
pub fn expected_mails(status: OrderStatus, history: &[OrderStatus]) -> BTreeMap<MailKind, u32> {
    let was_confirmed = status == OrderStatus::Confirmed || history.contains(&OrderStatus::Confirmed);
    let mut m: BTreeMap<MailKind, u32> = MailKind::ALL.iter().map(|k| (*k, 0)).collect();
    match status {
        OrderStatus::Confirmed => *m.entry(MailKind::OrderConfirmed).or_default() = 1,
        OrderStatus::Rejected => *m.entry(MailKind::OrderRejected).or_default() = 1,
        OrderStatus::Cancelled => *m.entry(MailKind::OrderCancelled).or_default() = 1,
        OrderStatus::Pending => {}
    }
    if was_confirmed {
        *m.entry(MailKind::OrderConfirmed).or_default() = 1;
        *m.entry(MailKind::PaymentReceived).or_default() = 1;
    }
    m
}

/// Mail found per order and kind.
pub type Found = HashMap<Uuid, BTreeMap<MailKind, u32>>;

pub fn count_mails(subjects: &[String]) -> Found {
    let mut found = Found::new();
    for (kind, id) in subjects.iter().filter_map(|s| classify(s)) {
        *found.entry(id).or_default().entry(kind).or_default() += 1;
    }
    found
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MailTally {
    pub missing: u64,
    pub duplicates: u64,
    pub unexpected: u64,
    pub offenders: Vec<Value>,
}

/// Compares the final orders' expected mail with what was found.
pub fn tally_mails(records: &[OrderRecord], found: &Found) -> MailTally {
    let mut t = MailTally::default();
    let none = BTreeMap::new();
    for r in records {
        let (Some(id), Some(status)) = (r.order_id, r.final_status) else { continue };
        let got = found.get(&id).unwrap_or(&none);
        for (kind, want) in expected_mails(status, &r.history) {
            let have = got.get(&kind).copied().unwrap_or(0);
            let problem = if have < want {
                t.missing += u64::from(want - have);
                "missing"
            } else if have > want && want > 0 {
                t.duplicates += u64::from(have - want);
                "duplicate"
            } else if have > want {
                t.unexpected += u64::from(have);
                "unexpected"
            } else {
                continue;
            };
            if t.offenders.len() < LIST {
                t.offenders.push(json!({ "order_id": id, "status": status.name(), "mail": kind,
                                         "expected": want, "found": have, "problem": problem }));
            }
        }
    }
    t
}

/// 5. E-mails. `pruned` = messages Mailpit deleted during the run (its retention limit).
pub fn check_mails(records: &[OrderRecord], found: &Found, pruned: u64) -> Check {
    let t = tally_mails(records, found);
    let finals = records.iter().filter(|r| r.final_status.is_some()).count();
    let mut detail = format!(
        "{finals} final orders: {} missing, {} duplicates, {} unexpected",
        t.missing, t.duplicates, t.unexpected
    );
    let wrong = t.duplicates + t.unexpected;
    // Pruning only matters for mail that is missing: what was found was found.
    let mut check = if pruned > 0 && t.missing > 0 {
        detail.push_str(&format!(
            "; INCONCLUSIVE for the missing: Mailpit deleted {pruned} messages during the run (it keeps the \
             newest 500 unless started with --max 0), so they may have been pruned"
        ));
        let mut c = Check::new("emails_exactly_once", wrong == 0 && t.missing <= pruned, detail, t.offenders);
        c.conclusive = false;
        c
    } else {
        Check::new("emails_exactly_once", wrong == 0 && t.missing == 0, detail, t.offenders)
    };
    check.offenders.truncate(LIST);
    check
}

/// Everything [`run`] needs besides the records.
pub struct AuditContext<'a> {
    pub api: &'a Api,
    pub mailpit: &'a Mailpit,
    pub setup: &'a Setup,
    pub plans: &'a [PlannedOrder],
    pub settle: Duration,
    pub run_started: DateTime<Utc>,
    /// Mailpit's deleted-messages counter before the run; None if it could not be read.
    pub mail_deleted_before: Option<u64>,
}

/// All five checks, in order.
pub async fn run(ctx: &AuditContext<'_>, records: &[OrderRecord]) -> Vec<Check> {
    let mut checks = vec![check_all_final(records)];
    let caveat = doubt_note(records);
    let s = ctx.setup;

    // 2 and 3 read the read models, which trail the write side: judge once they agree, or
    // when the settle time is up.
    let sold = expected_sold(records, ctx.plans, s.products.len());
    let spend = expected_spend(records, s.customers.len());
    let deadline = Instant::now() + ctx.settle;
    let (stock, credit) = loop {
        let products: Vec<Option<ProductView>> = futures::stream::iter(&s.products)
            .map(|p| async move { ctx.api.product(p.id).await.ok().flatten() })
            .buffered(READS_IN_FLIGHT)
            .collect()
            .await;
        let customers: Vec<Option<CustomerView>> = futures::stream::iter(&s.customers)
            .map(|c| async move { ctx.api.customer(c.owner, c.id, None).await.ok().flatten() })
            .buffered(READS_IN_FLIGHT)
            .collect()
            .await;
        let stock = check_stock(&s.products, &products, &sold, &caveat);
        let credit = check_credit(&s.customers, &customers, &spend, &caveat);
        if (stock.ok && credit.ok) || Instant::now() >= deadline {
            break (stock, credit);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    checks.extend([stock, credit, check_outcomes(records)]);

    // 5: mail may trail the order by a moment; wait for the missing before calling them so.
    let deadline = Instant::now() + ctx.settle;
    let since = ctx.run_started - chrono::Duration::seconds(5);
    let mail = loop {
        let reading = Instant::now();
        let found = match ctx
            .mailpit
            .messages(Some(since))
            .await
            .map(|ms| ms.into_iter().map(|m| m.subject).collect::<Vec<_>>())
        {
            Ok(subjects) => count_mails(&subjects),
            Err(e) => {
                break Check::new("emails_exactly_once", false, format!("Mailpit could not be read: {e:#}"), vec![]);
            }
        };
        let waiting = tally_mails(records, &found).missing > 0;
        if !waiting || Instant::now() >= deadline {
            let deleted_after = ctx.mailpit.counts().await.ok().map(|(_, d)| d);
            let pruned = match (ctx.mail_deleted_before, deleted_after) {
                (Some(b), Some(a)) => a.saturating_sub(b),
                _ => 0,
            };
            break check_mails(records, &found, pruned);
        }
        // A big run's mail takes Mailpit a while to list: never ask more than half the time.
        tokio::time::sleep(reading.elapsed().max(Duration::from_secs(2))).await;
    };
    checks.push(mail);
    checks
}

/// The checks as a table for people.
pub fn render(checks: &[Check]) -> String {
    use std::fmt::Write as _;
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(5).max(5);
    let mut out = format!("{:<width$}  {:<6}  DETAIL\n", "CHECK", "RESULT");
    for c in checks {
        let result = match (c.ok, c.conclusive) {
            (true, true) => "ok",
            (true, false) => "ok?",
            (false, _) => "FAIL",
        };
        let _ = writeln!(out, "{:<width$}  {result:<6}  {}", c.name, c.detail);
        for o in c.offenders.iter().take(3) {
            let _ = writeln!(out, "{:<width$}          {o}", "");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::User;
    use crate::plan::Line;
    use crate::setup::Role;

    fn record(index: u64, kind: Kind, customer: usize, status: Option<OrderStatus>) -> OrderRecord {
        OrderRecord {
            index,
            kind,
            customer,
            due_s: index as f64,
            expected_total_cents: 300,
            post: Post::Accepted,
            post_status: Some(202),
            post_202_us: Some(1000),
            order_id: Some(Uuid::from_u128(u128::from(index) + 1)),
            cancel_status: None,
            error: None,
            final_status: status,
            last_status: status.or(Some(OrderStatus::Pending)),
            post_final_us: status.map(|_| 5000),
            final_seen_s: None,
            reason: None,
            total_cents: status.map(|_| 300),
            history: status.map_or(vec![], |s| vec![OrderStatus::Pending, s]),
            saga_own_us: None,
            polls: 1,
            polls_throttled: 0,
            polls_failed: 0,
        }
    }

    fn plan(index: u64, lines: &[(usize, i64)]) -> PlannedOrder {
        PlannedOrder {
            index,
            kind: Kind::Normal,
            customer: 0,
            lines: lines.iter().map(|(product, quantity)| Line { product: *product, quantity: *quantity }).collect(),
            total_cents: 300,
        }
    }

    fn product(initial_stock: i64) -> Product {
        Product { id: Uuid::nil(), sku: "BENCH-X-0".into(), role: Role::Ordinary, price_cents: 100, initial_stock }
    }

    fn seen(available: i64, reserved: i64, sold: i64) -> ProductView {
        ProductView { available, reserved: Some(reserved), sold: Some(sold) }
    }

    #[test]
    fn an_accepted_order_without_a_final_status_fails_the_first_check() {
        let mut refused = record(2, Kind::Normal, 0, None);
        refused.post = Post::Refused;
        let all = [record(0, Kind::Normal, 0, Some(OrderStatus::Confirmed)), refused.clone()];
        assert!(check_all_final(&all).ok, "a refused order is not expected to become final");
        let open = [record(0, Kind::Normal, 0, Some(OrderStatus::Confirmed)), record(1, Kind::Cancel, 0, None)];
        let c = check_all_final(&open);
        assert!(!c.ok);
        assert_eq!(c.detail, "1 of 2 accepted orders final, 1 not");
        assert_eq!(c.offenders.len(), 1);
    }

    #[test]
    fn units_sold_count_only_confirmed_orders_lines() {
        let records = [
            record(0, Kind::Normal, 0, Some(OrderStatus::Confirmed)),
            record(1, Kind::Cancel, 0, Some(OrderStatus::Cancelled)),
            record(2, Kind::Normal, 0, Some(OrderStatus::Confirmed)),
            record(3, Kind::Normal, 0, None),
        ];
        let plans = [plan(0, &[(0, 1), (1, 1)]), plan(1, &[(0, 1)]), plan(2, &[(1, 2)]), plan(3, &[(0, 1)])];
        assert_eq!(expected_sold(&records, &plans, 3), [1, 3, 0]);
    }

    #[test]
    fn stock_identity_reservations_and_sales_are_each_checked() {
        assert!(stock_problems(100, &seen(97, 0, 3), 3).is_empty());
        let leaked = stock_problems(100, &seen(96, 1, 3), 3);
        assert_eq!(leaked, ["1 still reserved at rest"]);
        let lost = stock_problems(100, &seen(96, 0, 3), 3);
        assert_eq!(lost, ["available 96 + reserved 0 + sold 3 ≠ initial 100"]);
        let oversold = stock_problems(100, &seen(95, 0, 5), 3);
        assert_eq!(oversold, ["sold 5, but the confirmed orders hold 3"]);
        let public = ProductView { available: 100, reserved: None, sold: None };
        assert_eq!(stock_problems(100, &public, 0).len(), 1);
    }

    #[test]
    fn a_missing_product_fails_the_stock_check() {
        let c = check_stock(&[product(10), product(5)], &[Some(seen(10, 0, 0)), None], &[0, 0], "");
        assert!(!c.ok);
        assert_eq!(c.detail, "1 of 2 products consistent");
    }

    #[test]
    fn credit_used_must_equal_the_confirmed_totals() {
        let mut records = vec![
            record(0, Kind::Normal, 0, Some(OrderStatus::Confirmed)),
            record(1, Kind::Normal, 1, Some(OrderStatus::Confirmed)),
            record(2, Kind::OverCredit, 0, Some(OrderStatus::Rejected)),
            record(3, Kind::Cancel, 1, Some(OrderStatus::Cancelled)),
        ];
        records[1].total_cents = Some(450);
        assert_eq!(expected_spend(&records, 2), [300, 450]);
        let c = |limit, available| CustomerView { credit_limit_cents: limit, credit_available_cents: available };
        assert_eq!(credit_problem(&c(100_000, 99_700), 300), None);
        assert_eq!(
            credit_problem(&c(100_000, 100_000), 300).as_deref(),
            Some("limit 100000 − available 100000 = 0, but the confirmed orders total 300")
        );
        let customers = [
            Customer { id: Uuid::nil(), owner: User::Alice, credit_limit_cents: 100_000 },
            Customer { id: Uuid::nil(), owner: User::Bob, credit_limit_cents: 100_000 },
        ];
        let check = check_credit(&customers, &[Some(c(100_000, 99_700)), Some(c(100_000, 99_550))], &[300, 450], "");
        assert!(check.ok, "{}", check.detail);
    }

    #[test]
    fn outcomes_are_judged_by_kind() {
        use OrderStatus::*;
        assert_eq!(judge_outcome(Kind::Normal, Confirmed, None, None), Outcome::Expected);
        assert!(matches!(
            judge_outcome(Kind::Normal, Rejected, Some("payment declined"), None),
            Outcome::Unexpected(_)
        ));
        assert_eq!(judge_outcome(Kind::OverCredit, Rejected, Some("payment declined"), None), Outcome::Expected);
        assert!(matches!(judge_outcome(Kind::OverStock, Rejected, Some(" "), None), Outcome::Unexpected(_)));
        assert!(matches!(judge_outcome(Kind::OverStock, Confirmed, None, None), Outcome::Unexpected(_)));
        assert_eq!(
            judge_outcome(Kind::Cancel, Cancelled, Some("cancelled by the customer"), Some(202)),
            Outcome::Expected
        );
        assert!(matches!(
            judge_outcome(Kind::Cancel, Rejected, Some("out of stock"), Some(409)),
            Outcome::Explained(_)
        ));
        assert!(matches!(judge_outcome(Kind::Cancel, Confirmed, None, Some(503)), Outcome::Explained(_)));
        assert!(matches!(judge_outcome(Kind::Cancel, Confirmed, None, None), Outcome::Explained(_)));
        assert!(matches!(judge_outcome(Kind::Cancel, Rejected, Some("x"), Some(202)), Outcome::Unexpected(_)));
    }

    #[test]
    fn a_wrong_total_fails_the_outcome_check_even_when_the_status_fits() {
        let mut r = record(0, Kind::Normal, 0, Some(OrderStatus::Confirmed));
        assert!(check_outcomes(std::slice::from_ref(&r)).ok);
        r.total_cents = Some(301);
        let c = check_outcomes(&[r]);
        assert!(!c.ok);
        assert!(c.detail.starts_with("0 unexpected, 0 explained, 1 wrong totals"), "{}", c.detail);
    }

    #[test]
    fn expected_mails_follow_the_final_status_and_whether_the_order_was_paid() {
        use MailKind::*;
        let want = |status, history: &[OrderStatus]| -> Vec<MailKind> {
            expected_mails(status, history).into_iter().filter(|(_, n)| *n == 1).map(|(k, _)| k).collect()
        };
        assert_eq!(want(OrderStatus::Confirmed, &[]), [OrderConfirmed, PaymentReceived]);
        assert_eq!(want(OrderStatus::Rejected, &[]), [OrderRejected]);
        assert_eq!(want(OrderStatus::Cancelled, &[OrderStatus::Pending, OrderStatus::Cancelled]), [OrderCancelled]);
        assert_eq!(
            want(OrderStatus::Cancelled, &[OrderStatus::Pending, OrderStatus::Confirmed, OrderStatus::Cancelled]),
            [OrderConfirmed, OrderCancelled, PaymentReceived]
        );
    }

    #[test]
    fn mails_are_tallied_as_missing_duplicate_or_unexpected() {
        let confirmed = record(0, Kind::Normal, 0, Some(OrderStatus::Confirmed));
        let rejected = record(1, Kind::OverStock, 0, Some(OrderStatus::Rejected));
        let open = record(2, Kind::Normal, 0, None);
        let (c, r, o) = (confirmed.order_id.unwrap(), rejected.order_id.unwrap(), open.order_id.unwrap());
        let subjects = vec![
            format!("Your order {c} is confirmed"),
            format!("Your order {c} is confirmed"),
            format!("Your order {r} could not be completed"),
            format!("Payment received for order {r}"),
            format!("Your order {o} is confirmed"),
            "Unrelated".to_owned(),
        ];
        let found = count_mails(&subjects);
        let t = tally_mails(&[confirmed.clone(), rejected.clone(), open.clone()], &found);
        assert_eq!((t.missing, t.duplicates, t.unexpected), (1, 1, 1), "{:?}", t.offenders);
        let check = check_mails(&[confirmed.clone(), rejected.clone(), open.clone()], &found, 0);
        assert!(!check.ok && check.conclusive);
        let all_there = count_mails(&[
            format!("Your order {c} is confirmed"),
            format!("Payment received for order {c}"),
            format!("Your order {r} could not be completed"),
        ]);
        assert!(check_mails(&[confirmed, rejected, open], &all_there, 0).ok);
    }

    #[test]
    fn missing_mail_after_mailpit_pruned_is_inconclusive_not_a_failure() {
        let confirmed = record(0, Kind::Normal, 0, Some(OrderStatus::Confirmed));
        let c = check_mails(std::slice::from_ref(&confirmed), &Found::new(), 600);
        assert!(c.ok);
        assert!(!c.conclusive);
        assert!(c.detail.contains("INCONCLUSIVE"), "{}", c.detail);
        let id = confirmed.order_id.unwrap();
        let both = count_mails(&[format!("Your order {id} is confirmed"), format!("Payment received for order {id}")]);
        let c = check_mails(std::slice::from_ref(&confirmed), &both, 600);
        assert!(c.ok && c.conclusive, "nothing missing: the pruning did not matter");
        let twice =
            count_mails(&[format!("Payment received for order {id}"), format!("Payment received for order {id}")]);
        assert!(!check_mails(&[confirmed], &twice, 600).ok, "a duplicate is a failure whatever was pruned");
    }

    #[test]
    fn the_table_marks_failures_and_inconclusive_checks() {
        let mut inconclusive = Check::new("b", true, "pruned".into(), vec![]);
        inconclusive.conclusive = false;
        let table = render(&[
            Check::new("a", true, "fine".into(), vec![]),
            inconclusive,
            Check::new("c", false, "broken".into(), vec![json!({"x": 1})]),
        ]);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[1].contains(" ok ") && lines[1].ends_with("fine"), "{table}");
        assert!(lines[2].contains("ok?"), "{table}");
        assert!(lines[3].contains("FAIL"), "{table}");
        assert!(lines[4].contains("{\"x\":1}"), "{table}");
    }
}
