#[tokio::main]
async fn main() -> anyhow::Result<()> {
    platform::telemetry::init("customer");
    let settings = platform::Settings::from_env("customer")?;
    customer_service::run(settings).await
}
