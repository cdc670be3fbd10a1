//! Logging: `RUST_LOG` filters at start (default `info`); `SHOP_LOG_FORMAT=json` for structured
//! logs. The filter can be replaced while running ([`set_filter`]): a service applies the central
//! configuration's `log.level` once it has loaded it, and again whenever it changes (its
//! environment override is `SHOP_LOG_LEVEL`).

use std::sync::OnceLock;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, fmt, reload};

const DEFAULT_FILTER: &str = "info,sqlx=warn,rdkafka=warn,mongodb=warn,hyper=warn";

static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

pub fn init(service: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let (filter, handle) = reload::Layer::new(filter);
    let json = std::env::var("SHOP_LOG_FORMAT").is_ok_and(|v| v == "json");
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let text_layer = (!json).then(|| fmt::layer().with_target(true).with_ansi(ansi));
    let json_layer = json.then(|| fmt::layer().json().with_target(true));
    let result = tracing_subscriber::registry().with(filter).with(text_layer).with(json_layer).try_init();
    if result.is_ok() {
        let _ = FILTER.set(handle);
        tracing::info!(service, "telemetry initialised");
    }
}

/// Replace the log filter (`tracing` directives, e.g. `debug,sqlx=warn`). Without [`init`]
/// (tests) there is nothing to change and this succeeds.
pub fn set_filter(directives: &str) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(directives).map_err(|e| anyhow::anyhow!("log filter {directives:?}: {e}"))?;
    if let Some(handle) = FILTER.get() {
        handle.reload(filter)?;
    }
    Ok(())
}
