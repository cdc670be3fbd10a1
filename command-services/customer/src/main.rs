#[tokio::main]
async fn main() -> anyhow::Result<()> {
    runtime::telemetry::init("customer");
    let settings = runtime::Settings::from_env("customer")?;
    customer_service::run(settings).await
}
