//! Versioned migrations (`eventstore::db`): every part of the schema keeps to its own version
//! range, and on real PostgreSQL all the parts share one database's `_sqlx_migrations` table when
//! run twice, from two pools at once, or on a database made by the scripts that ran before.

use sqlx::PgPool;
use sqlx::migrate::Migrator;
use std::collections::BTreeSet;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Every part's migrations directory (from the workspace root) and its versions: the table in
/// `eventstore::db`'s docs. The first two are this crate's own, embedded in the library.
const PARTS: [(&str, RangeInclusive<i64>); 6] = [
    ("eventstore/migrations/outbox", 1_000_001..=1_999_999),
    ("eventstore/migrations/event_store", 2_000_001..=2_999_999),
    ("saga-orchestrator/migrations", 3_000_001..=3_999_999),
    ("command-services/product/migrations", 4_000_001..=4_999_999),
    ("command-services/notification/migrations", 5_000_001..=5_999_999),
    ("command-services/order/migrations", 6_000_001..=6_999_999),
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("eventstore is in the workspace").to_owned()
}

/// A part's migrations, read from its directory now (the services embed theirs at build time).
async fn part(dir: &str) -> Migrator {
    Migrator::new(workspace().join(dir)).await.unwrap_or_else(|e| panic!("{dir}: {e}"))
}

fn versions(migrator: &Migrator) -> Vec<i64> {
    migrator.iter().map(|m| m.version).collect()
}

async fn every_version() -> BTreeSet<i64> {
    let mut all = BTreeSet::new();
    for (dir, _) in &PARTS {
        all.extend(versions(&part(dir).await));
    }
    all
}

/// The directories under `dir` that hold `<version>_<name>.sql` files, relative to the workspace.
fn migration_dirs(dir: &Path, found: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).expect("readable directory").map(|e| e.expect("directory entry")) {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            if !(name.starts_with('.') || name == "target" || name == "node_modules") {
                migration_dirs(&path, found);
            }
        } else if name.ends_with(".sql")
            && name.split_once('_').is_some_and(|(v, _)| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        {
            let relative = dir.strip_prefix(workspace()).expect("under the workspace");
            found.insert(relative.to_string_lossy().into_owned());
        }
    }
}

#[tokio::test]
async fn every_part_keeps_to_its_own_version_range() {
    let mut dirs = BTreeSet::new();
    migration_dirs(&workspace(), &mut dirs);
    let listed: BTreeSet<String> = PARTS.iter().map(|(dir, _)| dir.to_string()).collect();
    assert_eq!(dirs, listed, "every migrations directory has a version range in eventstore::db (and here)");

    for (i, (dir, range)) in PARTS.iter().enumerate() {
        let versions = versions(&part(dir).await);
        assert!(!versions.is_empty(), "{dir} has no migrations");
        assert!(versions.iter().all(|v| range.contains(v)), "{dir}: {versions:?} outside {range:?}");
        for (other, other_range) in &PARTS[i + 1..] {
            assert!(
                range.end() < other_range.start() || other_range.end() < range.start(),
                "{dir} and {other} share versions"
            );
        }
    }
}

fn admin_url() -> String {
    std::env::var("SHOP_TEST_POSTGRES").unwrap_or_else(|_| "postgres://shop:shop@127.0.0.1:5432".into())
}

/// A new, empty database: a pool on it and its name.
async fn fresh_database() -> (PgPool, String) {
    let name = format!("test_migrations_{}", uuid::Uuid::new_v4().simple());
    (connect(&name).await, name)
}

async fn connect(name: &str) -> PgPool {
    eventstore::db::connect(&format!("{}/{name}", admin_url()), 4).await.expect("database")
}

async fn drop_database(pools: Vec<PgPool>, name: String) {
    for pool in pools {
        pool.close().await;
    }
    let admin = PgPool::connect(&format!("{}/postgres", admin_url())).await.expect("admin");
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).execute(&admin).await.expect("drop");
}

