use anyhow::Context;
use gateway::{AppState, Downstreams, Timeouts, app};
use runtime::Settings;
use runtime::cluster::Cluster;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    runtime::cli::service(
        "gateway",
        "API gateway: the single HTTP entry point (JWT, rate limit, OpenAPI, UI), forwarding to the services.",
    );
    runtime::start_service("gateway");
    let mut settings = Settings::from_env("gateway")?;
    let cluster = Cluster::join(&mut settings).await?;
    let downstreams = Downstreams::from_settings(&settings).with_resolver(cluster.resolver.clone());
    let caller_key = runtime::identity::CallerKey::from_settings(&settings)?;
    let state = AppState::new(downstreams, Timeouts::default(), caller_key)?
        .with_live_config(cluster.config.subscribe())
        .with_auth(gateway::auth::AuthConfig::from_env()?);
    let listener = tokio::net::TcpListener::bind(settings.http_addr)
        .await
        .with_context(|| format!("binding {}", settings.http_addr))?;
    // The public entry point: every request starts its own trace.
    let result = runtime::cluster::serve_registered(
        &cluster,
        &settings,
        listener,
        app(state),
        runtime::shutdown_signal(),
        runtime::http::Trust::Nobody,
    )
    .await;
    runtime::telemetry::shutdown().await;
    result
}
