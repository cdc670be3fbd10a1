//! Settings from `SHOP_*` environment variables. Defaults are the local stack's loopback
//! addresses (`tools/stack/ports.toml`), so `./stack` starts services without any variables
//! and compose overrides them with container host names.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Dev,
    Prod,
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// Which service this is, e.g. `order`; names its database, consumer groups and logs.
    pub service: &'static str,
    pub profile: Profile,
    pub http_addr: SocketAddr,
    /// The service's own PostgreSQL database.
    pub database_url: String,
    pub kafka_brokers: String,
    /// Confluent-compatible registry API base.
    pub schema_registry_url: String,
    pub mongodb_url: String,
    pub customer_url: String,
    pub product_url: String,
    pub order_url: String,
    pub payment_url: String,
    pub saga_url: String,
    pub projectors_url: String,
    pub smtp_addr: String,
    /// Credit a new payment account opens with.
    pub initial_credit_cents: i64,
    /// Snapshot event-sourced aggregates every this many events (0: never).
    pub snapshot_every: usize,
    /// How long a saga step may wait for its reply.
    pub saga_step_timeout_ms: u64,
    /// etcd (service registry and central configuration), e.g. `http://127.0.0.1:2379`.
    pub etcd_url: String,
    /// The CA an `https://` etcd endpoint's certificate must chain to (`SHOP_ETCD_CA_FILE`).
    pub etcd_ca_file: Option<String>,
    /// Register in and resolve through etcd (`SHOP_DISCOVERY=off` turns it off: the
    /// `SHOP_*_URL` settings are then the only addresses used).
    pub discovery: bool,
    /// The base URL other processes reach this instance at (`SHOP_ADVERTISE_URL`); by default
    /// `http://` and the HTTP address, or the host name when that address is a wildcard.
    pub advertise_url: String,
    /// Run the service's Kafka consumers (`SHOP_CONSUMERS=off`: an HTTP-only replica).
    pub consumers: bool,
    /// The secret caller tokens are signed and checked with (`SHOP_CALLER_KEY`, see
    /// `identity`); the dev profile falls back to the local stack's well-known key.
    pub caller_key: String,
}

/// The local stack's components, ports and databases: `tools/stack/ports.toml`, the table the
/// launcher reads too, embedded.
const LOCAL_STACK: &str = include_str!("../../tools/stack/ports.toml");

#[derive(Debug, serde::Deserialize)]
struct LocalStack {
    infra: HashMap<String, u16>,
    other: HashMap<String, u16>,
    services: HashMap<String, LocalService>,
    postgres: LocalLogin,
}

#[derive(Debug, serde::Deserialize)]
struct LocalService {
    port: u16,
    database: Option<String>,
}

#[derive(Debug, serde::Deserialize)]
struct LocalLogin {
    user: String,
    password: String,
}

fn local_stack() -> &'static LocalStack {
    static TABLE: OnceLock<LocalStack> = OnceLock::new();
    TABLE.get_or_init(|| toml::from_str(LOCAL_STACK).expect("tools/stack/ports.toml is a valid table (unit-tested)"))
}

/// The local-stack port of a component: a service (`order`), a server (`kafka`) or another
/// port of one (`mailpit_smtp`); 0 for a name the table does not know.
pub fn default_port(component: &str) -> u16 {
    let table = local_stack();
    table
        .services
        .get(component)
        .map(|s| s.port)
        .or_else(|| table.infra.get(component).copied())
        .or_else(|| table.other.get(component).copied())
        .unwrap_or(0)
}

/// `127.0.0.1:<port>` of a component of the local stack.
pub fn local(component: &str) -> String {
    format!("127.0.0.1:{}", default_port(component))
}

/// The local stack's PostgreSQL server, without a database: `postgres://user:password@host:port`.
pub fn local_postgres() -> String {
    let login = &local_stack().postgres;
    format!("postgres://{}:{}@{}", login.user, login.password, local("postgres"))
}

