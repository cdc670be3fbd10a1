//! `orders-bench`: see the crate docs (`bench`) for what a run does, `--help` for the options.

use clap::Parser;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = bench::cli::Cli::parse();
    match bench::run(cli).await {
        Ok(outcome) if outcome.audit_failed => ExitCode::from(1),
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("orders-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}
