//! Central configuration (the config-server role), layered, lowest first:
//!
//! 1. `config/defaults.toml` (compiled in),
//! 2. `config/<profile>.toml` (compiled in),
//! 3. etcd, `<root>/config/<profile>/<scope>/<key>`,
//! 4. the environment, `SHOP_<KEY>` (`rate_limit.burst` is `SHOP_RATE_LIMIT_BURST`).
//!
//! A scope is `global` or a service's name; within one layer the service's own scope wins.
//! At start a service writes the file values of its scopes into etcd where a key is absent (one
//! create-if-absent transaction per key, so instances starting together agree), then watches
//! its scopes. Safe keys ([`Tunables`], [`is_live`]) are applied while running; a change to any
//! other key (those [`crate::Settings`] reads, [`START_KEYS`], and a service's own)
//! is logged as needing a restart, and takes effect at the next start.

use crate::discovery::{Etcd, timed};
use etcd_client::{Compare, CompareOp, EventType, GetOptions, Txn, TxnOp, WatchOptions};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub const DEFAULTS_FILE: &str = include_str!("../../config/defaults.toml");
pub const DEV_FILE: &str = include_str!("../../config/dev.toml");
pub const PROD_FILE: &str = include_str!("../../config/prod.toml");

/// Which configuration file is layered over the defaults (`SHOP_PROFILE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Dev,
    Prod,
}

/// The keys [`crate::Settings`] reads at start (changing one needs a restart), besides the service's
/// own keys that the files name. `kafka.partitions` is read when topics are created.
pub const START_KEYS: [&str; 19] = [
    "http.addr",
    "advertise.url",
    "database.url",
    "kafka.brokers",
    "kafka.partitions",
    "schema_registry.url",
    "mongodb.url",
    "customer.url",
    "product.url",
    "order.url",
    "payment.url",
    "saga.url",
    "projectors.url",
    "smtp.addr",
    "snapshot.every",
    "etcd.url",
    "etcd.ca_file",
    "discovery",
    "consumers",
];

/// The scope every service reads besides its own.
pub const GLOBAL: &str = "global";

/// key -> raw value
pub type Values = BTreeMap<String, String>;
/// scope -> key -> raw value: one layer.
pub type Layer = BTreeMap<String, Values>;

/// Parse a config file: each top-level table is a scope; nested tables and dotted keys are
/// flattened to `a.b.c`; values become their text (`3000`, `true`, `info`).
pub fn parse_layer(text: &str) -> anyhow::Result<Layer> {
    let table: toml::Table = toml::from_str(text)?;
    let mut layer = Layer::new();
    for (scope, body) in table {
        let toml::Value::Table(body) = body else {
            anyhow::bail!("top-level {scope:?} must be a table ([global] or [<service>])");
        };
        let values = layer.entry(scope).or_default();
        flatten("", &body, values);
    }
    Ok(layer)
}

fn flatten(prefix: &str, table: &toml::Table, out: &mut Values) {
    for (key, value) in table {
        let key = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        match value {
            toml::Value::Table(inner) => flatten(&key, inner, out),
            toml::Value::String(s) => {
                out.insert(key, s.clone());
            }
            other => {
                out.insert(key, other.to_string());
            }
        }
    }
}

/// The compiled-in file layers of a profile: (defaults, profile).
pub fn file_layers(profile: Profile) -> (Layer, Layer) {
    let profile_text = match profile {
        Profile::Dev => DEV_FILE,
        Profile::Prod => PROD_FILE,
    };
    let parse = |text| parse_layer(text).expect("the config files are checked by the tests");
    (parse(DEFAULTS_FILE), parse(profile_text))
}

pub fn profile_name(profile: Profile) -> &'static str {
    match profile {
        Profile::Dev => "dev",
        Profile::Prod => "prod",
    }
}

/// The environment variable that overrides `key`.
pub fn env_var(key: &str) -> String {
    format!("SHOP_{}", key.to_ascii_uppercase().replace(['.', '-'], "_"))
}

