#[tokio::main]
async fn main() -> anyhow::Result<()> {
    platform::telemetry::init("projectors");
    let settings = platform::Settings::from_env("projectors")?;
    projectors::run(settings).await
}
