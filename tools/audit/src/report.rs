//! The verdict: one [`Check`] per invariant, its offenders, the table the CLI prints and the
//! JSON it writes.

use serde::Serialize;
use std::fmt::Write as _;

/// One thing that breaks an invariant.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Offender {
    /// What it is about, for people: `order 0195…`, `catalog/0195…`.
    pub subject: String,
    /// The ids involved (orders, customers, products, documents), so a reader can tell whose
    /// data it is.
    pub ids: Vec<String>,
    pub problem: String,
}

impl Offender {
    pub fn new(subject: impl Into<String>, ids: &[&str], problem: impl Into<String>) -> Self {
        Self { subject: subject.into(), ids: ids.iter().map(|s| (*s).to_owned()).collect(), problem: problem.into() }
    }

    pub fn involves(&self, id: &str) -> bool {
        self.ids.iter().any(|i| i == id)
    }
}

impl std::fmt::Display for Offender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.subject, self.problem)
    }
}

/// The verdict on one invariant.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Stable name (JSON, tests).
    pub id: &'static str,
    pub title: &'static str,
    /// How many things were judged, in `unit`s.
    pub checked: usize,
    pub unit: &'static str,
    pub offenders: Vec<Offender>,
    /// What was seen but is no violation (records in flight, duplicates on a topic, ...).
    pub notes: Vec<String>,
}

impl Check {
    pub fn new(id: &'static str, title: &'static str, unit: &'static str) -> Self {
        Self { id, title, checked: 0, unit, offenders: Vec::new(), notes: Vec::new() }
    }

    pub fn ok(&self) -> bool {
        self.offenders.is_empty()
    }

    pub fn fail(&mut self, offender: Offender) {
        self.offenders.push(offender);
    }

    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// Offenders sorted and without repeats, so reports compare and read the same every run.
    pub fn finish(mut self) -> Self {
        self.offenders.sort();
        self.offenders.dedup();
        self
    }
}

/// How the audit went, beside the checks.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Conditions {
    /// Whether the stack was quiet when the stores were read (outboxes empty, consumer groups
    /// caught up); otherwise why not. A busy stack shows work in flight as violations.
    pub settled: bool,
    pub unsettled: Vec<String>,
    /// What the loading noticed that is no check's business (a replay that skipped records).
    pub notes: Vec<String>,
    /// What was read: counts per source.
    pub read: std::collections::BTreeMap<&'static str, usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub generated_at: String,
    pub ok: bool,
    pub conditions: Conditions,
    pub checks: Vec<Check>,
}

impl Report {
    pub fn new(conditions: Conditions, checks: Vec<Check>) -> Self {
        Self {
            generated_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            ok: checks.iter().all(Check::ok),
            conditions,
            checks,
        }
    }

    pub fn check(&self, id: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.id == id)
    }

    /// The JSON written to `audit.json`: at most `limit` offenders per check (the count says
    /// how many there are).
    pub fn to_json(&self, limit: usize) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(checks) = v.get_mut("checks").and_then(|c| c.as_array_mut()) {
            for (json, check) in checks.iter_mut().zip(&self.checks) {
                json["ok"] = check.ok().into();
                json["violations"] = check.offenders.len().into();
                if let Some(list) = json.get_mut("offenders").and_then(|o| o.as_array_mut()) {
                    list.truncate(limit);
                }
            }
        }
        v
    }
}

/// Offenders shown per check in the table.
pub const TABLE_OFFENDERS: usize = 3;
const OFFENDER_WIDTH: usize = 110;

