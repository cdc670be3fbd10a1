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
    /// Join with `settings` (`etcd.url`, `discovery`, from the files and the environment) and
    /// load `settings` again with the central configuration as one more layer (files < etcd <
    /// environment): [`Settings::from_values`]. A value in etcd that does not parse stops the
    /// start with an error naming its key.
    pub async fn join(settings: &mut Settings) -> anyhow::Result<Self> {
        let stop = CancellationToken::new();
        let etcd = match Etcd::connect(&settings.etcd_url, discovery::ROOT, settings.etcd_ca_file.as_deref()).await {
            Ok(etcd) => Some(etcd),
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), url = settings.etcd_url, "etcd unavailable");
                None
            }
        };
        let config = LiveConfig::start(settings.service, settings.profile, etcd.clone(), stop.clone()).await;
        *settings = Settings::from_values(settings.service, settings.profile, config.start_values().clone())?;
        let resolver = match (&etcd, settings.discovery) {
            (Some(etcd), true) => Resolver::watch(etcd.clone(), stop.clone()),
            _ => Resolver::disabled(),
        };
        Ok(Self { etcd, config, resolver, stop })
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
