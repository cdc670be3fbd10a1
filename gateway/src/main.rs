use anyhow::Context;
use gateway::{AppState, app};
use platform::Settings;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    platform::telemetry::init("gateway");
    let settings = Settings::from_env("gateway")?;
    let state = AppState::from_settings(&settings)?;
    let listener = tokio::net::TcpListener::bind(settings.http_addr)
        .await
        .with_context(|| format!("binding {}", settings.http_addr))?;
    // The public entry point: every request starts its own trace.
    let result = platform::http::serve_edge(listener, app(state), platform::shutdown_signal()).await;
    platform::telemetry::shutdown().await;
    result
}
