//! The command line. Every option has a default that fits the local stack (`./stack up`),
//! so `orders-bench --rate 50 --duration 60 --out run.json` is a complete call.

use crate::mix::Mix;
use crate::procs::ProcList;
use clap::Parser;
use std::path::PathBuf;
use std::time::Duration;

/// Open-loop load generator for the shop, with an audit of its invariants afterwards.
///
/// Places `rate × duration` orders through the gateway, each at its due time whether or not
/// earlier ones have been answered, and follows each to its final status. Latencies are
/// measured from the due time, so a slow system cannot hide its queueing (coordinated
/// omission). After the drain it checks stock, credit, outcomes and e-mails against what it
/// placed. Exit status: 0 all good, 1 an audit check failed, 2 the run could not be done.
#[derive(Debug, Clone, Parser)]
#[command(name = "orders-bench", version)]
pub struct Cli {
    /// Orders per second.
    #[arg(long)]
    pub rate: f64,

    /// Seconds of load; orders are due from 0 up to (not including) this.
    #[arg(long, default_value_t = 30.0)]
    pub duration: f64,

    /// Relative weights of the order kinds: normal, over_credit, over_stock, cancel.
    #[arg(long, default_value = Mix::DEFAULT)]
    pub mix: Mix,

    /// Customers to register for the run [default: enough that each gets at most 100 orders].
    #[arg(long)]
    pub customers: Option<usize>,

    /// Ordinary products to create for the run.
    #[arg(long, default_value_t = 20)]
    pub products: usize,

    /// Processes whose CPU and memory to report, as NAME=PID,...; each pid's whole process
    /// tree is counted.
    #[arg(long, default_value = "")]
    pub procs: ProcList,

    /// Seconds after the last due time to wait for accepted orders to become final.
    #[arg(long, default_value_t = 60.0)]
    pub drain_timeout: f64,

    /// Seconds the audit waits for the read models and e-mails to catch up before it judges.
    #[arg(long, default_value_t = 30.0)]
    pub settle_timeout: f64,

    /// Write the results here as JSON.
    #[arg(long)]
    pub out: Option<PathBuf>,

    /// Also write one JSON line per order here (id, kind, statuses, latencies).
    #[arg(long)]
    pub orders_out: Option<PathBuf>,

    /// Seed of the plan (kinds, carts); the same seed places the same orders.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Skip the audit after the drain.
    #[arg(long)]
    pub no_audit: bool,

    /// Orders in flight at most; an order due while this many are open is not sent and counts
    /// as client_overflow (the client, not the system, would be the limit).
    #[arg(long, default_value_t = 20_000)]
    pub max_in_flight: usize,

    /// Ask the gateway to hold each GET of an order up to this many seconds until the order
    /// settles (a long-poll, `?wait=`); 0 polls with backoff instead (`--poll-first-ms`).
    #[arg(long, default_value_t = 20)]
    pub wait_s: u64,

    /// First poll of an order this long after its 202 (ms); then ×1.5 per poll. With
    /// `--wait-s`, the pause after a GET that came back at once without the outcome.
    #[arg(long, default_value_t = 50)]
    pub poll_first_ms: u64,

    /// Longest pause between two polls of one order (ms).
    #[arg(long, default_value_t = 1000)]
    pub poll_max_ms: u64,

    /// Do not sample the projectors' lag during the run (each sample costs them a Kafka query).
    #[arg(long)]
    pub no_projection_lag: bool,

    /// Base URL of the API gateway.
    #[arg(long, default_value_t = http_of("gateway"))]
    pub gateway: String,

    /// Base URL of Keycloak (realm `shop`, client `shop-web`).
    #[arg(long, default_value_t = http_of("keycloak"))]
    pub keycloak: String,

    /// Kafka bootstrap servers.
    #[arg(long, default_value_t = runtime::config::local("kafka"))]
    pub brokers: String,

