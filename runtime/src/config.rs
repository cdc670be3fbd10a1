//! A service's settings, from one layered loader (lowest first): the local stack's defaults
//! (`tools/stack/ports.toml`: loopback addresses, so `./stack` starts services without any
//! variables), the configuration files (`config/defaults.toml`, `config/<profile>.toml`), etcd
//! (the central configuration, once [`crate::cluster::Cluster::join`] reached it) and the
//! environment, `SHOP_<KEY>` (`database.url` is `SHOP_DATABASE_URL`; compose and Kubernetes
//! set container host names this way). See [`crate::live_config`] for the layers and scopes.
//!
//! [`Settings`] holds what every service needs; a service's own settings (the payment
//! service's opening credit, the saga's step timeout) are keys of its scope in the files,
//! read with [`Settings::value`]. Secrets (`SHOP_CALLER_KEY`, SASL and SMTP passwords) come from
//! the environment alone, never from a file or etcd.

use crate::live_config::{self, Values};
pub use crate::live_config::{Profile, START_KEYS};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::OnceLock;

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
    /// Snapshot event-sourced aggregates every this many events (0: never).
    pub snapshot_every: usize,
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
    /// Every configuration value at start, by key (the layers merged): what [`Settings::value`]
    /// reads a service's own keys from.
    pub values: Values,
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

/// `SHOP_PROFILE`: `dev` (the default) or `prod`; it picks the configuration file.
pub fn profile_from_env() -> anyhow::Result<Profile> {
    match var("SHOP_PROFILE").as_deref().unwrap_or("dev") {
        "dev" => Ok(Profile::Dev),
        "prod" => Ok(Profile::Prod),
        other => anyhow::bail!("SHOP_PROFILE must be dev or prod, not {other:?}"),
    }
}

impl Settings {
    /// The files and the environment, without etcd: what a service starts with before it joins
    /// the cluster, and all that tools and tests use.
    pub fn from_env(service: &'static str) -> anyhow::Result<Self> {
        let profile = profile_from_env()?;
        let (defaults, profile_layer) = live_config::file_layers(profile);
        let values = live_config::effective(service, &[&defaults, &profile_layer], |k| std::env::var(k).ok());
        Self::from_values(service, profile, values)
    }

    /// The one loader: every setting from the merged layers (`values`, see
    /// [`live_config::effective`]), the local stack's address where no layer names one.
    pub fn from_values(service: &'static str, profile: Profile, values: Values) -> anyhow::Result<Self> {
        let get = |key: &str| values.get(key).filter(|v| !v.trim().is_empty()).cloned();
        let or = |key: &str, default: String| get(key).unwrap_or(default);
        let url = |svc: &str| format!("http://{}", local(svc));
        let http_addr = or("http.addr", local(service));
        let http_addr: SocketAddr = http_addr.parse().map_err(|e| anyhow::anyhow!("http.addr {http_addr:?}: {e}"))?;
        let advertise_url = match get("advertise.url") {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None if http_addr.ip().is_unspecified() => {
                let host = var("HOSTNAME").unwrap_or_else(|| "127.0.0.1".into());
                format!("http://{host}:{}", http_addr.port())
            }
            None => format!("http://{http_addr}"),
        };
        let settings = Self {
            service,
            profile,
            http_addr,
            advertise_url,
            database_url: or("database.url", default_database(service)),
            kafka_brokers: or("kafka.brokers", local("kafka")),
            schema_registry_url: or("schema_registry.url", format!("http://{}/apis/ccompat/v7", local("registry"))),
            mongodb_url: or(
                "mongodb.url",
                format!("mongodb://{}/?directConnection=true&retryWrites=false", local("mongo")),
            ),
            customer_url: or("customer.url", url("customer")),
            product_url: or("product.url", url("product")),
            order_url: or("order.url", url("order")),
            payment_url: or("payment.url", url("payment")),
            saga_url: or("saga.url", url("saga-orchestrator")),
            projectors_url: or("projectors.url", url("projectors")),
            smtp_addr: or("smtp.addr", local("mailpit_smtp")),
            snapshot_every: parse(&values, "snapshot.every", 50)?,
            etcd_url: or("etcd.url", format!("http://{}", local("etcd"))),
            etcd_ca_file: get("etcd.ca_file"),
            discovery: switch(&values, "discovery", true)?,
            consumers: switch(&values, "consumers", true)?,
            caller_key: caller_key(profile)?,
            values: Values::new(),
        };
        Ok(Self { values, ..settings })
    }

    /// A setting of the service's own (`initial_credit_cents` of the payment service, say):
    /// `default` when no layer names it, an error naming the key when its value does not parse.
    pub fn value<T>(&self, key: &str, default: T) -> anyhow::Result<T>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        parse(&self.values, key, default)
    }

    /// A setting of the service's own whose default is in `config/defaults.toml` (its one
    /// definition): an error naming the key when no layer has it or it does not parse.
    pub fn required<T>(&self, key: &str) -> anyhow::Result<T>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        let Some(text) = self.values.get(key).map(|v| v.trim()).filter(|v| !v.is_empty()) else {
            anyhow::bail!("setting {key} of {} is missing (config/defaults.toml names its default)", self.service);
        };
        text.parse()
            .map_err(|e| anyhow::anyhow!("setting {key} ({}): {text:?} is not valid: {e}", live_config::env_var(key)))
    }
}

