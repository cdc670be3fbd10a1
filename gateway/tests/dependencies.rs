//! The gateway validates and forwards HTTP; it has no database and no Kafka. It builds on
//! `runtime` only, which must not bring Kafka, PostgreSQL or MongoDB clients along: this test
//! asks cargo for the gateway's normal dependency tree and fails if one of them is in it.

use std::process::Command;

/// Crates the gateway must not link (their `-sys`/`-core`/... siblings included).
const FORBIDDEN: [&str; 4] = ["rdkafka", "sqlx", "mongodb", "cqrs-es"];

#[test]
fn the_gateway_links_no_kafka_sql_or_mongodb_client() {
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let out = Command::new(env!("CARGO"))
        .args(["tree", "--locked", "-p", "gateway", "-e", "normal", "--target", "all"])
        .args(["--prefix", "none", "--format", "{p}", "--manifest-path", manifest])
        .output()
        .expect("running cargo tree");
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(tree.lines().any(|l| l.starts_with("runtime ")), "no runtime in the gateway's tree?\n{tree}");
    let mut found: Vec<&str> = tree
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| FORBIDDEN.iter().any(|f| name == f || name.starts_with(&format!("{f}-"))))
        .collect();
    found.sort_unstable();
    found.dedup();
    assert!(
        found.is_empty(),
        "the gateway depends on {found:?}; see `cargo tree -p gateway -e normal -i {}`",
        found.first().copied().unwrap_or_default()
    );
}
