//! What a service does with etcd at start: load its central configuration, follow the service
//! registry, and (once it serves) register itself. etcd being down delays nothing but the first
//! calls' timeouts: the service starts with its files and environment, warns, and the
//! background tasks connect when etcd comes.

use crate::config::Settings;
use crate::discovery::{self, Etcd, Registration, Resolver};
use crate::live_config::LiveConfig;
use tokio_util::sync::CancellationToken;

pub struct Cluster {
    pub etcd: Option<Etcd>,
    pub config: LiveConfig,
    pub resolver: Resolver,
    /// Stops the configuration watch and the resolver.
    stop: CancellationToken,
}

impl Cluster {
    /// Join with `settings` (`SHOP_ETCD_URL`, `SHOP_DISCOVERY`); the keys read once at start
    /// (`database.url`, `http.addr`, ...) are taken from the central configuration into
    /// `settings`, the environment still winning.
    pub async fn join(settings: &mut Settings) -> Self {
        let stop = CancellationToken::new();
        let etcd = match Etcd::connect(&settings.etcd_url, discovery::ROOT, settings.etcd_ca_file.as_deref()).await {
            Ok(etcd) => Some(etcd),
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), url = settings.etcd_url, "etcd unavailable");
                None
            }
        };
        let config = LiveConfig::start(settings.service, settings.profile, etcd.clone(), stop.clone()).await;
        apply_start_values(settings, &config);
        let resolver = match (&etcd, settings.discovery) {
            (Some(etcd), true) => Resolver::watch(etcd.clone(), stop.clone()),
            _ => Resolver::disabled(),
        };
        Self { etcd, config, resolver, stop }
    }

    /// Files and environment only, no etcd (tests).
    pub fn local(settings: &Settings) -> Self {
        Self {
            etcd: None,
            config: LiveConfig::local(settings.service, settings.profile),
            resolver: Resolver::disabled(),
            stop: CancellationToken::new(),
        }
    }

    /// Register this instance (heartbeat in the background) when discovery is on.
    pub fn register(&self, settings: &Settings) -> Option<Registration> {
        let etcd = self.etcd.clone().filter(|_| settings.discovery)?;
        let id = discovery::instance_id(&settings.advertise_url);
        Some(Registration::start(etcd, settings.service, &id, &settings.advertise_url, discovery::LEASE_TTL))
    }

    pub fn stop(&self) {
        self.stop.cancel();
    }
}

fn apply_start_values(settings: &mut Settings, config: &LiveConfig) {
    let set = |key: &str, field: &mut String| {
        if let Some(v) = config.start_value(key).filter(|v| *v != field.as_str()) {
            tracing::info!(key, "taken from the central configuration");
            *field = v.to_owned();
        }
    };
    set("database.url", &mut settings.database_url);
    set("kafka.brokers", &mut settings.kafka_brokers);
    set("mongodb.url", &mut settings.mongodb_url);
    set("schema_registry.url", &mut settings.schema_registry_url);
    if let Some(addr) = config.start_value("http.addr") {
        match addr.parse() {
            Ok(addr) if addr != settings.http_addr => {
                settings.http_addr = addr;
                if std::env::var("SHOP_ADVERTISE_URL").is_err() {
                    settings.advertise_url = format!("http://{addr}");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(addr, error = %e, "http.addr ignored"),
        }
    }
}

/// Serve `router` on `listener` until `shutdown`, registered in the service registry meanwhile:
/// the registration is revoked as soon as the shutdown starts, before open requests drain.
pub async fn serve_registered(
    cluster: &Cluster,
    settings: &Settings,
    listener: tokio::net::TcpListener,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    trust: crate::http::Trust,
) -> anyhow::Result<()> {
    let registration = cluster.register(settings);
    let signal = async move {
        shutdown.await;
        if let Some(registration) = registration {
            registration.stop().await;
        }
    };
    let result = crate::http::serve_with(listener, router, signal, trust).await;
    cluster.stop();
    result
}