/// The table: check, result, count, first offenders; then the notes.
pub fn render(report: &Report) -> String {
    let rows: Vec<[String; 4]> = report
        .checks
        .iter()
        .map(|c| {
            let first = c.offenders.first().map(|o| shorten(&o.to_string())).unwrap_or_else(|| "-".to_owned());
            [
                c.id.to_owned(),
                if c.ok() { "ok".to_owned() } else { "FAIL".to_owned() },
                format!("{} of {} {}", c.offenders.len(), c.checked, c.unit),
                first,
            ]
        })
        .collect();
    let header = ["CHECK", "RESULT", "VIOLATIONS", "FIRST OFFENDERS"].map(str::to_owned);
    let widths: Vec<usize> =
        (0..3).map(|i| rows.iter().chain([&header]).map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    let line = |out: &mut String, r: &[String; 4]| {
        let _ = writeln!(
            out,
            "{:w0$}  {:w1$}  {:w2$}  {}",
            r[0],
            r[1],
            r[2],
            r[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
    };
    line(&mut out, &header);
    for (row, check) in rows.iter().zip(&report.checks) {
        line(&mut out, row);
        for o in check.offenders.iter().skip(1).take(TABLE_OFFENDERS - 1) {
            let pad = widths[0] + widths[1] + widths[2] + 6;
            let _ = writeln!(out, "{:pad$}{}", "", shorten(&o.to_string()));
        }
        if check.offenders.len() > TABLE_OFFENDERS {
            let pad = widths[0] + widths[1] + widths[2] + 6;
            let _ = writeln!(out, "{:pad$}... and {} more", "", check.offenders.len() - TABLE_OFFENDERS);
        }
    }
    let notes: Vec<String> = report
        .checks
        .iter()
        .flat_map(|c| c.notes.iter().map(move |n| format!("  {}: {n}", c.id)))
        .chain(report.conditions.notes.iter().map(|n| format!("  {n}")))
        .collect();
    if !notes.is_empty() {
        out.push_str("\nnotes:\n");
        for n in notes {
            out.push_str(&n);
            out.push('\n');
        }
    }
    if !report.conditions.settled {
        out.push_str("\nthe stack was not quiet when read (work in flight may show as violations):\n");
        for u in &report.conditions.unsettled {
            let _ = writeln!(out, "  {u}");
        }
    }
    if !report.conditions.read.is_empty() {
        let read: Vec<String> = report.conditions.read.iter().map(|(what, n)| format!("{n} {what}")).collect();
        let _ = writeln!(out, "\nread: {}", read.join(", "));
    }
    let _ = writeln!(out, "\n{}", if report.ok { "audit: every check passed" } else { "audit: VIOLATIONS FOUND" });
    out
}

fn shorten(s: &str) -> String {
    if s.chars().count() <= OFFENDER_WIDTH {
        return s.to_owned();
    }
    let cut: String = s.chars().take(OFFENDER_WIDTH - 1).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_says_fail_counts_and_lists_the_first_offenders() {
        let mut bad = Check::new("b", "B", "orders");
        bad.checked = 7;
        for i in 0..5 {
            bad.fail(Offender::new(format!("order {i}"), &["x"], "open"));
        }
        let mut good = Check::new("a", "A", "products");
        good.checked = 3;
        good.note("2 duplicates");
        let report = Report::new(Conditions { settled: true, ..Conditions::default() }, vec![good, bad.finish()]);
        let table = render(&report);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("CHECK"), "{table}");
        assert!(
            lines[1].contains(" ok ") && lines[1].contains("0 of 3 products") && lines[1].ends_with('-'),
            "{table}"
        );
        assert!(lines[2].contains("FAIL") && lines[2].contains("5 of 7 orders") && lines[2].ends_with("order 0: open"));
        assert!(lines[3].trim() == "order 1: open" && lines[4].trim() == "order 2: open", "{table}");
        assert!(lines[5].trim() == "... and 2 more", "{table}");
        assert!(table.contains("a: 2 duplicates") && table.contains("VIOLATIONS FOUND"), "{table}");
        assert!(!report.ok);
    }

    #[test]
    fn the_json_caps_offenders_but_counts_them_all() {
        let mut c = Check::new("c", "C", "orders");
        for i in 0..30 {
            c.fail(Offender::new(format!("order {i:02}"), &[], "open"));
        }
        let json = Report::new(Conditions::default(), vec![c.finish()]).to_json(20);
        assert_eq!(json["checks"][0]["violations"], 30);
        assert_eq!(json["checks"][0]["offenders"].as_array().unwrap().len(), 20);
        assert_eq!(json["checks"][0]["ok"], false);
        assert_eq!(json["ok"], false);
    }
}