fn parse<T>(values: &Values, key: &str, default: T) -> anyhow::Result<T>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    match values.get(key).map(|v| v.trim()).filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(text) => text
            .parse()
            .map_err(|e| anyhow::anyhow!("setting {key} ({}): {text:?} is not valid: {e}", live_config::env_var(key))),
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
fn switch(values: &Values, key: &str, default: bool) -> anyhow::Result<bool> {
    match values.get(key).map(|v| v.trim().to_ascii_lowercase()).filter(|v| !v.is_empty()).as_deref() {
        None => Ok(default),
        Some("on" | "true" | "1" | "yes") => Ok(true),
        Some("off" | "false" | "0" | "no") => Ok(false),
        Some(other) => anyhow::bail!("{key} ({}) must be on or off, not {other:?}", live_config::env_var(key)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live_config::{effective, parse_layer};

    /// Settings of `service` from the given layers (files, then etcd) and environment.
    fn load(service: &'static str, layers: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Settings> {
        let layers: Vec<_> = layers.iter().map(|text| parse_layer(text).expect("layer")).collect();
        let refs: Vec<_> = layers.iter().collect();
        let env: HashMap<String, String> = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let values = effective(service, &refs, |k| env.get(k).cloned());
        Settings::from_values(service, Profile::Dev, values)
    }

    #[test]
    fn files_then_etcd_then_the_environment_each_win_over_the_one_before() {
        let files = "[global]\nkafka.brokers = \"from-file:9092\"\nsnapshot.every = 7\n\
                     [payment]\ninitial_credit_cents = 100\ndatabase.url = \"postgres://file/db\"";
        let etcd = "[payment]\ndatabase.url = \"postgres://etcd/db\"\ninitial_credit_cents = 200";
        let s = load("payment", &[files, etcd], &[("SHOP_INITIAL_CREDIT_CENTS", "300")]).expect("settings");
        assert_eq!(s.kafka_brokers, "from-file:9092");
        assert_eq!(s.snapshot_every, 7);
        assert_eq!(s.database_url, "postgres://etcd/db");
        assert_eq!(s.required::<i64>("initial_credit_cents").expect("credit"), 300);
        // Another service does not see the payment scope.
        let order = load("order", &[files, etcd], &[]).expect("settings");
        assert_eq!(order.database_url, default_database("order"));
        assert!(order.required::<i64>("initial_credit_cents").is_err());
    }

    #[test]
    fn what_no_layer_names_is_the_local_stack() {
        let s = load("order", &[], &[]).expect("settings");
        assert_eq!(s.http_addr.to_string(), local("order"));
        assert_eq!(s.advertise_url, format!("http://{}", local("order")));
        assert_eq!(s.kafka_brokers, local("kafka"));
        assert!(s.discovery && s.consumers);
        assert_eq!(s.value("kafka.partitions", 3).expect("partitions"), 3);
        // An address moved by any layer moves the advertised URL with it.
        let moved = load("order", &["[order]\nhttp.addr = \"127.0.0.1:9083\""], &[]).expect("settings");
        assert_eq!(moved.advertise_url, "http://127.0.0.1:9083");
        let told = load("order", &[], &[("SHOP_HTTP_ADDR", "127.0.0.1:9083"), ("SHOP_ADVERTISE_URL", "http://b:1/")])
            .expect("settings");
        assert_eq!(told.advertise_url, "http://b:1");
    }

    #[test]
    fn a_bad_value_names_its_key_and_variable() {
        let e = load("order", &[], &[("SHOP_SNAPSHOT_EVERY", "often")]).expect_err("bad");
        assert!(e.to_string().contains("snapshot.every (SHOP_SNAPSHOT_EVERY)"), "{e}");
        let e = load("order", &["[global]\ndiscovery = \"maybe\""], &[]).expect_err("bad");
        assert!(e.to_string().contains("discovery (SHOP_DISCOVERY) must be on or off"), "{e}");
        let s = load("saga-orchestrator", &["[saga-orchestrator]\nsaga.step_timeout_ms = \"soon\""], &[])
            .expect("settings");
        let e = s.required::<i64>("saga.step_timeout_ms").expect_err("bad");
        assert!(e.to_string().contains("SHOP_SAGA_STEP_TIMEOUT_MS"), "{e}");
    }

    #[test]
    fn the_files_name_every_services_own_setting() {
        let s = Settings::from_values(
            "payment",
            Profile::Dev,
            effective("payment", &[&live_config::file_layers(Profile::Dev).0], |_| None),
        )
        .expect("settings");
        assert_eq!(s.required::<i64>("initial_credit_cents").expect("credit"), 100_000);
        let saga = Settings::from_values(
            "saga-orchestrator",
            Profile::Dev,
            effective("saga-orchestrator", &[&live_config::file_layers(Profile::Dev).0], |_| None),
        )
        .expect("settings");
        assert_eq!(saga.required::<i64>("saga.step_timeout_ms").expect("timeout"), 30_000);
    }

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
