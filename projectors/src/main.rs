//! `projectors`: without arguments, the service (Kafka -> read models, `GET /status`).
//!
//! ```text
//! projectors status [--json]
//! projectors rebuild (<read-model>... | --all) [--dry-run] [--max-rate N]
//! ```

/// A rebuild allocates and frees millions of small values (decoded events, BSON documents);
/// glibc's allocator spent nearly half of the process's time on them. Without transparent huge
/// pages (the workspace's `no_thp`): a 2 MiB page is resident as soon as one byte of it is
/// used, and the service held about 20 MB more with them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};
use projectors::{rebuild, status};
use readstore::readmodel::ReadModel;

#[derive(Debug, Parser)]
#[command(name = "projectors", about = "Kafka -> MongoDB read models")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Position, lag and time behind of each projection.
    Status {
        /// Print the JSON that `GET /status` answers.
        #[arg(long)]
        json: bool,
    },
    /// Replay the event topics into shadow collections, catch up, switch. Resumes an
    /// interrupted rebuild of the same read models.
    Rebuild {
        /// customers, catalog, orders or payments.
        #[arg(value_parser = parse_read_model, required_unless_present = "all", conflicts_with = "all")]
        read_models: Vec<ReadModel>,
        #[arg(long)]
        all: bool,
        /// Print what would be done; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Apply at most this many events per second.
        #[arg(long)]
        max_rate: Option<u32>,
    },
}

fn parse_read_model(s: &str) -> Result<ReadModel, String> {
    ReadModel::parse(s).ok_or_else(|| {
        let names: Vec<_> = ReadModel::ALL.iter().map(|r| r.name()).collect();
        format!("unknown read model {s:?}; one of {}", names.join(", "))
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    runtime::start_service("projectors");
    let settings = runtime::Settings::from_env("projectors")?;
    match cli.command {
        None => projectors::run(settings).await,
        Some(Command::Status { json }) => {
            let mongo = readstore::readmodel::connect(&settings.mongodb_url).await?;
            let source =
                status::StatusSource { mongo, brokers: settings.kafka_brokers.clone(), finished: Default::default() };
            let s = source.collect().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                print!("{}", status::render(&s));
            }
            Ok(())
        }
        Some(Command::Rebuild { mut read_models, all, dry_run, max_rate }) => {
            if all {
                read_models = ReadModel::ALL.to_vec();
            }
            read_models.sort();
            read_models.dedup();
            let options = rebuild::Options { dry_run, max_rate, ..rebuild::Options::new(read_models) };
            rebuild::run(&settings, options).await.map(|_| ())
        }
    }
}
