use anyhow::Context;
use gateway::{AppState, Downstreams, Timeouts, app};
use platform::Settings;
use platform::cluster::Cluster;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    platform::telemetry::init("gateway");
    let mut settings = Settings::from_env("gateway")?;
    let cluster = Cluster::join(&mut settings).await;
    let downstreams = Downstreams::from_settings(&settings).with_resolver(cluster.resolver.clone());
    let state = AppState::new(downstreams, Timeouts::default())?
        .with_live_config(cluster.config.subscribe())
        .with_auth(gateway::auth::AuthConfig::from_env()?);
    let listener = tokio::net::TcpListener::bind(settings.http_addr)
        .await
        .with_context(|| format!("binding {}", settings.http_addr))?;
    // The public entry point: every request starts its own trace.
    let result = platform::cluster::serve_registered(
        &cluster,
        &settings,
        listener,
        app(state),
        platform::shutdown_signal(),
        platform::http::Trust::Nobody,
    )
    .await;
    platform::telemetry::shutdown().await;
    result
}
