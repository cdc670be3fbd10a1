//! `schemas check [--against REV] [--dir DIR]`: fail (exit 1) when a committed Avro schema changed
//! so that it can no longer read data written with one of its earlier versions, or was deleted.

use clap::{Parser, Subcommand};
use schemas::compat::history::{self, CheckError};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

#[derive(Parser)]
#[command(name = "schemas", about = "Tools for the wire schemas")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Check every .avsc against all its earlier committed versions (backward, transitive).
    Check {
        /// Check against the versions reachable from this revision (default HEAD), e.g. origin/main.
        #[arg(long, value_name = "REV")]
        against: Option<String>,
        /// The schema directory (default: schemas/avro at the top of the current git work tree).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let Cmd::Check { against, dir } = Cli::parse().command;
    let dir = match dir.map_or_else(default_dir, Ok) {
        Ok(dir) => dir,
        Err(e) => return fail(&e),
    };
    match history::check(&dir, against.as_deref()) {
        Ok(report) => {
            println!("{report}");
            if report.is_ok() { ExitCode::SUCCESS } else { ExitCode::from(1) }
        }
        Err(e) => fail(&e),
    }
}

fn fail(e: &CheckError) -> ExitCode {
    eprintln!("schemas check: {e}");
    ExitCode::from(2)
}

fn default_dir() -> Result<PathBuf, CheckError> {
    let cwd = Path::new(".");
    let out = Command::new("git")
        .args(["rev-parse", "--show-toplevel"])
        .output()
        .map_err(|e| CheckError::Git(e.to_string()))?;
    if !out.status.success() {
        let cwd = std::env::current_dir().unwrap_or_else(|_| cwd.to_owned());
        return Err(CheckError::NotARepo(cwd, String::from_utf8_lossy(&out.stderr).trim().to_owned()));
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("schemas").join("avro"))
}
