#[tokio::main]
async fn main() -> anyhow::Result<()> {
    platform::telemetry::init("payment");
    let settings = platform::Settings::from_env("payment")?;
    payment_service::run(settings).await
}