    /// Base URL of Mailpit's web API.
    #[arg(long, default_value_t = http_of("mailpit"))]
    pub mailpit: String,

    /// PostgreSQL (any database of the server) for its per-database transaction counts.
    #[arg(long, default_value_t = format!("{}/postgres", runtime::config::local_postgres()))]
    pub postgres: String,

    /// Base URL of the projectors service (its `GET /status` gives the lag).
    #[arg(long, default_value_t = http_of("projectors"))]
    pub projectors: String,
}

/// `http://` and a component's local-stack address (`tools/stack/ports.toml`).
fn http_of(component: &str) -> String {
    format!("http://{}", runtime::config::local(component))
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--rate must be a positive number of orders per second, got {0}")]
    Rate(f64),
    #[error("--duration must be a positive number of seconds, got {0}")]
    Duration(f64),
    #[error("--{name} must be a number of seconds ≥ 0, got {value}")]
    Seconds { name: &'static str, value: f64 },
    #[error("--{0} must be at least 1")]
    Zero(&'static str),
    #[error("--poll-first-ms ({first}) must not exceed --poll-max-ms ({max})")]
    Poll { first: u64, max: u64 },
}

impl Cli {
    /// Checks what clap cannot: ranges, and options that depend on each other.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return Err(ConfigError::Rate(self.rate));
        }
        if !(self.duration.is_finite() && self.duration > 0.0) {
            return Err(ConfigError::Duration(self.duration));
        }
        for (name, value) in [("drain-timeout", self.drain_timeout), ("settle-timeout", self.settle_timeout)] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(ConfigError::Seconds { name, value });
            }
        }
        for (name, value) in [
            ("products", self.products),
            ("max-in-flight", self.max_in_flight),
            ("customers", self.customers.unwrap_or(1)),
        ] {
            if value == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        if self.poll_first_ms == 0 {
            return Err(ConfigError::Zero("poll-first-ms"));
        }
        if self.poll_first_ms > self.poll_max_ms {
            return Err(ConfigError::Poll { first: self.poll_first_ms, max: self.poll_max_ms });
        }
        Ok(())
    }

    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.drain_timeout)
    }

    pub fn settle_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.settle_timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("orders-bench").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_fit_the_local_stack() {
        let cli = parse(&["--rate", "10"]).unwrap();
        cli.validate().unwrap();
        assert_eq!(cli.gateway, "http://127.0.0.1:8080");
        assert_eq!(cli.mix.to_string(), Mix::DEFAULT);
        assert_eq!(cli.duration, 30.0);
        assert!(cli.procs.0.is_empty());
    }

    #[test]
    fn procs_are_a_comma_separated_list_of_name_pid_pairs() {
        let cli = parse(&["--rate", "1", "--procs", "gateway=10,kafka=20"]).unwrap();
        let names: Vec<(&str, u32)> = cli.procs.0.iter().map(|p| (p.name.as_str(), p.pid)).collect();
        assert_eq!(names, [("gateway", 10), ("kafka", 20)]);
        assert!(parse(&["--rate", "1", "--procs", "gateway"]).is_err());
        assert!(parse(&["--rate", "1", "--procs", ""]).unwrap().procs.0.is_empty(), "nothing to list is fine");
    }

    #[test]
    fn a_bad_mix_is_a_usage_error() {
        assert!(parse(&["--rate", "1", "--mix", "normal=x"]).is_err());
    }

    #[test]
    fn nonsense_rates_and_polls_are_refused() {
        assert!(parse(&["--rate", "0"]).unwrap().validate().is_err());
        assert!(parse(&["--rate", "NaN"]).unwrap().validate().is_err());
        assert!(parse(&["--rate", "5", "--duration=-1"]).unwrap().validate().is_err());
        assert!(parse(&["--rate", "5", "--poll-first-ms", "2000"]).unwrap().validate().is_err());
        assert!(parse(&["--rate", "5", "--customers", "0"]).unwrap().validate().is_err());
    }
}
