#[tokio::main]
async fn main() -> anyhow::Result<()> {
    platform::telemetry::init("saga-orchestrator");
    let settings = platform::Settings::from_env("saga-orchestrator")?;
    saga_orchestrator::run(settings).await
}