/// The effective values for `service`: `layers` lowest first, each read as global then the
/// service's own scope; then `env` (looked up by [`env_var`]) for every key any layer names,
/// and for [`Tunables`]' keys and [`START_KEYS`].
pub fn effective(service: &str, layers: &[&Layer], env: impl Fn(&str) -> Option<String>) -> Values {
    let mut values = Values::new();
    for layer in layers {
        for scope in [GLOBAL, service] {
            if let Some(scoped) = layer.get(scope) {
                values.extend(scoped.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
    }
    let mut keys: Vec<String> = values.keys().cloned().collect();
    keys.extend(KNOWN_KEYS.iter().chain(START_KEYS.iter()).map(|k| (*k).to_owned()));
    for key in keys {
        if let Some(v) = env(&env_var(&key)).filter(|v| !v.trim().is_empty()) {
            values.insert(key, v);
        }
    }
    values
}

const KNOWN_KEYS: [&str; 4] = ["log.level", "http.timeout_ms", "rate_limit.per_second", "rate_limit.burst"];

/// Whether a change to `key` is applied while running ([`Tunables`]); every other key is read
/// at start only.
pub fn is_live(key: &str) -> bool {
    KNOWN_KEYS.contains(&key) || key.starts_with("features.")
}

/// The settings applied while running, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tunables {
    /// `log.level`: tracing filter directives.
    pub log_level: String,
    /// `http.timeout_ms`: one call to another service.
    pub http_timeout: Duration,
    /// `rate_limit.per_second`, `rate_limit.burst`: the gateway's per-client limit.
    pub rate_limit_per_second: u32,
    pub rate_limit_burst: u32,
    /// `features.<name>` = true/false.
    pub features: BTreeMap<String, bool>,
}

impl Default for Tunables {
    fn default() -> Self {
        Self {
            log_level: "info".into(),
            http_timeout: Duration::from_secs(3),
            rate_limit_per_second: 500,
            rate_limit_burst: 1000,
            features: BTreeMap::new(),
        }
    }
}

impl Tunables {
    /// Read the safe keys of `values`; a malformed value keeps its default and is reported.
    pub fn from_values(values: &Values) -> (Self, Vec<String>) {
        let mut t = Self::default();
        let mut problems = Vec::new();
        for (key, raw) in values {
            let raw = raw.trim();
            let positive = |what: &mut Vec<String>| match raw.parse::<u64>() {
                Ok(n) if n > 0 => Some(n),
                _ => {
                    what.push(format!("{key} must be a whole number above 0, not {raw:?}"));
                    None
                }
            };
            match key.as_str() {
                "log.level" => match tracing_subscriber::EnvFilter::try_new(raw) {
                    Ok(_) => t.log_level = raw.to_owned(),
                    Err(e) => problems.push(format!("log.level {raw:?}: {e}")),
                },
                "http.timeout_ms" => {
                    if let Some(ms) = positive(&mut problems) {
                        t.http_timeout = Duration::from_millis(ms);
                    }
                }
                "rate_limit.per_second" => {
                    if let Some(n) = positive(&mut problems) {
                        t.rate_limit_per_second = u32::try_from(n).unwrap_or(u32::MAX);
                    }
                }
                "rate_limit.burst" => {
                    if let Some(n) = positive(&mut problems) {
                        t.rate_limit_burst = u32::try_from(n).unwrap_or(u32::MAX);
                    }
                }
                k if k.starts_with("features.") => match raw {
                    "true" | "on" => {
                        t.features.insert(k["features.".len()..].to_owned(), true);
                    }
                    "false" | "off" => {
                        t.features.insert(k["features.".len()..].to_owned(), false);
                    }
                    _ => problems.push(format!("{key} must be true or false, not {raw:?}")),
                },
                _ => {}
            }
        }
        (t, problems)
    }

    /// A feature flag; unknown flags are off.
    pub fn feature(&self, name: &str) -> bool {
        self.features.get(name).copied().unwrap_or(false)
    }
}

/// The running configuration of one service: its effective values at start and the safe part,
/// kept current from etcd.
#[derive(Clone)]
pub struct LiveConfig {
    started_with: Values,
    tunables: watch::Receiver<Tunables>,
}

impl LiveConfig {
    /// Fixed values, never updated (tests, tools).
    pub fn fixed(tunables: Tunables) -> Self {
        Self { started_with: Values::new(), tunables: watch::channel(tunables).1 }
    }

    /// Files and environment only (no etcd).
    pub fn local(service: &str, profile: Profile) -> Self {
        let (defaults, profile) = file_layers(profile);
        let values = effective(service, &[&defaults, &profile], |k| std::env::var(k).ok());
        Self::from_values(values).0
    }

    fn from_values(values: Values) -> (Self, watch::Sender<Tunables>) {
        let (tunables, problems) = Tunables::from_values(&values);
        for p in problems {
            tracing::warn!(problem = p, "configuration value ignored");
        }
        let (tx, rx) = watch::channel(tunables);
        (Self { started_with: values, tunables: rx }, tx)
    }

    /// Load `service`'s configuration (seeding etcd from the files where a key is absent) and
    /// keep following etcd until `stop`. Without etcd the files and environment are used and a
    /// warning is logged; the watcher keeps trying to reach etcd.
    pub async fn start(service: &str, profile: Profile, etcd: Option<Etcd>, stop: CancellationToken) -> Self {
        let (defaults, profile_layer) = file_layers(profile);
        let env = |k: &str| std::env::var(k).ok();
        let Some(etcd) = etcd else {
            return Self::local(service, profile);
        };
        let source = Source { etcd, profile: profile_name(profile).to_owned(), service: service.to_owned() };
        let mut files = defaults.clone();
        for (scope, values) in &profile_layer {
            files.entry(scope.clone()).or_default().extend(values.clone());
        }
        if let Err(e) = source.seed(&files).await {
            tracing::warn!(error = format!("{e:#}"), "central configuration not seeded (etcd unreachable?)");
        }
        let (remote, revision) = match source.load().await {
            Ok((remote, revision)) => (remote, Some(revision)),
            Err(e) => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "etcd unreachable: configuration from files and environment only"
                );
                (Layer::new(), None)
            }
        };
        let values = effective(service, &[&defaults, &profile_layer, &remote], env);
        let (config, tx) = Self::from_values(values);
        apply_log_level(&config.current().log_level);
        let layers = (defaults, profile_layer);
        tokio::spawn(source.follow(layers, remote, revision, config.started_with.clone(), tx, stop));
        config
    }

    /// The value of any key as it was at start (for keys read once, like `database.url`).
    pub fn start_value(&self, key: &str) -> Option<&str> {
        self.started_with.get(key).map(String::as_str)
    }

    /// Every value at start, the layers merged: what [`crate::Settings::from_values`] reads.
    pub fn start_values(&self) -> &Values {
        &self.started_with
    }

    pub fn current(&self) -> Tunables {
        self.tunables.borrow().clone()
    }

    /// Changes to the safe settings.
    pub fn subscribe(&self) -> watch::Receiver<Tunables> {
        self.tunables.clone()
    }
}

