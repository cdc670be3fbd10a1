#[tokio::main]
async fn main() -> anyhow::Result<()> {
    platform::telemetry::init("order");
    let settings = platform::Settings::from_env("order")?;
    order_service::run(settings).await
}