/// What the services run at start, all in one database: the outbox and the event store as
/// `eventstore::db` embeds them, then each service's own part.
async fn migrate_all(pool: &PgPool) -> anyhow::Result<()> {
    eventstore::db::migrate_event_store(pool).await?;
    for (dir, _) in &PARTS[2..] {
        eventstore::db::migrate(pool, part(dir).await).await?;
    }
    Ok(())
}

/// The versions in `_sqlx_migrations`, each with when it was applied.
async fn recorded(pool: &PgPool) -> Vec<(i64, String)> {
    sqlx::query_as("SELECT version, installed_on::text FROM _sqlx_migrations WHERE success ORDER BY version")
        .fetch_all(pool)
        .await
        .expect("_sqlx_migrations")
}

fn recorded_versions(rows: &[(i64, String)]) -> BTreeSet<i64> {
    rows.iter().map(|(v, _)| *v).collect()
}

#[tokio::test]
#[ignore = "needs PostgreSQL: ./stack test"]
async fn each_version_is_applied_once_when_instances_start_together_and_again() {
    let (first, name) = fresh_database().await;
    let second = connect(&name).await;

    // Two instances starting at the same moment.
    let (a, b) = tokio::join!(migrate_all(&first), migrate_all(&second));
    a.expect("first instance");
    b.expect("second instance");
    let after_start = recorded(&first).await;
    assert_eq!(recorded_versions(&after_start), every_version().await);
    let failed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE NOT success").fetch_one(&first).await.unwrap();
    assert_eq!(failed, 0);

    // A restart applies nothing again.
    migrate_all(&second).await.expect("restart");
    assert_eq!(recorded(&first).await, after_start);

    drop_database(vec![first, second], name).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: ./stack test"]
async fn a_database_made_by_the_scripts_before_versioned_migrations_migrates() {
    let (pool, name) = fresh_database().await;
    // What the services ran on every start before: each part's script, which is now its first
    // migration, unchanged.
    for (dir, _) in &PARTS {
        let baseline = part(dir).await.iter().next().expect("a baseline").sql.to_string();
        sqlx::raw_sql(&baseline).execute(&pool).await.unwrap_or_else(|e| panic!("{dir}: {e}"));
    }
    sqlx::query("INSERT INTO skus (sku, product_id) VALUES ('OLD-1', gen_random_uuid())").execute(&pool).await.unwrap();
    let versioned: bool =
        sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL").fetch_one(&pool).await.unwrap();
    assert!(!versioned);

    migrate_all(&pool).await.expect("the old schema migrates");
    assert_eq!(recorded_versions(&recorded(&pool).await), every_version().await);
    let skus: i64 = sqlx::query_scalar("SELECT count(*) FROM skus").fetch_one(&pool).await.unwrap();
    assert_eq!(skus, 1, "the baselines change nothing on an existing schema");

    drop_database(vec![pool], name).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: ./stack test"]
async fn a_failed_migration_leaves_the_database_unlocked_and_unrecorded() {
    let (failing, name) = fresh_database().await;
    let dir = std::env::temp_dir().join(format!("shop_broken_migration_{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("9000001_broken.sql"), "CREATE TABLE half_done (id int);\nSELECT no_such_column;\n")
        .unwrap();
    let broken = Migrator::new(dir.as_path()).await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();

    let error = eventstore::db::migrate(&failing, broken).await.expect_err("a broken migration fails");
    assert!(format!("{error:#}").contains("9000001"), "the error names the version: {error:#}");

    // Another instance, while the failed one's pool is still open, is not kept waiting on the lock.
    let other = connect(&name).await;
    tokio::time::timeout(Duration::from_secs(20), migrate_all(&other))
        .await
        .expect("the advisory lock was released")
        .expect("the other instance migrates");
    let half_done: bool =
        sqlx::query_scalar("SELECT to_regclass('half_done') IS NOT NULL").fetch_one(&other).await.unwrap();
    assert!(!half_done, "the failed migration was rolled back");
    assert!(!recorded_versions(&recorded(&other).await).contains(&9_000_001));

    drop_database(vec![failing, other], name).await;
}