fn apply_log_level(level: &str) {
    if let Err(e) = crate::telemetry::set_filter(level) {
        tracing::warn!(error = format!("{e:#}"), "log.level not applied");
    }
}

/// Where one service's configuration lives in etcd.
struct Source {
    etcd: Etcd,
    profile: String,
    service: String,
}

impl Source {
    fn prefix(&self) -> String {
        config_prefix(self.etcd.root(), &self.profile)
    }

    /// Write the file values of this service's scopes where etcd has no value yet.
    async fn seed(&self, files: &Layer) -> anyhow::Result<usize> {
        let mut client = self.etcd.client();
        let mut created = 0;
        for scope in [GLOBAL, self.service.as_str()] {
            for (key, value) in files.get(scope).into_iter().flatten() {
                let full = format!("{}{scope}/{key}", self.prefix());
                let txn = Txn::new()
                    .when([Compare::version(full.clone(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(full, value.clone(), None)]);
                if timed(client.txn(txn)).await?.succeeded() {
                    created += 1;
                }
            }
        }
        if created > 0 {
            tracing::info!(created, prefix = self.prefix(), "central configuration seeded from files");
        }
        Ok(created)
    }

    /// The etcd layer of this service's scopes, and the revision it was read at.
    async fn load(&self) -> anyhow::Result<(Layer, i64)> {
        let mut client = self.etcd.client();
        let answer = timed(client.get(self.prefix(), Some(GetOptions::new().with_prefix()))).await?;
        let revision = answer.header().map_or(0, |h| h.revision());
        let mut layer = Layer::new();
        for kv in answer.kvs() {
            if let (Ok(key), Ok(value)) = (kv.key_str(), kv.value_str())
                && let Some((scope, key)) = self.split(key)
            {
                layer.entry(scope.to_owned()).or_default().insert(key.to_owned(), value.to_owned());
            }
        }
        Ok((layer, revision))
    }

    /// `<prefix><scope>/<key>` -> (scope, key), for this service's scopes only.
    fn split<'a>(&self, full: &'a str) -> Option<(&'a str, &'a str)> {
        let (scope, key) = full.strip_prefix(&self.prefix())?.split_once('/')?;
        (scope == GLOBAL || scope == self.service).then_some((scope, key))
    }

    /// Watch the etcd layer; on every change recompute, apply what is safe, warn about the rest.
    async fn follow(
        self,
        files: (Layer, Layer),
        mut remote: Layer,
        mut revision: Option<i64>,
        mut values: Values,
        tx: watch::Sender<Tunables>,
        stop: CancellationToken,
    ) {
        let mut warned = false;
        loop {
            let result = tokio::select! {
                () = stop.cancelled() => return,
                r = self.watch_once(&files, &mut remote, &mut revision, &mut values, &tx) => r,
            };
            if let Err(e) = result
                && !warned
            {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "central configuration: etcd unreachable; keeping the last values"
                );
                warned = true;
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(2)) => {},
            }
        }
    }

    async fn watch_once(
        &self,
        files: &(Layer, Layer),
        remote: &mut Layer,
        revision: &mut Option<i64>,
        values: &mut Values,
        tx: &watch::Sender<Tunables>,
    ) -> anyhow::Result<()> {
        let env = |k: &str| std::env::var(k).ok();
        let recompute = |remote: &Layer, values: &mut Values| {
            let fresh = effective(&self.service, &[&files.0, &files.1, remote], env);
            apply_changes(values, fresh, tx);
        };
        if revision.is_none() {
            // Not loaded at start (etcd was down): load now.
            let (layer, rev) = self.load().await?;
            *remote = layer;
            *revision = Some(rev);
            recompute(remote, values);
        }
        let mut client = self.etcd.client();
        let start = revision.unwrap_or(0) + 1;
        let options = WatchOptions::new().with_prefix().with_start_revision(start);
        let mut stream = timed(client.watch(self.prefix(), Some(options))).await?;
        while let Some(answer) = stream.message().await? {
            if answer.canceled() {
                // Compacted past our revision: read everything again.
                *revision = None;
                anyhow::bail!("config watch cancelled: {}", answer.cancel_reason());
            }
            let mut changed = false;
            for event in answer.events() {
                let Some(kv) = event.kv() else { continue };
                let Some((scope, key)) = kv.key_str().ok().and_then(|k| self.split(k)) else { continue };
                let scoped = remote.entry(scope.to_owned()).or_default();
                match event.event_type() {
                    EventType::Put => {
                        scoped.insert(key.to_owned(), kv.value_str().unwrap_or_default().to_owned());
                    }
                    EventType::Delete => {
                        scoped.remove(key);
                    }
                }
                *revision = Some(kv.mod_revision());
                changed = true;
            }
            if changed {
                recompute(remote, values);
            }
        }
        anyhow::bail!("config watch stream ended")
    }
}

