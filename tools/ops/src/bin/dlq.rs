//! `dlq`: look at the messages parked on the dead-letter topics and re-drive chosen ones.
//!
//! ```text
//! dlq list [--topic T] [--limit N]
//! dlq redrive --topic T (--offset O ... | --all) [--force] [--dry-run] [--reason R]
//! ```
//!
//! `T` is an original topic (`product.commands`) or its DLQ (`product.commands.dlq`). Brokers
//! come from `SHOP_KAFKA_BROKERS` (or `--brokers`). Reading uses a throwaway consumer that is
//! assigned every partition, reads from the beginning up to the high watermark and stops; it
//! joins no consumer group and commits nothing. How a redrive works and how it is recorded (a
//! marker in the DLQ with who and why): `messaging::dlq`, which the operators' dashboard uses
//! too (`/api/dlq`). `--force` re-drives an already handled message on purpose.

use clap::{Args, Parser, Subcommand};
use messaging::dlq::{self, Dlq, Position, Record};
use schemas::headers as h;
use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

/// How long reading a whole DLQ may take.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Parser)]
#[command(name = "dlq", about = "List and re-drive messages parked on the dead-letter topics")]
struct Cli {
    /// Kafka bootstrap servers; default: SHOP_KAFKA_BROKERS or the local stack.
    #[arg(long, global = true)]
    brokers: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the parked messages of one DLQ, or of every `*.dlq` topic.
    List(ListArgs),
    /// Republish parked messages to the topic they came from.
    Redrive(RedriveArgs),
}

#[derive(Debug, Args)]
struct ListArgs {
    /// Original topic or its DLQ; all DLQs when left out.
    #[arg(long)]
    topic: Option<String>,
    /// Show only the newest N parked messages of each DLQ.
    #[arg(long)]
    limit: Option<usize>,
}

#[derive(Debug, Args)]
struct RedriveArgs {
    /// Original topic or its DLQ.
    #[arg(long)]
    topic: String,
    /// DLQ offsets to re-drive (`O`, or `P:O` on a DLQ with several partitions).
    #[arg(long = "offset", value_name = "O", num_args = 1.., required_unless_present = "all", conflicts_with = "all", value_parser = Position::parse)]
    offsets: Vec<Position>,
    /// Every parked message nobody acted on yet.
    #[arg(long)]
    all: bool,
    /// Re-drive chosen messages even if they were re-driven or discarded before.
    #[arg(long)]
    force: bool,
    /// Print what would be republished and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Why, kept in the DLQ's record of the redrive.
    #[arg(long, default_value = "re-driven with the dlq CLI")]
    reason: String,
}

fn describe(dlq: &Dlq, r: &Record) -> String {
    let mut line = format!(
        "offset={} from={} attempts={} record={} key={} size={} time={}",
        dlq::position(r),
        dlq.origin(r),
        r.header(h::DLQ_ATTEMPTS).unwrap_or_else(|| "?".into()),
        r.header(h::RECORD).unwrap_or_else(|| "-".into()),
        r.key_text().unwrap_or_else(|| "-".into()),
        r.payload.as_ref().map_or(0, Vec::len),
        r.time().map_or_else(|| "-".into(), |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
    );
    match dlq.handled.get(&dlq::position(r)) {
        Some(m) => {
            let at =
                m.marker.time().map_or_else(|| "?".into(), |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
            match m.action {
                dlq::Action::Redrive => {
                    let _ = write!(line, " redriven={}@{at}", m.to.as_deref().unwrap_or("?"));
                }
                dlq::Action::Discard => {
                    let _ = write!(line, " redriven=no discarded@{at}");
                }
            }
            if let Some(by) = &m.by {
                let _ = write!(line, " by={by:?}");
            }
        }
        None => line.push_str(" redriven=no"),
    }
    if let Some(from) = r.header(dlq::REDRIVEN_FROM) {
        let _ = write!(line, " earlier-redriven-from={from}");
    }
    let _ = write!(line, " error={:?}", r.header(h::DLQ_ERROR).unwrap_or_default());
    line
}

async fn list(brokers: &str, args: ListArgs) -> anyhow::Result<()> {
    let names = match args.topic {
        Some(t) => vec![dlq::dlq_name(&t)],
        None => dlq::topics(brokers).await?,
    };
    for name in names {
        let dlq = dlq::load(brokers, &name, READ_TIMEOUT).await?;
        let skip = args.limit.map_or(0, |n| dlq.parked.len().saturating_sub(n));
        println!(
            "# {name}: {} parked, {} re-driven or discarded{}",
            dlq.parked.len(),
            dlq.parked.len() - dlq.open(),
            if skip > 0 { format!(" (newest {} shown)", dlq.parked.len() - skip) } else { String::new() }
        );
        for r in &dlq.parked[skip..] {
            println!("{}", describe(&dlq, r));
        }
    }
    Ok(())
}

async fn redrive(brokers: &str, args: RedriveArgs) -> anyhow::Result<()> {
    let dlq = dlq::load(brokers, &args.topic, READ_TIMEOUT).await?;
    let steps = dlq::plan(&dlq, &args.offsets, args.all, args.force)?;
    let producer = if args.dry_run { None } else { Some(messaging::kafka::producer(brokers)?) };
    let by = std::env::var("USER").map_or_else(|_| "dlq CLI".to_owned(), |u| format!("{u} (dlq CLI)"));
    let (mut done, mut skipped) = (0, 0);
    for (r, skip) in steps {
        if let Some(why) = skip {
            println!("skip offset={}: {why}", dlq::position(r));
            skipped += 1;
            continue;
        }
        let (topic, partition) = dlq::target(brokers, &dlq, r).await?;
        let headers = dlq::republished_headers(&dlq.name, r);
        let target = partition.map_or_else(|| format!("{topic} (by key)"), |p| format!("{topic}/{p}"));
        let what = format!(
            "offset={} -> {target} key={} record={} size={} headers={}",
            dlq::position(r),
            r.key_text().unwrap_or_else(|| "-".into()),
            r.header(h::RECORD).unwrap_or_else(|| "-".into()),
            r.payload.as_ref().map_or(0, Vec::len),
            headers.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(","),
        );
        let Some(producer) = &producer else {
            println!("would republish {what}");
            done += 1;
            continue;
        };
        let to = dlq::redrive(producer, &dlq, r, (&topic, partition), &by, &args.reason).await?;
        println!("republished {what} at {to}");
        done += 1;
    }
    if args.dry_run {
        println!("dry run: {done} would be republished, {skipped} skipped; nothing was sent");
    } else {
        println!("{done} republished, {skipped} skipped");
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = async {
        let brokers = match cli.brokers {
            Some(b) => b,
            None => runtime::Settings::from_env("dlq")?.kafka_brokers,
        };
        match cli.command {
            Command::List(args) => list(&brokers, args).await,
            Command::Redrive(args) => redrive(&brokers, args).await,
        }
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dlq: {e:#}");
            ExitCode::FAILURE
        }
    }
}
