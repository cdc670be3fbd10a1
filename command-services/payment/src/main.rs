#[tokio::main]
async fn main() -> anyhow::Result<()> {
    runtime::telemetry::init("payment");
    let settings = runtime::Settings::from_env("payment")?;
    payment_service::run(settings).await
}
