//! `audit`: read every store of the running shop (and, given `--promised`, what clients were told
//! was accepted), check its invariants, print one table, write the report as JSON; exit 1 on any
//! violation, 2 when the stores or the promises could not be read.

use anyhow::Context;
use audit::{Sources, report};
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "audit",
    about = "Check the shop's invariants from its stores alone: event stores, Kafka topics, read models, \
             saga table, Mailpit; and, with --promised, that every order a client was told was accepted is \
             stored and ends as the client saw it",
    long_about = "Check the shop's invariants from its stores alone: every event store (PostgreSQL), every \
                  event topic (Kafka, read_committed, from the beginning to the current end), the MongoDB read \
                  models (compared with a replay of the topics into a scratch database), the saga table and \
                  Mailpit. With --promised (the load generator's --orders-out), also check that every order a \
                  client was told was accepted (202) is in the order store and ends as the client last saw it \
                  final. Prints one table, writes the report as JSON, exits 1 on any violation (2 when the \
                  stores or the promises could not be read)."
)]
struct Cli {
    /// Where to write the JSON report.
    #[arg(long, default_value = "bench-results/audit.json")]
    out: PathBuf,
    /// Wait up to this many seconds for a quiet stack (outboxes empty, consumer groups caught
    /// up) before reading; 0 reads at once.
    #[arg(long, default_value_t = 60)]
    settle: u64,
    /// What clients were promised: JSON lines as `orders-bench --orders-out` writes them. The
    /// orders answered 202 must be in the order store, ending as the client saw them final;
    /// without it, that check judges nothing.
    #[arg(long, value_name = "FILE")]
    promised: Option<PathBuf>,
    /// Offenders per check in the JSON report (all are counted).
    #[arg(long, default_value_t = 100)]
    offenders: usize,
    /// PostgreSQL server of the services' databases (shop_customer, shop_product, shop_order,
    /// shop_payment, shop_saga), without a database name.
    #[arg(long, env = "SHOP_AUDIT_POSTGRES_URL", default_value_t = Sources::local().postgres)]
    postgres: String,
    /// Kafka bootstrap servers.
    #[arg(long, env = "SHOP_KAFKA_BROKERS", default_value_t = Sources::local().kafka)]
    kafka: String,
    /// The schema registry's Confluent API.
    #[arg(long, env = "SHOP_SCHEMA_REGISTRY_URL", default_value_t = Sources::local().registry)]
    registry: String,
    /// The MongoDB-wire server of the read models (a scratch database is made and dropped).
    #[arg(long, env = "SHOP_MONGODB_URL", default_value_t = Sources::local().mongodb)]
    mongodb: String,
    /// Mailpit's web API.
    #[arg(long, env = "SHOP_MAILPIT_URL", default_value_t = Sources::local().mailpit)]
    mailpit: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let sources = Sources {
        postgres: cli.postgres.clone(),
        kafka: cli.kafka.clone(),
        registry: cli.registry.clone(),
        mongodb: cli.mongodb.clone(),
        mailpit: cli.mailpit.clone(),
    };
    match audit_and_write(&cli, &sources).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("audit: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn audit_and_write(cli: &Cli, sources: &Sources) -> anyhow::Result<bool> {
    // Read before the stores, so a bad file fails at once rather than after the settle wait.
    let promised = cli.promised.as_deref().map(audit::promised::read).transpose()?.unwrap_or_default();
    let report = audit::run_with(sources, Duration::from_secs(cli.settle), promised).await?;
    print!("{}", report::render(&report));
    if let Some(dir) = cli.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let json = serde_json::to_string_pretty(&report.to_json(cli.offenders))?;
    std::fs::write(&cli.out, json + "\n").with_context(|| format!("writing {}", cli.out.display()))?;
    println!("report: {}", cli.out.display());
    Ok(report.ok)
}
