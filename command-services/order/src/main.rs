#[tokio::main]
async fn main() -> anyhow::Result<()> {
    runtime::telemetry::init("order");
    let settings = runtime::Settings::from_env("order")?;
    order_service::run(settings).await
}
