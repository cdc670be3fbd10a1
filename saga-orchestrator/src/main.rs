use clap::{Parser, Subcommand};

/// Saga orchestrator: runs the CreateOrder saga from its declaration (Kafka replies in,
/// commands out through the outbox); search and operator actions over HTTP.
#[derive(Debug, Parser)]
#[command(name = "saga-orchestrator", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the saga as a Mermaid flowchart, generated from its declaration (for the README).
    Diagram,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if let Some(Command::Diagram) = Cli::parse().command {
        print!("{}", saga_orchestrator::definition::mermaid(&saga_orchestrator::definition::CREATE_ORDER));
        return Ok(());
    }
    runtime::start_service("saga-orchestrator");
    let settings = runtime::Settings::from_env("saga-orchestrator")?;
    saga_orchestrator::run(settings).await
}