/// The service's own database in the local stack's PostgreSQL (`shop_<service>` for a name the
/// table gives none), in plain text: the local server offers TLS (for its TLS tests), and
/// without `sslmode` a client would take it (`prefer`) on loopback too. Production settings name
/// their `sslmode` (README, "Production").
pub fn default_database(service: &str) -> String {
    let name = local_stack().services.get(service).and_then(|s| s.database.clone());
    format!("{}/{}?sslmode=disable", local_postgres(), name.unwrap_or_else(|| format!("shop_{service}")))
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn or(name: &str, default: impl Into<String>) -> String {
    var(name).unwrap_or_else(|| default.into())
}

impl Settings {
    pub fn from_env(service: &'static str) -> anyhow::Result<Self> {
        use anyhow::Context;
        let profile = match or("SHOP_PROFILE", "dev").as_str() {
            "dev" => Profile::Dev,
            "prod" => Profile::Prod,
            other => anyhow::bail!("SHOP_PROFILE must be dev or prod, not {other:?}"),
        };
        let url = |svc: &str| format!("http://{}", local(svc));
        let http_addr = or("SHOP_HTTP_ADDR", local(service));
        Ok(Self {
            service,
            profile,
            http_addr: http_addr.parse().with_context(|| format!("SHOP_HTTP_ADDR {http_addr:?}"))?,
            database_url: or("SHOP_DATABASE_URL", default_database(service)),
            kafka_brokers: or("SHOP_KAFKA_BROKERS", local("kafka")),
            schema_registry_url: or(
                "SHOP_SCHEMA_REGISTRY_URL",
                format!("http://{}/apis/ccompat/v7", local("registry")),
            ),
            mongodb_url: or(
                "SHOP_MONGODB_URL",
                format!("mongodb://{}/?directConnection=true&retryWrites=false", local("mongo")),
            ),
            customer_url: or("SHOP_CUSTOMER_URL", url("customer")),
            product_url: or("SHOP_PRODUCT_URL", url("product")),
            order_url: or("SHOP_ORDER_URL", url("order")),
            payment_url: or("SHOP_PAYMENT_URL", url("payment")),
            saga_url: or("SHOP_SAGA_URL", url("saga-orchestrator")),
            projectors_url: or("SHOP_PROJECTORS_URL", url("projectors")),
            smtp_addr: or("SHOP_SMTP_ADDR", local("mailpit_smtp")),
            initial_credit_cents: or("SHOP_INITIAL_CREDIT_CENTS", "100000")
                .parse()
                .context("SHOP_INITIAL_CREDIT_CENTS")?,
            snapshot_every: or("SHOP_SNAPSHOT_EVERY", "50").parse().context("SHOP_SNAPSHOT_EVERY")?,
            saga_step_timeout_ms: or("SHOP_SAGA_STEP_TIMEOUT_MS", "30000")
                .parse()
                .context("SHOP_SAGA_STEP_TIMEOUT_MS")?,
            etcd_url: or("SHOP_ETCD_URL", format!("http://{}", local("etcd"))),
            etcd_ca_file: var("SHOP_ETCD_CA_FILE"),
            discovery: switch("SHOP_DISCOVERY", true)?,
            consumers: switch("SHOP_CONSUMERS", true)?,
            caller_key: caller_key(profile)?,
            advertise_url: String::new(),
        }
        .with_advertise_url(var("SHOP_ADVERTISE_URL")))
    }

    fn with_advertise_url(mut self, explicit: Option<String>) -> Self {
        self.advertise_url = match explicit {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None if self.http_addr.ip().is_unspecified() => {
                let host = var("HOSTNAME").unwrap_or_else(|| "127.0.0.1".into());
                format!("http://{host}:{}", self.http_addr.port())
            }
            None => format!("http://{}", self.http_addr),
        };
        self
    }
}

/// The local stack's caller key (`identity`), used when `SHOP_CALLER_KEY` is not set in the dev
/// profile; the prod profile refuses to start with it.
pub const DEFAULT_CALLER_KEY: &str = "local-stack-caller-key-do-not-use-in-production";
/// The shortest caller key accepted: HS256 wants at least the hash's 32 bytes.
pub const MIN_CALLER_KEY_BYTES: usize = 32;

/// `SHOP_CALLER_KEY`: required in the prod profile, where the local stack's well-known key is
/// refused too; long enough for HS256 either way.
fn caller_key(profile: Profile) -> anyhow::Result<String> {
    let key = match (var("SHOP_CALLER_KEY"), profile) {
        (Some(key), Profile::Prod) if key == DEFAULT_CALLER_KEY => {
            anyhow::bail!("SHOP_CALLER_KEY is the local stack's key, which the prod profile refuses")
        }
        (Some(key), _) => key,
        (None, Profile::Dev) => DEFAULT_CALLER_KEY.to_owned(),
        (None, Profile::Prod) => anyhow::bail!("SHOP_CALLER_KEY must be set in the prod profile"),
    };
    anyhow::ensure!(
        key.len() >= MIN_CALLER_KEY_BYTES,
        "SHOP_CALLER_KEY must have at least {MIN_CALLER_KEY_BYTES} bytes"
    );
    Ok(key)
}

/// An on/off setting: `on`/`off`, `true`/`false`, `1`/`0`.
fn switch(name: &str, default: bool) -> anyhow::Result<bool> {
    match var(name).as_deref().map(str::to_ascii_lowercase).as_deref() {
        None => Ok(default),
        Some("on" | "true" | "1" | "yes") => Ok(true),
        Some("off" | "false" | "0" | "no") => Ok(false),
        Some(other) => anyhow::bail!("{name} must be on or off, not {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_stack_table_gives_every_default() {
        assert_eq!(default_port("gateway"), 8080);
        assert_eq!(default_port("saga-orchestrator"), 8086);
        assert_eq!(local("kafka"), "127.0.0.1:9092");
        assert_eq!(local("mailpit_smtp"), "127.0.0.1:1025");
        assert_eq!(default_port("nothing"), 0);
        assert_eq!(
            default_database("saga-orchestrator"),
            "postgres://shop:shop@127.0.0.1:5432/shop_saga?sslmode=disable"
        );
        assert_eq!(default_database("order"), "postgres://shop:shop@127.0.0.1:5432/shop_order?sslmode=disable");
        // Every service has a port of its own.
        let mut ports: Vec<u16> = local_stack().services.values().map(|s| s.port).collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), local_stack().services.len());
    }
}