/// `<root>/config/<profile>/`
pub fn config_prefix(root: &str, profile: &str) -> String {
    format!("{}/config/{profile}/", root.trim_end_matches('/'))
}

/// Log what changed between `values` and `fresh`, apply the safe part, and keep `fresh`.
fn apply_changes(values: &mut Values, fresh: Values, tx: &watch::Sender<Tunables>) {
    let keys: std::collections::BTreeSet<&String> = values.keys().chain(fresh.keys()).collect();
    for key in keys {
        let (old, new) = (values.get(key), fresh.get(key));
        if old == new {
            continue;
        }
        if !is_live(key) {
            tracing::warn!(key = %key, "configuration changed; this key is read at start only: restart the service to apply it");
        } else {
            tracing::info!(key = %key, old = ?old, new = ?new, "configuration changed");
        }
    }
    let (tunables, problems) = Tunables::from_values(&fresh);
    for p in problems {
        tracing::warn!(problem = p, "configuration value ignored");
    }
    if tunables.log_level != tx.borrow().log_level {
        apply_log_level(&tunables.log_level);
    }
    tx.send_if_modified(|current| {
        let modified = *current != tunables;
        *current = tunables;
        modified
    });
    *values = fresh;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_files_parse_into_scopes() {
        for text in [DEFAULTS_FILE, DEV_FILE, PROD_FILE] {
            let layer = parse_layer(text).unwrap();
            assert!(layer.contains_key(GLOBAL));
        }
        let defaults = parse_layer(DEFAULTS_FILE).unwrap();
        assert_eq!(defaults["gateway"]["rate_limit.burst"], "1000");
        assert_eq!(defaults[GLOBAL]["http.timeout_ms"], "3000");
        let (t, problems) = Tunables::from_values(&effective("gateway", &[&defaults], |_| None));
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(t.http_timeout, Duration::from_secs(10));
        assert!(t.feature("service_discovery_targets"));
    }

    #[test]
    fn later_layers_and_the_own_scope_win_and_the_environment_wins_over_all() {
        let layer = |text: &str| parse_layer(text).unwrap();
        let defaults = layer("[global]\na = \"d\"\nb = \"d\"\nc = \"d\"\nd = \"d\"\n[svc]\nb = \"d-svc\"\n");
        let profile = layer("[global]\nc = \"p\"\n[other]\na = \"p-other\"\n");
        let remote = layer("[global]\nd = \"e\"\nb = \"e\"\n[svc]\nc = \"e-svc\"\n");
        let values =
            effective("svc", &[&defaults, &profile, &remote], |var| (var == "SHOP_D").then(|| "env".to_owned()));
        assert_eq!(values["a"], "d"); // only the default; another service's scope is not read
        assert_eq!(values["b"], "e"); // etcd's global beats the default's service scope
        assert_eq!(values["c"], "e-svc"); // etcd beats the profile
        assert_eq!(values["d"], "env"); // the environment beats everything
        assert_eq!(env_var("rate_limit.per_second"), "SHOP_RATE_LIMIT_PER_SECOND");
    }

    #[test]
    fn bad_values_keep_the_default_and_are_reported() {
        let values: Values =
            [("http.timeout_ms", "soon"), ("rate_limit.burst", "0"), ("features.x", "maybe"), ("log.level", "debug")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
        let (t, problems) = Tunables::from_values(&values);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert_eq!(t.http_timeout, Tunables::default().http_timeout);
        assert_eq!(t.log_level, "debug");
    }
}
